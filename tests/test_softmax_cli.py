"""`oscarray softmax`: the command line around golden/softmax.py and the softmax head."""

import json

import numpy as np

from oscarray.cli import main
from oscarray.golden.attention import random_case
from oscarray.golden.softmax import softmax_fixed, softmax_float


def write_case(path, **entries):
    case = random_case("sva", seed=4)
    case.update(entries)
    np.savez(path, **{k: np.asarray(v) for k, v in case.items() if v is not None})
    return case


def test_golden_engines_write_their_results(tmp_path, capsys):
    case = write_case(tmp_path / "case.npz", anchors=None)          # anchors optional
    for engine, model in (("golden-float", softmax_float), ("golden-fixed", softmax_fixed)):
        out = tmp_path / f"{engine}.npz"
        assert main(["softmax", "--in", str(tmp_path / "case.npz"), "--engine", engine,
                     "--out", str(out), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        result = np.load(out)
        np.testing.assert_array_equal(result["attn"], model(case)["attn"])
        assert str(result["mechanism"]) == "softmax"
        assert summary["max_attn_err"] <= 2.0 ** -11
    assert "attn_int" in np.load(tmp_path / "golden-fixed.npz")


def test_bad_case_refused_without_output(tmp_path, capsys):
    write_case(tmp_path / "case.npz", q=np.full((1, 9, 32), np.inf))
    out = tmp_path / "result.npz"
    assert main(["softmax", "--in", str(tmp_path / "case.npz"), "--engine", "golden-fixed",
                 "--out", str(out)]) == 2
    assert "q: contains NaN or inf" in capsys.readouterr().err
    assert not out.exists()


def test_rtl_capacity_refused_before_any_build(tmp_path, capsys):
    write_case(tmp_path / "case.npz")
    out = tmp_path / "result.npz"
    assert main(["softmax", "--in", str(tmp_path / "case.npz"), "--engine", "rtl",
                 "--max-tokens", "4", "--out", str(out)]) == 2
    assert "exceeds this head's" in capsys.readouterr().err
    assert not out.exists()
