"""`oscarray bench attention`: the example cases and refusals, the row arithmetic (analytic
and ODE rows), the RTL measurement's checks (cycles against the model, ode_cycles of the Euler
steps for the ODE modes, bit-exact against golden-fixed) with the simulation replaced by
golden-fixed, the command line's output and errors without any build; and one real run (sva
on UP5K: the builds and Verilator simulations of every mechanism, slow)."""

import json

import numpy as np
import pytest
from oscarray.golden.attention import random_case, validate_case
from oscarray.hdl.attention import (
    OSCILLATOR_MODES as MODES,
    REGISTERS,
    cycles_per_head,
    ode_cycles,
    ode_engine_runs,
)
from oscarray.hdl.torus import torus_cycles
from oscarray.sim.runner import SimulationFailed

from oscarray import bench_attention as bench
from oscarray import flows
from oscarray.cli import main

ROW_FIELDS = {"shape", "device", "board", "mechanism", "lut", "ff", "dsp", "bram", "fmax_mhz",
              "cycles", "cycles_per_head", "us", "max_attn_err", "bit_exact", "numpy_us",
              "ratio", "fits", "does_not_fit", "cordic_arch", "cycles_model", "euler_steps",
              "converged", "engine_runs", "modes_built", "build"}
BUILT = {"device": "LFE5U-85F", "lut": 20000, "ff": 9000, "dsp": 16, "bram": 3,
         "fmax_mhz": 50.0, "target_mhz": 100.0, "timing_met": False, "seconds": 1.0}
NUMPY = {"numpy_us": 40.0, "numpy_calls": 9, "numpy_fn": bench.NUMPY_FUNCTION}


def rtl_figures(cycles=4590, heads=1, bit_exact=True, steps=None):
    """measure_rtl's figures; `steps`: an ODE mode's Euler steps (one run per head)."""
    return {"cycles_measured": [cycles] * heads, "cycles": cycles * heads,
            "cycles_model": [cycles] * heads, "cycles_per_head": cycles,
            "bit_exact": bit_exact, "mismatches": 0 if bit_exact else 3, "max_attn_err": 1.5e-5,
            "max_out_err_rel": 3e-5, "load_words": 879, "sim": "verilator",
            "euler_steps": steps, "converged": None if steps is None else True,
            "engine_runs": None if steps is None else [[(98, steps)]] * heads}


def test_example_cases_are_the_commands_examples(tmp_path):
    flows.attention_example("sva", tmp_path / "sva.npz", seed=3)
    with np.load(tmp_path / "sva.npz") as written:
        expected = validate_case(dict(written))
    case = bench.example_case("sva", seed=3)
    for key in ("q", "k", "v", "anchors"):
        np.testing.assert_array_equal(getattr(case, key), getattr(expected, key))
    assert (case.causal, case.mode, case.sigma, case.p) == (True, "analytic", "relu_eps", 1)
    assert (case.heads, case.tokens, case.d_h, case.d_osc) == (1, 9, 32, 2)


def test_no_example_mechanism_is_refused():
    assert bench.refusal(bench.example_case("kws")) is None
    assert bench.refusal(bench.example_case("sva")) is None
    tiny = bench.example_case("tinystories")
    assert bench.refusal(tiny) is None                          # analytic on the sphere
    assert bench.refusal(bench.mechanism_case(tiny, "oscillator-ode-drive")) is None
    assert bench.refusal(bench.mechanism_case(tiny, "oscillator-ode-pairwise")) is None
    assert bench.head_modes_of(bench.mechanism_case(tiny, "oscillator-ode-drive")) == (
        "analytic", "ode-drive", "ode-pairwise")
    assert bench.refusal(bench.mechanism_case(tiny, "softmax")) is None     # no anchors


def test_versus_analytic_divides_the_fitted_rows():
    rows = [{"shape": "kws", "device": "ecp5-85f", "fits": True, "mechanism": m, "us": us,
             "lut": lut, "dsp": dsp, "lut_us": lut * us, "dsp_us": dsp * us}
            for m, us, lut, dsp in (("softmax", 30.0, 4000, 6),
                                    ("oscillator-analytic", 20.0, 5000, 10),
                                    ("torus", 90.0, 9000, 12))]
    rows.append(dict(rows[0], device="up5k", fits=False))
    softmax, torus = bench.versus_analytic(rows)
    assert softmax["us"] == 1.5 and softmax["lut_us"] == pytest.approx(1.2)
    assert softmax["dsp_us"] == pytest.approx(0.9) and softmax["paper"] == 1.98
    assert torus["mechanism"] == "torus" and torus["us"] == 4.5 and torus["paper"] is None


def test_numpy_reference_times_the_float_model():
    numpy = bench.numpy_reference(bench.example_case("sva"), repeats=3, min_seconds=0.0)
    assert numpy["numpy_us"] > 0 and numpy["numpy_calls"] == 3
    assert "attention_float" in numpy["numpy_fn"]


def test_row_of_a_build():
    case = bench.example_case("kws")
    row = bench.bench_row("kws", "ecp5-85f", case, "pipelined", rtl_figures(52626, 2), NUMPY,
                          built=BUILT)
    assert ROW_FIELDS <= row.keys()
    assert (row["shape"], row["device"], row["board"]) == ("kws", "ecp5-85f", "ulx3s-85f")
    assert row["part"] == "LFE5U-85F"
    assert row["mechanism"] == "oscillator-analytic" and row["fits"] is True
    assert (row["heads"], row["tokens"], row["d_h"], row["d_osc"]) == (2, 49, 16, 2)
    assert (row["max_tokens"], row["max_d_h"]) == (49, 16)
    assert row["cycles"] == 2 * 52626 and row["cycles_per_head"] == 52626
    assert row["us"] == pytest.approx(2 * 52626 / 50.0)            # clocks / MHz
    assert row["ratio"] == pytest.approx(row["us"] / 40.0)
    assert row["lut"] == 20000 and row["timing_met"] is False and row["does_not_fit"] is None
    assert row["modes_built"] == ["analytic"] and row["euler_steps"] is None
    assert row["converged"] is None and row["engine_runs"] is None


def test_the_up5k_builds_its_analytic_heads_compact_and_resumes_only_those():
    kws = bench.example_case("kws")
    drive = bench.mechanism_case(kws, "oscillator-ode-drive")
    sphere = bench.example_case("tinystories")             # d_osc 8: no compact head
    softmax = bench.mechanism_case(sphere, "softmax")       # no oscillator: compact
    assert bench.builds_compact("up5k", kws) is True
    assert bench.builds_compact("up5k", softmax) is True
    assert bench.builds_compact("up5k", kws, mac_lanes=2) is False
    assert not any(bench.builds_compact("up5k", case) for case in (drive, sphere))
    assert not any(bench.builds_compact("ecp5-85f", case)
                   for case in (kws, drive, sphere, softmax))
    row = bench.bench_row("kws", "up5k", kws, "iterative", rtl_figures(59927, 2), NUMPY,
                          built=BUILT, compact=True)
    assert row["compact"] is True
    # A UP5K row measured before the compact head is measured again, not taken over; the
    # rows of heads that are not compact are.
    old = dict(row, compact=False)
    ode = dict(row, mechanism="oscillator-ode-drive", compact=False)
    for rows, kept in (([row, ode], 2), ([old, ode], 1)):
        taken = bench.resumable_rows({"seed": 0, "rows": rows}, 0)
        assert len(taken) == kept and ("kws", "up5k", "oscillator-ode-drive") in taken
    softmax_row = bench.bench_row("tinystories", "up5k", softmax, "iterative",
                                  rtl_figures(576256, 4), NUMPY, built=BUILT, compact=True)
    assert bench.row_builds_compact(softmax_row) is True and softmax_row["d_osc"] == 8


@pytest.mark.parametrize("mechanism", ["oscillator-ode-drive", "oscillator-ode-pairwise"])
def test_row_of_an_ode_build(mechanism):
    case = bench.mechanism_case(bench.example_case("kws"), mechanism)
    assert case.mode == mechanism.removeprefix("oscillator-")
    assert (case.dt, case.tol, case.max_steps, case.init) == (1.0, 6e-5, 4000, "random")
    row = bench.bench_row("kws", "ecp5-85f", case, "pipelined", rtl_figures(600000, 2, steps=99),
                          NUMPY, built=dict(BUILT, name="attention_t49_d16_pipelined_drive_pairwise"))
    assert ROW_FIELDS <= row.keys() and row["mechanism"] == mechanism
    assert row["modes_built"] == list(MODES) and row["build"].endswith("_drive_pairwise")
    assert row["us"] == pytest.approx(2 * 600000 / 50.0)
    assert row["numpy_us"] == 40.0          # the analytic NumPy figure: the reference
    assert row["euler_steps"] == 99 and row["converged"] is True
    assert row["engine_runs"] == [[(98, 99)]] * 2

def test_row_of_a_head_that_does_not_fit():
    case = bench.example_case("sva")
    reason = {"message": "design does not fit icebreaker: ...", "target_mhz": 30.0,
              "netlist": {"lut": 5585, "ff": 2035, "dsp": 29, "bram": 31},
              "capacity": {"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30}}
    row = bench.bench_row("sva", "up5k", case, "iterative", rtl_figures(5859), NUMPY,
                          does_not_fit=reason)
    assert ROW_FIELDS <= row.keys() and row["fits"] is False and row["part"] == "iCE40UP5K"
    assert row["does_not_fit"].startswith("design does not fit")
    for key in ("lut", "ff", "dsp", "bram", "fmax_mhz", "us", "ratio"):
        assert row[key] is None, key
    # What does not depend on the device is still measured.
    assert row["cycles"] == 5859 and row["bit_exact"] is True and row["numpy_us"] == 40.0
    assert row["netlist"]["dsp"] == 29 and row["capacity"]["dsp"] == 8
    with pytest.raises(ValueError, match="not both"):
        bench.bench_row("sva", "up5k", case, "iterative", rtl_figures(), NUMPY, BUILT, reason)
    with pytest.raises(ValueError, match="not both"):
        bench.bench_row("sva", "up5k", case, "iterative", rtl_figures(), NUMPY)


# ---------------------------------------------------------------------------------------------
# measure_rtl with the simulation replaced by golden-fixed (the same integers, bit for bit)

def small_case():
    return validate_case(random_case((2, 5, 4, 2), seed=2))


def fake_rtl(cycles=None, flip=False):
    """An rtl engine returning golden-fixed's result with the given cycles per head (default:
    the model's) and, if `flip`, one attention integer changed."""
    def engine(case, max_tokens, max_d_h, cordic_arch, **options):
        assert (max_tokens, max_d_h) == (case.tokens, case.d_h)      # sized for the shape
        result = flows.ATTENTION_ENGINES["golden-fixed"](case)
        if cycles is not None:
            per_head = [cycles] * case.heads
        elif case.mode == "analytic":
            per_head = [cycles_per_head(case.tokens, case.d_h, case.causal,
                                        cordic_arch=cordic_arch)] * case.heads
        else:
            per_head = [ode_cycles(case.tokens, case.d_h, case.causal, case.mode,
                                   ode_engine_runs(case, result, h), cordic_arch=cordic_arch)
                        for h in range(case.heads)]
        result["cycles"] = np.array(per_head)
        if flip:
            result["attn_int"] = result["attn_int"].copy()
            result["attn_int"][0, 0, 0] += 1
        result["sim"] = "fake"
        return result
    return engine


def test_measure_rtl_checks_cycles_and_bits(monkeypatch):
    case = small_case()
    model = cycles_per_head(5, 4, True, cordic_arch="iterative")
    monkeypatch.setitem(flows.ATTENTION_ENGINES, "rtl", fake_rtl())
    got = bench.measure_rtl(case, "iterative")
    assert got["cycles_measured"] == [model, model] and got["cycles"] == 2 * model
    assert got["cycles_per_head"] == model and got["bit_exact"] and got["mismatches"] == 0
    assert 0 < got["max_attn_err"] < 2 ** -11
    # q, k, v, anchors and the registers (all but the sphere flow's three).
    flow_registers = {"flow_step", "flow_tol", "max_steps"}
    assert got["load_words"] == 2 * (3 * 5 * 4 + 5 + len(REGISTERS.keys() - flow_registers))

    monkeypatch.setitem(flows.ATTENTION_ENGINES, "rtl", fake_rtl(flip=True))
    got = bench.measure_rtl(case, "iterative")
    assert got["bit_exact"] is False and got["mismatches"] == 1

    monkeypatch.setitem(flows.ATTENTION_ENGINES, "rtl", fake_rtl(cycles=model + 1))
    with pytest.raises(SimulationFailed, match=rf"says \[{model}, {model}\]"):
        bench.measure_rtl(case, "iterative")


@pytest.mark.parametrize("mode", ["ode-drive", "ode-pairwise"])
def test_measure_rtl_of_an_ode_mode(monkeypatch, mode):
    from oscarray.golden.attention import attention_float
    from oscarray.golden.attention_fixed import attention_fixed
    analytic = small_case()
    case = bench.mechanism_case(analytic, f"oscillator-{mode}")
    gold = attention_fixed(case)
    runs = [ode_engine_runs(case, gold, h) for h in range(2)]
    model = [ode_cycles(5, 4, True, mode, r, cordic_arch="pipelined") for r in runs]
    assert len(set(model)) == 2                    # the heads ran different Euler steps
    monkeypatch.setitem(flows.ATTENTION_ENGINES, "rtl", fake_rtl())
    got = bench.measure_rtl(case, "pipelined")
    assert got["cycles_measured"] == got["cycles_model"] == got["cycles_per_head"] == model
    assert got["cycles"] == sum(model) and got["bit_exact"] and got["engine_runs"] == runs
    assert got["euler_steps"] == max(steps for r in runs for _, steps in r) > 0
    assert got["converged"] is True and got["euler_steps"] == gold["steps"].max()
    # Against the float model's analytic attention (the reference), not its ODE.
    reference = attention_float(analytic)
    assert got["max_attn_err"] == np.abs(gold["attn"] - reference["attn"]).max()
    assert got["load_words"] > 2 * (3 * 5 * 4 + 5 + len(REGISTERS))   # the engine's writes

    monkeypatch.setitem(flows.ATTENTION_ENGINES, "rtl", fake_rtl(cycles=model[0]))
    with pytest.raises(SimulationFailed, match="engine runs"):
        bench.measure_rtl(case, "pipelined")


# ---------------------------------------------------------------------------------------------
# The command line, without builds or simulations

def fake_bench(monkeypatch, *, bit_exact=True):
    """bench_attention with measure_rtl and the build replaced: UP5K does not fit."""
    def measure(case, arch, **options):
        fixed = case.mode in ("analytic", "softmax")
        model = cycles_per_head(case.tokens, case.d_h, case.causal, cordic_arch=arch,
                                mode=case.mode if fixed else "analytic")
        return rtl_figures(model, case.heads, bit_exact, steps=None if fixed else 40)

    def measure_torus(cases, **options):
        model = torus_cycles(cases[0].tokens, cases[0].d)
        return rtl_figures(model, len(cases), bit_exact)

    def build(device, case, build_root, progress, mac_lanes=1, compact=False):
        if device == "up5k":
            return None, {"message": "design does not fit icebreaker: needs at least 5585 "
                                     "logic cells, the device has 5280", "target_mhz": 30.0,
                          "netlist": {"lut": 5585, "ff": 2035, "dsp": 29, "bram": 31},
                          "capacity": {"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30}}
        return BUILT, None
    monkeypatch.setattr(bench, "measure_rtl", measure)
    monkeypatch.setattr(bench, "measure_torus", measure_torus)
    monkeypatch.setattr(bench, "numpy_torus", lambda cases, progress=None: NUMPY)
    monkeypatch.setattr(bench, "_build", build)


def test_mac_lanes_reach_every_head_and_bad_ones_are_refused(tmp_path, capsys, monkeypatch):
    fake_bench(monkeypatch)
    seen = []
    measure, build = bench.measure_rtl, bench._build
    monkeypatch.setattr(bench, "measure_rtl", lambda case, arch, **kw: seen.append(
        ("sim", kw["mac_lanes"])) or measure(case, arch, **kw))
    monkeypatch.setattr(bench, "_build", lambda device, case, root, progress, mac_lanes=1,
                        compact=False: (seen.append(("build", mac_lanes))
                                        or build(device, case, root, progress, mac_lanes,
                                                 compact)))
    out = tmp_path / "bench.json"
    code = main(["bench", "attention", "--shape", "kws", "--device", "ecp5-85f",
                 "--mechanism", "oscillator-analytic", "softmax", "--mac-lanes", "16",
                 "--output", str(out), "--build-dir", str(tmp_path)])
    assert code == 0 and "every head has 16 MAC lanes" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["mac_lanes"] == 16 and [r["mac_lanes"] for r in result["rows"]] == [16, 16]
    assert seen == [("sim", 16), ("build", 16)] * 2
    for lanes in (3, 32):           # not a power of two; above kws's d_h of 16
        with pytest.raises(ValueError, match="mac_lanes"):
            bench.bench_attention(["kws"], ["ecp5-85f"], build_root=tmp_path / "no",
                                  mac_lanes=lanes)
    assert not (tmp_path / "no").exists()
    with pytest.raises(ValueError, match="of 1 MAC lanes: this run's heads have 16"):
        bench.resumable_rows({"seed": 0, "rows": []}, 0, 16)
    # Bad lanes are named as such before --resume compares its files' lanes.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"seed": 0, "rows": []}))
    code = main(["bench", "attention", "--shape", "kws", "--mac-lanes", "3", "--resume",
                 str(old), "--output", str(tmp_path / "new.json")])
    assert code == 2 and "mac_lanes must be a power of two" in capsys.readouterr().err


def test_cli_table_notes_and_json(tmp_path, capsys, monkeypatch):
    fake_bench(monkeypatch)
    out = tmp_path / "bench.json"
    code = main(["bench", "attention", "--output", str(out), "--build-dir", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0
    text = printed.out
    assert "attention heads" in text and "Fmax MHz" in text and "us/NumPy" in text
    assert "LUT*us" in text and "DSP*us" in text
    assert "sva on up5k, head with analytic (iterative CORDICs): does not fit" in text
    assert "dsp 29/8" in text
    # The ODE rows share one build: said once.
    assert text.count("sva on up5k, head with analytic+ode-drive+ode-pairwise") == 1
    assert "refused, no row" not in text
    # The UP5K's analytic and softmax heads are compact.
    assert ("lean shifters, q and k in SPRAM): kws oscillator-analytic on up5k, kws softmax "
            "on up5k, sva oscillator-analytic on up5k, sva softmax on up5k") in text
    assert "NumPy us: the float model's analytic attention on every oscillator row" in text
    # Same area in the fake builds: every ratio is the clocks' (kws: 2 heads of T 49, d_h 16).
    clocks = [cycles_per_head(49, 16, True, mode=m) for m in ("softmax", "analytic")]
    ratio = f"{clocks[0] / clocks[1]:.2f}"
    assert (f"kws on ecp5-85f: softmax / oscillator-analytic = {ratio} in us, {ratio} in "
            f"LUT*us, {ratio} in DSP*us (paper A's operation count: 1.98)") in text
    assert "not in this bench" not in text and "Euler steps" in text
    assert f"written: {out}" in text
    assert "kws analytic: simulating" in printed.err        # progress on stderr
    result = json.loads(out.read_text())
    mechanisms = list(bench.MECHANISMS)
    assert [(r["shape"], r["device"], r["mechanism"]) for r in result["rows"]] == [
        (shape, device, mechanism) for shape in ("kws", "sva", "tinystories")
        for device in ("up5k", "ecp5-85f") for mechanism in mechanisms]
    for r in result["rows"]:
        ode = r["mechanism"].startswith("oscillator-ode")
        built = {"oscillator-analytic": ["analytic"], "softmax": ["softmax"],
                 "torus": ["torus"]}
        assert r["modes_built"] == (list(MODES) if ode else built[r["mechanism"]])
        assert (r["euler_steps"] == 40) if ode else r["euler_steps"] is None
    assert result["refused"] == []
    assert [(c["shape"], c["device"], c["mechanism"]) for c in result["versus_analytic"]] == [
        (shape, "ecp5-85f", m) for shape in ("kws", "sva", "tinystories")
        for m in mechanisms[1:]]
    torus = [r for r in result["rows"] if r["mechanism"] == "torus"]
    assert [(r["heads"], r["tokens"], r["d_h"]) for r in torus[::2]] == [
        (2, 49, 16), (1, 9, 32), (4, 128, 32)]
    assert result["not_benched"] == []
    assert result["date"] and result["machine"]


def test_a_refused_mechanism_is_named_and_gets_no_rows(tmp_path, monkeypatch):
    fake_bench(monkeypatch)
    refusal = bench.refusal
    monkeypatch.setattr(bench, "refusal", lambda case: "no" if case.mode == "ode-pairwise"
                        else refusal(case))
    result = bench.bench_attention(["sva"], ["ecp5-85f"], build_root=tmp_path)
    assert [r["mechanism"] for r in result["rows"]] == ["oscillator-analytic",
                                                        "oscillator-ode-drive", "softmax",
                                                        "torus"]
    assert result["refused"] == [{"shape": "sva", "mechanism": "oscillator-ode-pairwise",
                                  "reason": "no"}]


def test_cli_json_and_not_bit_exact_exit_1(tmp_path, capsys, monkeypatch):
    fake_bench(monkeypatch, bit_exact=False)
    out = tmp_path / "bench.json"
    code = main(["bench", "attention", "--shape", "sva", "--device", "ecp5-85f", "--json",
                 "--output", str(out), "--build-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["written"] == str(out)
    assert len(report["rows"]) == 5 and not any(r["bit_exact"] for r in report["rows"])


def test_rows_are_written_as_they_finish_and_a_run_resumes_from_them(tmp_path, monkeypatch):
    fake_bench(monkeypatch)
    partials = []
    first = bench.bench_attention(["sva"], ["ecp5-85f"], build_root=tmp_path,
                                  mechanisms=["softmax", "torus"],
                                  on_row=lambda r: partials.append(json.loads(json.dumps(r))))
    assert [len(p["rows"]) for p in partials] == [1, 2]
    assert not any(p["complete"] for p in partials) and first["complete"]
    assert all(row["measured"] == first["date"] for row in first["rows"])

    # A resumed run measures only what the earlier one lacks (here: the analytic row).
    earlier = {**partials[0], "date": "2026-01-01"}
    del earlier["rows"][0]["measured"]              # an old result: its date stands in
    measured = []
    measure = bench.measure_rtl
    monkeypatch.setattr(bench, "measure_rtl",
                        lambda case, arch, **kw: measured.append(case.mode) or measure(
                            case, arch, **kw))
    again = bench.bench_attention(["sva"], ["ecp5-85f"], build_root=tmp_path,
                                  mechanisms=["oscillator-analytic", "softmax"],
                                  resume=bench.resumable_rows(earlier, 0))
    assert measured == ["analytic"]
    assert [(r["mechanism"], r["measured"]) for r in again["rows"]] == [
        ("oscillator-analytic", again["date"]), ("softmax", "2026-01-01")]
    assert [v["mechanism"] for v in again["versus_analytic"]] == ["softmax"]
    with pytest.raises(ValueError, match="seed 0: this run's seed is 3"):
        bench.resumable_rows(earlier, 3)

    # Row by row: a device the earlier run did not have is measured, the other taken over.
    measured.clear()
    both = bench.bench_attention(["sva"], ["up5k", "ecp5-85f"], build_root=tmp_path,
                                 mechanisms=["softmax"], resume=bench.resumable_rows(earlier, 0))
    assert measured == ["softmax"]
    assert [(r["device"], r["measured"]) for r in both["rows"]] == [
        ("up5k", both["date"]), ("ecp5-85f", "2026-01-01")]


def test_cli_resumes_from_two_results_and_refuses_a_row_in_both(tmp_path, capsys,
                                                                  monkeypatch):
    fake_bench(monkeypatch)
    softmax = bench.bench_attention(["sva"], ["ecp5-85f"], build_root=tmp_path,
                                    mechanisms=["softmax"])
    torus = bench.bench_attention(["sva"], ["ecp5-85f"], build_root=tmp_path,
                                  mechanisms=["torus"])
    paths = []
    for name, result in (("softmax", {**softmax, "date": "2026-01-01"}),
                         ("torus", {**torus, "date": "2026-01-02"})):
        for row in result["rows"]:
            row.pop("measured")
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result))
    monkeypatch.setattr(bench, "measure_rtl", lambda *a, **k: pytest.fail("measured again"))
    monkeypatch.setattr(bench, "measure_torus", lambda *a, **k: pytest.fail("measured again"))
    out = tmp_path / "both.json"
    code = main(["bench", "attention", "--shape", "sva", "--device", "ecp5-85f",
                 "--mechanism", "softmax", "torus", "--resume", *map(str, paths),
                 "--output", str(out), "--build-dir", str(tmp_path)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mechanism"], r["measured"]) for r in rows] == [("softmax", "2026-01-01"),
                                                              ("torus", "2026-01-02")]
    # The same row in two files (one took it over from the other) is one row; measured
    # twice, differently, it is an error.
    code = main(["bench", "attention", "--shape", "sva", "--device", "ecp5-85f",
                 "--mechanism", "softmax", "torus", "--resume", str(out), *map(str, paths),
                 "--output", str(tmp_path / "same.json"), "--build-dir", str(tmp_path)])
    assert code == 0
    other = json.loads(paths[0].read_text())
    other["rows"][0]["cycles"] += 1
    paths[1].write_text(json.dumps(other))
    capsys.readouterr()
    code = main(["bench", "attention", "--resume", str(paths[0]), str(paths[1]),
                 "--output", str(tmp_path / "again.json"), "--build-dir", str(tmp_path)])
    assert code == 2
    assert f"the row sva ecp5-85f softmax is in both {paths[0]} and {paths[1]}" in \
        capsys.readouterr().err
    assert not (tmp_path / "again.json").exists()


def test_cli_refuses_an_output_that_would_drop_resumed_rows(tmp_path, capsys, monkeypatch):
    fake_bench(monkeypatch)
    path = tmp_path / "both.json"
    path.write_text(json.dumps(bench.bench_attention(["sva"], ["ecp5-85f"], build_root=tmp_path,
                                                     mechanisms=["softmax", "torus"])))
    before = path.read_text()
    code = main(["bench", "attention", "--shape", "sva", "--device", "ecp5-85f",
                 "--mechanism", "softmax", "--resume", str(path), "--output", str(path),
                 "--build-dir", str(tmp_path)])
    assert code == 2 and "would drop them" in capsys.readouterr().err
    assert path.read_text() == before
    # Asking for every row it holds, the same file is resumed in place.
    code = main(["bench", "attention", "--shape", "sva", "--device", "ecp5-85f",
                 "--mechanism", "softmax", "torus", "--resume", str(path), "--output",
                 str(path), "--build-dir", str(tmp_path)])
    assert code == 0 and len(json.loads(path.read_text())["rows"]) == 2


def test_cli_resume_from_a_file_that_is_not_a_result_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for path, message in ((bad, "holds a JSON list"), (tmp_path / "none.json", "cannot read")):
        code = main(["bench", "attention", "--resume", str(path), "--output",
                     str(tmp_path / "b.json"), "--build-dir", str(tmp_path / "build")])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "build").exists()


def test_cli_only_refused_shapes_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    # Every mechanism of the only shape refused (softmax too, here): nothing runs.
    monkeypatch.setattr(bench, "refusal", lambda case: f"not today ({case.mode})")
    monkeypatch.setattr(bench, "torus_refusal", lambda cases: "nor this")
    out = tmp_path / "bench.json"
    code = main(["bench", "attention", "--shape", "tinystories", "--output", str(out),
                 "--build-dir", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert code == 2 and "no shape to bench" in err and "not today (ode-pairwise)" in err
    assert not out.exists() and not (tmp_path / "build").exists()


@pytest.mark.parametrize("argv", [["--shape", "gpt2"], ["--device", "tpu"], ["--shape"],
                                  ["--seed", "x"]])
def test_cli_argument_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bench", "attention", *argv])
    assert exit.value.code == 2 and "usage" in capsys.readouterr().err


def test_negative_seed_and_unknown_names_refused_before_any_work(tmp_path, capsys):
    code = main(["bench", "attention", "--seed", "-1", "--output", str(tmp_path / "b.json"),
                 "--build-dir", str(tmp_path / "build")])
    assert code == 2 and "--seed must be >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown devices 'tpu'"):
        bench.bench_attention(["sva"], ["up5k", "tpu"], build_root=tmp_path / "build")
    with pytest.raises(ValueError, match="unknown shapes 'gpt2'"):
        bench.bench_attention(["gpt2"], build_root=tmp_path / "build")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# The real thing

@pytest.mark.build
@pytest.mark.slow
def test_bench_sva_on_up5k(tmp_path, capsys):
    # The ODE rows are left out for CI's time (their builds and iterative-CORDIC runs take
    # minutes; measure_rtl's ODE path is tested above with golden-fixed in the simulator's
    # place, and the ODE heads run on Verilator in tests/test_attention_rtl.py).
    mechanisms = ["oscillator-analytic", "softmax", "torus"]
    out = tmp_path / "bench.json"
    code = main(["bench", "attention", "--shape", "sva", "--device", "up5k", "--json",
                 "--mechanism", *mechanisms,
                 "--output", str(out), "--build-dir", str(tmp_path / "build")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and json.loads(out.read_text())["rows"] == report["rows"]
    assert [row["mechanism"] for row in report["rows"]] == mechanisms
    assert report["refused"] == [] and report["not_benched"] == []
    analytic = cycles_per_head(9, 32, True, cordic_arch="iterative")
    softmax = cycles_per_head(9, 32, True, cordic_arch="iterative", mode="softmax")
    for row in report["rows"]:
        assert ROW_FIELDS <= row.keys()
        assert (row["shape"], row["device"], row["board"]) == ("sva", "up5k", "icebreaker")
        assert row["cordic_arch"] == ("pipelined" if row["mechanism"] == "torus"
                                      else "iterative")
        assert row["bit_exact"] is True and row["mismatches"] == 0
        (model,) = row["cycles_model"]
        assert row["cycles_measured"] == [model] and row["cycles"] == model
        if row["mechanism"] == "oscillator-analytic":
            assert model == analytic and row["euler_steps"] is None
            # The UP5K's analytic head is the compact one, and it fits (since 2026-11-25).
            assert row["compact"] is True and row["fits"] is True
        elif row["mechanism"] == "softmax":
            assert model == softmax and row["euler_steps"] is None
            assert row["compact"] is True and row["fits"] is True
        elif row["mechanism"] == "torus":
            assert model == torus_cycles(9, 32) and row["euler_steps"] is None
        else:
            assert row["converged"] is True and row["euler_steps"] > 0 and model > analytic
        assert 0 < row["max_attn_err"] < row["attn_target"]
        assert row["numpy_us"] > 0
        assert row["sim"] in ("verilator", "icarus")
        if row["fits"]:
            assert 0 < row["lut"] <= 5280 and row["dsp"] <= 8 and row["bram"] <= 30
            assert row["fmax_mhz"] > 0 and row["us"] == pytest.approx(model / row["fmax_mhz"])
            assert row["ratio"] == pytest.approx(row["us"] / row["numpy_us"])
        else:   # the head as built needs more than the UP5K has: said, with Yosys's figures
            assert "does not fit icebreaker" in row["does_not_fit"]
            assert any(row["netlist"][key] > row["capacity"][key] for key in row["capacity"])
            assert row["lut"] is None and row["us"] is None and row["ratio"] is None


def test_measure_torus_runs_the_layer():
    # A small pair of layers on Verilator: clocks equal torus_cycles, bit-exact.
    from oscarray.golden.torus import random_case
    from oscarray.golden.torus import validate_case as torus_case
    cases = [torus_case(random_case(5, 3, seed)) for seed in (0, 1)]
    got = bench.measure_torus(cases)
    assert got["cycles_measured"] == [torus_cycles(5, 3)] * 2 and got["bit_exact"]
    assert 0 < got["max_attn_err"] < 2.0 ** -11 and got["sim"] == "verilator"
