"""The host link in cocotb on Verilator: random and mutated frames at byte level through
HostLink and the fake engine (sim/link.py), every answer compared with golden LinkDevice.

The counts per category are printed (pytest -s) and checked: no hang, every bad frame
answered with an error of its category, the engine's memory (replayed through READ and
compared with the model's every 500 frames) untouched by rejected frames, and a valid command
after every bad frame answered OK.
"""

import json
import os
import shutil

import pytest

from oscarray.golden.link import Status
from oscarray.sim.link import BAD, EXPECTED, run_link_fuzz


@pytest.fixture(scope="module")
def link_build_root(tmp_path_factory):
    """One build of the harness for this module (and for every xdist worker of the run)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "link-sim"
    root.mkdir(exist_ok=True)
    return root


def _check(result, frames):
    print(json.dumps({k: result[k] for k in ("frames", "answers", "steps", "bytes_sent",
                                               "bytes_received", "clocks", "memory_checks",
                                               "run_s")}, indent=1))
    assert result["problems"] == []
    assert result["hang_step"] == -1
    assert result["bytes_received"] == result["bytes_expected"]
    assert sum(result["frames"].values()) >= frames
    answers = result["answers"]
    for category in BAD:
        assert result["frames"].get(category, 0) > 0, category
        assert set(answers[category]) <= {Status(s).name for s in EXPECTED[category]}
    # every bad frame is followed by a valid command, which the link answered OK
    assert answers["valid_after_bad"] == {"OK": result["frames"]["valid_after_bad"]}
    assert result["memory_checks"] >= frames // 500
    assert answers["watchdog"].get("WATCHDOG", 0) > 0


def test_link_fuzz_1k_frames(link_build_root):
    """1,000 frames (this test also compiles the harness for the next one)."""
    frames = 1_000
    result = run_link_fuzz(frames, seed=4, build_root=link_build_root)
    _check(result, frames)


def test_link_fuzz_10k_frames(link_build_root):
    frames = 10_000
    result = run_link_fuzz(frames, seed=0, build_root=link_build_root)
    _check(result, frames)


@pytest.mark.slow
def test_link_fuzz_10k_bad_frames(link_build_root):
    """30,000 frames: more than 10,000 of them bad (mutated, oversize, unknown, BUSY)."""
    frames = 30_000
    result = run_link_fuzz(frames, seed=1, build_root=link_build_root)
    _check(result, frames)
    bad = sum(result["frames"][c] for c in BAD) + result["frames"]["sync_flip"]
    assert bad >= 10_000, bad


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")
def test_link_fuzz_icarus(link_build_root):
    result = run_link_fuzz(1_000, seed=2, sim="icarus", build_root=link_build_root)
    _check(result, 1_000)
