"""Bitstreams of the CORDIC with the YoWASP tools, and the benchmark command (slow: real builds)."""

import json
from pathlib import Path

import pytest

from oscarray.cli import main

FIELDS = {"board", "device", "bitstream", "lut", "ff", "dsp", "bram", "fmax_mhz",
          "target_mhz", "timing_met"}


@pytest.mark.build
@pytest.mark.slow
def test_build_icebreaker_cli_json(tmp_path, capsys):
    code = main(["build", "--design", "cordic", "--board", "icebreaker", "--json",
                 "--build-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and FIELDS <= report.keys()
    assert report["device"] == "iCE40UP5K"
    assert Path(report["bitstream"]).stat().st_size > 100_000     # a UP5K image is ~104 kB
    assert 1000 < report["lut"] <= 5280 and report["ff"] > 1000
    assert report["fmax_mhz"] > 20
    assert report["timing_met"] == (report["fmax_mhz"] >= report["target_mhz"])


@pytest.mark.build
@pytest.mark.slow
def test_bench_cordic_writes_table_and_json(tmp_path, capsys, monkeypatch,
                                           cordic_build_root):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    # The simulator builds are tests/test_cordic_rtl.py's (the same rotate-mode CORDICs):
    # shared, not compiled again; the bitstreams are this test's own.
    code = main(["bench", "cordic", "--boards", "orangecrab-25f", "--vectors", "300",
                 "--output", str(out), "--build-dir", str(cordic_build_root)])
    printed = capsys.readouterr().out
    assert code == 0 and "written:" in printed and "Fmax" in printed
    result = json.loads(out.read_text())
    rows = {row["arch"]: row for row in result["rows"]}
    assert set(rows) == {"pipelined", "pipelined (split)", "iterative"}
    for row in rows.values():
        assert row["mismatches"] == 0 and row["max_err_lsb"] <= 2
        assert row["lut"] > 0 and row["fmax_mhz"] > 0
    # Pipelined: one result per clock after its latency; iterative: one per schedule pass.
    assert rows["pipelined"]["results_per_clock"] > 0.9
    assert rows["pipelined (split)"]["results_per_clock"] > 0.9
    assert rows["pipelined (split)"]["latency_cycles"] > rows["pipelined"]["latency_cycles"]
    assert rows["iterative"]["results_per_clock"] < 0.1
    assert rows["iterative"]["core_lut"] < rows["pipelined"]["core_lut"]


def test_build_refuses_unknown_board_before_work(tmp_path, capsys):
    from oscarray.flows import build_design
    from oscarray.boards.build import UnknownBoard
    with pytest.raises(UnknownBoard):
        build_design("cordic", "de10-nano", build_root=tmp_path)
    assert not any(tmp_path.iterdir())
