"""`oscarray attention`: each engine through main() on small cases (result keys, shapes and
values against the models), rtl equal to golden-fixed bit for bit through the command line
(one Verilator build, shared with tests/test_attention_rtl.py: tests/conftest.py), the
example cases, and the refusals (exit 2, one line, no output file)."""

import json

import numpy as np
import pytest
from oscarray.golden.attention import DEFAULTS, attention_float, load_case, random_case
from oscarray.golden.attention_fixed import ATTN_TARGET, OUT_TARGET, attention_fixed
from oscarray.hdl.attention import cycles_per_head

from oscarray import flows
from oscarray.cli import main

FLOAT_KEYS = {"attn", "out", "x_star", "steps", "engine"}
RTL_INTS = {"attn_int", "out_int", "x_int", "theta_int", "h_int", "e_w"}
FIXED_KEYS = FLOAT_KEYS | RTL_INTS | {"phi_int", "anchor_int", "w_int", "g_int", "converged",
                                      "scales"}
RTL_KEYS = FLOAT_KEYS | RTL_INTS | {"scales", "cycles", "converged"}
PNG = b"\x89PNG\r\n\x1a\n"


def write_case(path, shape=(2, 5, 4, 2), seed=1, **entries):
    case = random_case(shape, seed=seed, **{k: np.asarray(v) for k, v in entries.items()})
    np.savez(path, **case)
    return path


def run(capsys, *argv):
    """main(["attention", ...]) -> (exit code, the --json object or None, stderr)."""
    code = main(["attention", *map(str, argv)])
    captured = capsys.readouterr()
    report = json.loads(captured.out) if "--json" in argv and code in (0, 1) else None
    return code, report, captured.err


def load(path) -> dict:
    with np.load(path, allow_pickle=False) as result:
        return {key: result[key] for key in result.files}


def shapes(result: dict, H, T, d_h, d_osc=2):
    return {"attn": (H, T, T), "out": (H, T, d_h), "x_star": (H, T, d_osc), "steps": (H, T)}


# ---------------------------------------------------------------------------------------------
# Engines

def test_golden_float_writes_the_float_model_result_summary_and_heatmaps(tmp_path, capsys):
    case = write_case(tmp_path / "case.npz", causal=False, p=2)
    out, plots = tmp_path / "result.npz", tmp_path / "plots"
    code, report, err = run(capsys, "--in", case, "--engine", "golden-float", "--out", out,
                            "--plots", plots, "--json")
    assert code == 0 and "golden-float" in err
    result = load(out)
    assert set(result) == FLOAT_KEYS and str(result["engine"]) == "golden-float"
    for key, shape in shapes(result, 2, 5, 4).items():
        assert result[key].shape == shape, key
    expected = attention_float(load_case(case))
    for key in ("attn", "out", "x_star", "steps"):
        np.testing.assert_array_equal(result[key], expected[key])
    assert report["engine"] == "golden-float" and report["shape"] == [2, 5, 4, 2]
    assert report["mode"] == "analytic" and report["max_attn_err"] == 0
    assert report["max_out_err_rel"] == 0 and report["cycles"] is None
    assert report["out"] == str(out) and report["plot"] == str(plots / "case_golden-float.png")
    assert (plots / "case_golden-float.png").read_bytes()[:8] == PNG


def test_golden_float_ode_on_the_sphere(tmp_path, capsys):
    # d_osc = 3 (the Lohe flow): only the float model runs it; the summary compares the
    # settled states with the analytic fixed point.
    case = write_case(tmp_path / "case.npz", shape=(1, 4, 3, 3), mode="ode-drive", dt=1.0,
                      tol=1e-6, max_steps=500)
    out = tmp_path / "result.npz"
    code, report, _ = run(capsys, "--in", case, "--engine", "golden-float", "--out", out,
                          "--json")
    result = load(out)
    assert code == 0 and result["x_star"].shape == (1, 4, 3) and result["steps"].shape == (1, 4)
    assert report["mode"] == "ode-drive" and report["not_converged"] == 0
    assert 0 < report["steps_max"] == result["steps"].max()
    assert 0 < report["max_attn_err"] < 1e-5


def test_ode_plots_settling_curves_beside_the_heatmaps(tmp_path, capsys):
    case = write_case(tmp_path / "case.npz", shape=(2, 5, 4, 2), mode="ode-pairwise", dt=1.0,
                      tol=6e-5, max_steps=400)
    plots = tmp_path / "plots"
    code, report, _ = run(capsys, "--in", case, "--engine", "golden-fixed", "--out",
                          tmp_path / "result.npz", "--plots", plots, "--json")
    assert code == 0 and report["plot"] == str(plots / "case_golden-fixed.png")
    assert report["settling_plot"] == str(plots / "case_golden-fixed_settling.png")
    assert (plots / "case_golden-fixed_settling.png").read_bytes()[:8] == PNG
    curves = attention_float(load_case(case), settling=True)["settling"]
    steps = attention_float(load_case(case))["steps"]
    assert curves.shape == (steps.max() + 1, 2, 5)
    settled = curves[steps, np.arange(2)[:, None], np.arange(5)[None, :]]
    assert (settled < 6e-5).all() and (curves[0] >= 0).all()    # each ends within tol


def test_golden_fixed_writes_the_integers_and_scales(tmp_path, capsys):
    case = write_case(tmp_path / "case.npz", shape=(2, 6, 8, 2), p=4)
    out = tmp_path / "result.npz"
    code, report, _ = run(capsys, "--in", case, "--engine", "golden-fixed", "--out", out,
                          "--json")
    assert code == 0
    result = load(out)
    assert set(result) == FIXED_KEYS
    for key, shape in shapes(result, 2, 6, 8).items():
        assert result[key].shape == shape, key
    expected = attention_fixed(load_case(case))
    for key in FIXED_KEYS - {"engine", "scales", "e_w"}:
        np.testing.assert_array_equal(result[key], expected[key], err_msg=key)
    assert result["attn_int"].dtype == np.int64 and result["e_w"].shape == (2, 6)
    scales = json.loads(str(result["scales"]))
    assert scales == json.loads(json.dumps(expected["scales"], default=flows._json_default))
    np.testing.assert_array_equal(result["e_w"], scales["w"])
    np.testing.assert_array_equal(result["out"], result["out_int"] * 2.0 ** -scales["out"])
    assert 0 < report["max_attn_err"] <= ATTN_TARGET
    assert 0 < report["max_out_err_rel"] <= OUT_TARGET
    assert report["mismatches"] is None


def test_golden_fixed_ode_mode_records_the_engine_runs(tmp_path, capsys):
    case = write_case(tmp_path / "case.npz", shape=(1, 5, 4, 2), mode="ode-drive", dt=1.0,
                      tol=3e-5, max_steps=3000)
    out = tmp_path / "result.npz"
    code, report, err = run(capsys, "--in", case, "--engine", "golden-fixed", "--out", out,
                            "--json")
    assert code == 0, err
    result = load(out)
    engine_runs = json.loads(str(result["scales"]))["engine"]
    assert len(engine_runs) == 1 and engine_runs[0]["tokens"] == [0, 1, 2, 3, 4]
    assert report["not_converged"] == 0 and report["steps_max"] == result["steps"].max() > 0
    assert result["converged"].all()


def test_rtl_equals_golden_fixed_bit_for_bit(tmp_path, capsys, attention_build_root):
    # A tiny case: two heads (cycles per head), causal, p = 2; the default capacity
    # (16 tokens, d_h 32) is the build tests/test_attention_rtl.py uses.
    case = write_case(tmp_path / "case.npz", shape=(2, 3, 4, 2), seed=5, p=2)
    assert flows.attention_rtl_capacity(3, 4) == (16, 32)
    rtl_out, fixed_out, plots = tmp_path / "rtl.npz", tmp_path / "fixed.npz", tmp_path / "plots"
    code, report, err = run(capsys, "--in", case, "--engine", "rtl", "--out", rtl_out,
                            "--build-dir", attention_build_root, "--plots", plots, "--json")
    assert code == 0, err
    assert run(capsys, "--in", case, "--engine", "golden-fixed", "--out", fixed_out)[0] == 0
    rtl, fixed = load(rtl_out), load(fixed_out)
    assert set(rtl) == RTL_KEYS and str(rtl["engine"]) == "rtl"
    for key, shape in shapes(rtl, 2, 3, 4).items():
        assert rtl[key].shape == shape, key
    for key in RTL_KEYS - {"engine", "cycles"}:
        np.testing.assert_array_equal(rtl[key], fixed[key], err_msg=key)
    expected_cycles = cycles_per_head(3, 4, True)
    np.testing.assert_array_equal(rtl["cycles"], [expected_cycles] * 2)
    assert report["cycles"] == [expected_cycles] * 2 and report["mismatches"] == 0
    assert report["sim"] == "verilator" and report["max_attn_err"] <= ATTN_TARGET
    assert (plots / "case_rtl.png").read_bytes()[:8] == PNG


def fake_rtl(change=None):
    """A stand-in for sim.attention.run_attention_rtl: golden-fixed's integers (one changed
    when `change` is given) in the RTL's result format."""
    def run_attention_rtl(case, config, **options):
        gold = attention_fixed(case)
        result = {key: gold[key].copy() for key in RTL_INTS - {"e_w"}}
        result.update(steps=gold["steps"].copy(), converged=gold["converged"].copy())
        result["e_w"] = np.array(gold["scales"]["w"])
        if change:
            result[change][(0,) * result[change].ndim] += 1
        result.update(cycles=np.full(case.heads, 7), error=np.zeros(case.heads, bool),
                      sim="fake", options=options)
        return result
    return run_attention_rtl


def test_rtl_differing_from_golden_fixed_exits_1(tmp_path, capsys, monkeypatch):
    import oscarray.sim.attention as sim_attention
    case = write_case(tmp_path / "case.npz", shape=(1, 4, 4, 2))
    out = tmp_path / "result.npz"
    monkeypatch.setattr(sim_attention, "run_attention_rtl", fake_rtl())
    code, report, _ = run(capsys, "--in", case, "--engine", "rtl", "--out", out, "--json")
    assert code == 0 and report["mismatches"] == 0 and report["cycles"] == [7]
    monkeypatch.setattr(sim_attention, "run_attention_rtl", fake_rtl("attn_int"))
    code, report, _ = run(capsys, "--in", case, "--engine", "rtl", "--out", out, "--json")
    assert code == 1 and report["mismatches"] == 1 and out.exists()


def test_rtl_capacity_options_reach_the_build(tmp_path, capsys, monkeypatch):
    import oscarray.sim.attention as sim_attention
    seen = {}
    real = fake_rtl()

    def spy(case, config, **options):
        seen.update(options)
        return real(case, config, **options)
    monkeypatch.setattr(sim_attention, "run_attention_rtl", spy)
    case = write_case(tmp_path / "case.npz", shape=(1, 20, 12, 2))
    out = tmp_path / "result.npz"
    assert run(capsys, "--in", case, "--engine", "rtl", "--out", out)[0] == 0
    assert (seen["max_tokens"], seen["max_d_h"]) == (32, 32)
    assert run(capsys, "--in", case, "--engine", "rtl", "--out", out, "--max-tokens", 24,
               "--max-d-h", 12, "--sim", "icarus", "--build-dir", tmp_path / "b")[0] == 0
    assert (seen["max_tokens"], seen["max_d_h"], seen["sim"]) == (24, 12, "icarus")
    assert seen["build_root"] == str(tmp_path / "b") and seen["mac_lanes"] == 1
    assert run(capsys, "--in", case, "--engine", "rtl", "--out", out, "--mac-lanes", 8)[0] == 0
    assert seen["mac_lanes"] == 8
    assert seen["compact"] is False and seen["cordic_arch"] == "pipelined"
    assert run(capsys, "--in", case, "--engine", "rtl", "--out", out, "--compact")[0] == 0
    assert seen["compact"] is True and seen["cordic_arch"] == "iterative"


# ---------------------------------------------------------------------------------------------
# Examples

@pytest.mark.parametrize("name, shape", [("kws", [2, 49, 16, 2]), ("sva", [1, 9, 32, 2])])
def test_example_cases_run_on_the_fixed_point_engine(tmp_path, capsys, name, shape):
    path = tmp_path / f"{name}.npz"
    code, report, _ = run(capsys, "--example", name, "--seed", 3, "--out", path, "--json")
    assert code == 0 and report == {"example": name, "seed": 3, "out": str(path),
                                    "shape": shape, "mode": "analytic"}
    case = load(path)
    assert set(case) == {"q", "k", "v", "anchors"} | set(DEFAULTS)
    np.testing.assert_array_equal(case["q"], random_case(name, 3)["q"])
    assert int(case["seed"]) == 3 and str(case["mode"]) == "analytic"
    out = tmp_path / "result.npz"
    code, report, _ = run(capsys, "--in", path, "--engine", "golden-fixed", "--out", out,
                          "--json")
    assert code == 0 and report["shape"] == shape and report["max_attn_err"] <= ATTN_TARGET


def test_example_refuses_run_options_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "case.npz"
    code, _, err = run(capsys, "--example", "sva", "--engine", "rtl", "--out", out)
    assert code == 2 and "--example writes a case" in err and not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["attention", "--example", "gpt", "--out", str(out)])
    assert exit_info.value.code == 2 and not out.exists()


# ---------------------------------------------------------------------------------------------
# Refusals: exit 2, one line, no traceback, no output file (nor plots folder)

def bad_shape(case):
    case["k"] = case["k"][:, :-1]


def nan_entry(case):
    case["q"][0, 1, 2] = np.nan


def sphere(case):
    case["anchors"] = np.concatenate([case["anchors"], case["anchors"][..., :1]], axis=-1)


def sphere_ode(case):
    sphere(case)
    case["mode"] = np.asarray("ode-drive")


def sphere_pairwise_fine_tol(case):
    sphere(case)
    case["mode"], case["tol"] = np.asarray("ode-pairwise"), np.asarray(1e-6)


def huge_scores(case):
    case["q"], case["k"] = case["q"] * 40, case["k"] * 40


REFUSALS = {
    "bad-shape": ("golden-float", bad_shape, [], "k: must have the shape of q"),
    "nan": ("golden-fixed", nan_entry, [], "q: contains NaN or inf"),
    "d_osc-fixed": ("golden-fixed", sphere_pairwise_fine_tol, [], "sphere flow's noise floor"),
    "d_osc-rtl": ("rtl", sphere_pairwise_fine_tol, [], "sphere flow's noise floor"),
    "scores-rtl": ("rtl", huge_scores, [], "relu_eps"),
    "capacity-rtl": ("rtl", None, ["--max-tokens", "4"], "exceeds this head's (4, 32)"),
    "capacity-limit-rtl": ("rtl", None, ["--max-d-h", "129"], "max_d_h must be 1..128"),
    "lanes-rtl": ("rtl", None, ["--mac-lanes", "64"], "mac_lanes must be a power of two"),
    "lanes-golden": ("golden-fixed", None, ["--mac-lanes", "4"], "--mac-lanes is the rtl"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_exit_2_before_any_work(tmp_path, capsys, monkeypatch, name):
    import oscarray.golden.attention_fixed as golden_fixed
    import oscarray.sim.attention as sim_attention

    def no_work(*args, **kwargs):
        raise AssertionError("the engine ran on a refused case")
    monkeypatch.setattr(sim_attention, "run_attention_rtl", no_work)
    monkeypatch.setattr(golden_fixed, "attention_fixed", no_work)
    engine, change, extra, message = REFUSALS[name]
    case = dict(random_case((1, 6, 8, 2), seed=4))
    if change:
        change(case)
    path = tmp_path / "case.npz"
    np.savez(path, **case)
    out = tmp_path / "result.npz"
    code, _, err = run(capsys, "--in", path, "--engine", engine, "--out", out, "--plots",
                       tmp_path / "plots", *extra)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("oscarray: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]


def test_unknown_engine_and_missing_arguments(tmp_path, capsys):
    path = write_case(tmp_path / "case.npz")
    out = tmp_path / "result.npz"
    with pytest.raises(SystemExit) as exit_info:
        main(["attention", "--in", str(path), "--engine", "softmax", "--out", str(out)])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown attention engine 'softmax'"):
        flows.attention_run(path, "softmax", out)
    code, _, err = run(capsys, "--in", path, "--out", out)
    assert code == 2 and "--in needs --engine" in err
    code, _, err = run(capsys, "--in", tmp_path / "absent.npz", "--engine", "golden-float",
                       "--out", out)
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "--in", path, "--engine", "golden-float", "--out",
                       tmp_path / "no" / "result.npz")
    assert code == 2 and "does not exist" in err
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "--in", path, "--engine", "golden-float", "--out", out,
                       "--plots", tmp_path / "file" / "plots")
    assert code == 2 and "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz", "file"]
