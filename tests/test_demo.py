"""`oscarray demo`: its refusals before any work, the subject-verb example end to end (the
analytic mode, no bitstream: golden-float, golden-fixed, the RTL through the host driver on
the board top's simulated UART, the table, the files), the iCEBreaker stage's fall-back to
the link top, and (slow) the whole demo with the bitstream."""

import json
from pathlib import Path

import numpy as np
import pytest

from oscarray.cli import main
from oscarray.hdl.attention import cycles_per_head


@pytest.mark.parametrize("argv, message", [
    (["--mode", "ode-sphere"], "--mode 'ode-sphere'"),
    (["--mode", "analytic", "analytic"], "a mode given twice"),
    (["--seed", "-1"], "--seed must be >= 0"),
])
def test_demo_refuses_bad_arguments_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    assert main(["demo", "--skip-build", "--out-dir", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_refuses_an_out_dir_that_is_a_file(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("")
    assert main(["demo", "--skip-build", "--out-dir", str(file / "demo")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--example", "gpt"])


def test_demo_sva_end_to_end(tmp_path, capsys, board_build_root):
    """The analytic subject-verb case (1 head, T 9, d_h 32) through every engine; the RTL
    bit-exact with golden-fixed, through the driver; the table, JSON, npz and plot."""
    out = tmp_path / "demo"
    code = main(["demo", "--mode", "analytic", "--skip-build", "--out-dir", str(out),
                 "--build-dir", str(board_build_root)])
    captured = capsys.readouterr()
    print(captured.out)
    assert code == 0
    assert "[1/5] example case 'sva'" in captured.err and "[5/5]" in captured.err
    assert "[6/" not in captured.err                      # --skip-build: no build stage
    for name in ("sva_analytic.npz", "sva_analytic_golden-float.npz",
                 "sva_analytic_golden-fixed.npz", "sva_analytic_rtl.npz", "table.txt",
                 "summary.json", "plots/sva_analytic_rtl.png"):
        assert (out / name).is_file(), name
    assert (out / "plots/sva_analytic_rtl.png").stat().st_size > 10_000

    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["failures"] == [] and summary["build"] is None
    rows = {row["engine"]: row for row in summary["rows"]}
    assert list(rows) == ["golden-float", "golden-fixed", "rtl"]
    rtl, fixed, flt = rows["rtl"], rows["golden-fixed"], rows["golden-float"]
    assert rtl["mismatches"] == 0 and rtl["retries"] == 0 and rtl["framing_errors"] == 0
    assert rtl["cycles"] == rtl["cycles_expected"] == [cycles_per_head(9, 32, True)]
    assert flt["max_attn_err"] == 0 and flt["attn_budget"] is None
    # bit-exact: the same attention, so the same errors; both within the derived bound
    assert rtl["max_attn_err"] == fixed["max_attn_err"] > 0
    assert rtl["max_out_err_rel"] == fixed["max_out_err_rel"] > 0
    assert rtl["within_budget"] and fixed["within_budget"] and rtl["meets_targets"]
    assert 0 < rtl["max_attn_err"] <= rtl["attn_budget"] <= summary["attn_target"]

    saved_rtl = np.load(out / "sva_analytic_rtl.npz")
    saved_fixed = np.load(out / "sva_analytic_golden-fixed.npz")
    assert str(saved_rtl["engine"]) == "board-sim"
    assert saved_rtl["attn"].shape == (1, 9, 9)
    assert np.array_equal(saved_rtl["attn_int"], saved_fixed["attn_int"])
    assert np.array_equal(saved_rtl["out_int"], saved_fixed["out_int"])

    table = (out / "table.txt").read_text()
    assert table.strip() == summary["table"].strip()
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and "attn bound" in lines[0]
    assert "bit-exact" in lines[4] and "reference" in lines[3]
    assert f"{cycles_per_head(9, 32, True)}" in lines[4]
    assert table in captured.out
    assert "skipped (--skip-build)" in captured.out
    assert captured.out.rstrip().endswith("PASS")


def test_icebreaker_stage_falls_back_to_the_link_top(monkeypatch, tmp_path):
    """The attention top refused (DesignDoesNotFit): said in the progress, the link top
    built instead, the refusal kept; a fitting attention top is built and reported as is."""
    import oscarray.run_flow as run_flow
    from oscarray.boards.build import DesignDoesNotFit
    from oscarray.demo import build_icebreaker

    calls, messages = [], []

    def fake_build(board, design, progress=None, build_root=None, **options):
        calls.append((board, design, build_root))
        if design == "attention" and refuse:
            raise DesignDoesNotFit(board, "SB_MAC16 DSPs", 29, 8, None)
        return {"board": board, "design": design, "lut": 1349, "netlist": {}}

    monkeypatch.setattr(run_flow, "build_board", fake_build)
    refuse = True
    built = build_icebreaker(tmp_path, messages.append)
    assert calls == [("icebreaker", "attention", tmp_path), ("icebreaker", "link", tmp_path)]
    assert built["design"] == "link" and built["requested"] == "attention"
    assert "needs 29 SB_MAC16 DSPs, the device has 8" in built["refusal"]
    assert any("does not fit the iCEBreaker" in m for m in messages)

    calls.clear()
    refuse = False
    built = build_icebreaker(tmp_path, messages.append)
    assert calls == [("icebreaker", "attention", tmp_path)]
    assert built["design"] == "attention" and built["refusal"] is None


@pytest.mark.slow
@pytest.mark.build
def test_demo_whole(tmp_path, capsys, board_build_root):
    """The README's first command: both modes (the ODE top's own simulator build, minutes)
    and the iCEBreaker bitstream."""
    out = tmp_path / "demo"
    code = main(["demo", "--out-dir", str(out), "--build-dir", str(board_build_root)])
    captured = capsys.readouterr()
    print(captured.out)
    assert code == 0 and "[6/6] iCEBreaker bitstream" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["modes"] == ["analytic", "ode-drive"]
    drive = [row for row in summary["rows"] if row["mode"] == "ode-drive"]
    assert [row["engine"] for row in drive] == ["golden-float", "golden-fixed", "rtl"]
    assert drive[2]["mismatches"] == 0 and drive[2]["steps_max"] == drive[1]["steps_max"] > 0
    assert (out / "plots/sva_ode-drive_rtl_settling.png").is_file()
    # The iCEBreaker's attention top (softmax-only head T 16, d_h 32, iterative CORDIC,
    # 12 MHz board clock) fits the UP5K and meets timing: the suite's one build of it.
    built = summary["build"]
    assert built["board"] == "icebreaker" and built["design"] == "attention"
    assert built["refusal"] is None and built["timing_met"], built
    assert built["lut"] <= 5280 and built["dsp"] <= 8 and built["bram"] <= 30
    assert built["target_mhz"] == 12.0 and built["pll"] is None
    assert built["modes"] == ["softmax"] and built["max_tokens"] == 16
    assert Path(built["bitstream"]).is_file()
    assert f"{built['design']} top" in captured.out and f"{built['lut']} LC" in captured.out
