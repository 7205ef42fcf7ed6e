"""The CORDIC RTL in cocotb on Verilator (and Icarus when installed) against the golden model.

Every mode and architecture runs the edge cases plus random vectors with random input gaps
and output backpressure. The issue's 100,000-vector runs are marked slow; CI runs them for
the circular modes on the pipelined architecture (seconds once the model is compiled; the
iterative one, 20 clocks a result through per-clock Python stream drivers, takes minutes:
`oscarray sim cordic --arch iterative --vectors 100000` runs it, and the issue allows CI
fewer).
"""

import json
import shutil

import numpy as np
import pytest

from oscarray.cli import main
from oscarray.golden.cordic import MODES, CordicConfig, error_budget
from oscarray.hdl.cordic import ARCHITECTURES
from oscarray.sim.cordic import run_cordic_rtl
from oscarray.sim.cordic_vectors import cordic_vectors


@pytest.fixture(scope="module")
def build_root(cordic_build_root):
    # The run's one CORDIC simulator folder (tests/conftest.py): every worker and the
    # bench's test (tests/test_cordic_build.py) reuse these builds.
    return cordic_build_root / "sim"


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("mode", list(MODES))
def test_rtl_bit_exact_on_verilator(mode, arch, build_root):
    config = CordicConfig(mode)
    run = run_cordic_rtl(config, arch, *cordic_vectors(config, 5000, seed=11),
                         build_root=build_root, valid_prob=0.7, ready_prob=0.7, seed=5)
    assert run.mismatches == 0, run.first_mismatches
    assert run.stats["max_err_lsb"] <= error_budget(config)["total_lsb"]


@pytest.mark.parametrize("mode", ["rotate", "vector"])
def test_rtl_split_stages_bit_exact_on_verilator(mode, build_root):
    config = CordicConfig(mode)
    run = run_cordic_rtl(config, "pipelined", *cordic_vectors(config, 5000, seed=14),
                         build_root=build_root, valid_prob=0.7, ready_prob=0.7, seed=7,
                         split_stages=True)
    assert run.mismatches == 0, run.first_mismatches
    assert run.stats["max_err_lsb"] <= error_budget(config)["total_lsb"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["pipelined"])
@pytest.mark.parametrize("mode", ["rotate", "vector"])
def test_rtl_bit_exact_on_100k_vectors(mode, arch, build_root):
    config = CordicConfig(mode)
    run = run_cordic_rtl(config, arch, *cordic_vectors(config, 100_000, seed=12),
                         build_root=build_root, valid_prob=0.9, ready_prob=0.9, seed=6)
    assert run.x_in.size >= 100_000
    assert run.mismatches == 0, run.first_mismatches
    assert run.stats["max_err_lsb"] <= 2.0


@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="Icarus Verilog is not installed (apt-get install iverilog)")
def test_rtl_bit_exact_on_icarus(build_root):
    config = CordicConfig("rotate")
    run = run_cordic_rtl(config, "pipelined", *cordic_vectors(config, 300, seed=13),
                         sim="icarus", build_root=build_root, valid_prob=0.7, ready_prob=0.7)
    assert run.sim == "icarus" and run.mismatches == 0


def test_cli_sim_json_and_vectors_file(tmp_path, capsys, monkeypatch, build_root):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "vectors.npz"
    # --build-dir: the vector-mode pipelined CORDIC of test_rtl_bit_exact_on_verilator,
    # not compiled again.
    code = main(["sim", "cordic", "--mode", "vector", "--arch", "pipelined", "--vectors",
                 "400", "--seed", "3", "--json", "--out", str(out),
                 "--build-dir", str(build_root)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["mismatches"] == 0 and report["vectors"] >= 400
    assert {"vectors", "mismatches", "max_err_lsb", "rms_err_lsb"} <= report.keys()
    saved = np.load(out)
    assert {"x_in", "y_in", "z_in", "x_out", "y_out", "z_out", "data_frac_bits",
            "phase_bits"} <= set(saved.files)
    assert int(saved["data_frac_bits"]) == 16 and int(saved["phase_bits"]) == 16
    assert saved["x_out"].dtype.kind == "i" and saved["x_out"].size == report["vectors"]
    # The saved magnitudes are |(x, y)| in the stated format.
    large = np.hypot(saved["x_in"], saved["y_in"]) < 2 ** 17 - 2
    np.testing.assert_allclose(saved["x_out"][large],
                               np.hypot(saved["x_in"], saved["y_in"])[large], atol=2)


def test_cli_exits_nonzero_on_mismatch(tmp_path, capsys, monkeypatch, build_root):
    # A golden model that disagrees by one LSB must make the command fail.
    import oscarray.sim.cordic as cordic_sim
    real = cordic_sim.cordic_fixed
    monkeypatch.setattr(cordic_sim, "cordic_fixed",
                        lambda config, *v: tuple(o + 1 for o in real(config, *v)))
    monkeypatch.chdir(tmp_path)
    # The default (rotate, pipelined) CORDIC's build is the module's, shared.
    code = main(["sim", "cordic", "--vectors", "50", "--json", "--build-dir", str(build_root)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["mismatches"] == report["vectors"]


def test_cli_waves(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["sim", "cordic", "--arch", "iterative", "--vectors", "20", "--waves",
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["waves"] and (tmp_path / report["waves"]).exists() \
        or __import__("pathlib").Path(report["waves"]).exists()


@pytest.mark.parametrize("argv,message", [
    (["sim", "cordic", "--iterations", "9"], "cannot reach"),
    (["sim", "cordic", "--width", "64"], "data_width"),
    (["sim", "cordic", "--vectors", "-1"], "--vectors"),
    (["sim", "cordic", "--ready-prob", "0"], "--ready-prob"),
    (["sim", "cordic", "--out", "/nonexistent/dir/v.npz"], "does not exist"),
])
def test_cli_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["sim", "cordic", "--mode", "spin"],
                                  ["build", "--board", "de10-nano"]])
def test_cli_unknown_choices(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
