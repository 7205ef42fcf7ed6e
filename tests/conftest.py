"""Fixtures shared by several test modules."""

import os

import pytest


def _run_folder(tmp_path_factory, name: str):
    """A folder of the whole test run: under pytest-xdist the run's folder, above the
    per-worker ones, so every worker shares it (the runner caches a build per configuration
    and serializes identical builds on a file lock)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / name
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def attention_build_root(tmp_path_factory):
    """One simulator build folder for the attention head, shared by every test module and
    every worker of the run (`_run_folder`): the T <= 16, d_h <= 32 head that
    tests/test_attention_rtl.py runs on Verilator is built once and the CLI tests
    (tests/test_attention_cli.py) reuse it."""
    return _run_folder(tmp_path_factory, "attention-sim")


@pytest.fixture(scope="session")
def board_build_root(tmp_path_factory):
    """One simulator build folder for the board tops (sim/board_sim.py), shared like
    `attention_build_root`: the analytic T <= 16, d_h <= 32 top that tests/test_driver.py
    runs is built once and the demo's test (tests/test_demo.py) reuses it."""
    return _run_folder(tmp_path_factory, "board-sim")


@pytest.fixture(scope="session")
def cordic_build_root(tmp_path_factory):
    """One build folder for the CORDIC, shared like `attention_build_root`: its sim/ holds
    the simulator builds of tests/test_cordic_rtl.py, and `oscarray bench cordic --build-dir`
    (tests/test_cordic_build.py) simulates the same three rotate-mode CORDICs (pipelined,
    split, iterative), so it reuses them instead of compiling each again (about 20 s each)."""
    root = _run_folder(tmp_path_factory, "cordic")
    (root / "sim").mkdir(exist_ok=True)
    return root
