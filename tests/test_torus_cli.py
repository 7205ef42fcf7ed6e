"""`oscarray torus`: the command line (example, a run, errors as exit codes)."""

import json

import numpy as np

from oscarray.cli import main
from oscarray.golden.torus_fixed import torus_fixed
from oscarray.golden.torus import load_case


def test_example_then_golden_fixed(tmp_path, capsys):
    case = tmp_path / "case.npz"
    assert main(["torus", "--example", "--out", str(case), "--tokens", "5", "--d", "3"]) == 0
    capsys.readouterr()
    out = tmp_path / "result.npz"
    assert main(["torus", "--in", str(case), "--engine", "golden-fixed", "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_attn_err"] <= 2.0 ** -11 and summary["shape"] == [5, 3]
    with np.load(out) as result:
        np.testing.assert_array_equal(result["attn"], torus_fixed(load_case(case))["attn"])


def test_errors_exit_2_without_output(tmp_path, capsys):
    case = tmp_path / "case.npz"
    np.savez(case, theta=np.zeros((4, 2)), g=np.array([1.0, -1.0]), omega=np.zeros(2),
             tau=np.array(1.0), eta=np.zeros(2))
    out = tmp_path / "result.npz"
    assert main(["torus", "--in", str(case), "--engine", "golden-float", "--out", str(out)]) == 2
    assert "g" in capsys.readouterr().err and not out.exists()
    assert main(["torus", "--in", str(case), "--out", str(out)]) == 2
    assert "--in needs --engine" in capsys.readouterr().err
    assert main(["torus", "--example", "--engine", "rtl", "--out", str(out)]) == 2
    assert not out.exists()
