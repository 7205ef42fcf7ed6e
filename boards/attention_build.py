"""Build the attention head (`oscarray.hdl.attention.AttentionHead`) for a board and measure it.

`build_attention_head` elaborates a head without contents (a case arrives through its `load`
port, so one bitstream serves every case up to its capacity) and runs `boards.build.build` on
it; the result is build()'s dict plus the head's parameters. `netlist_usage` reads what Yosys
made of a build (also one that did not fit, where nextpnr gives no figures).

    python -m oscarray.boards.attention_build ulx3s-85f 9 32 pipelined [build_dir] [ode]
        [lanes=L] [compact]

(`ode`: the head with every mode of hdl/attention.MODES, its array engine included;
`lanes=L`: L MAC lanes, `AttentionHead`'s mac_lanes; `compact`: `AttentionHead`'s compact,
the analytic head for the iCE40UP5K.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..golden.attention_fixed import DEFAULT_CONFIG
from ..hdl.attention import MODES, AttentionHead, check_modes
from .build import _netlist_usage, build, get_board, parse_yosys_stat

__all__ = ["build_attention_head", "head_build_name", "build_torus_layer", "torus_build_name",
           "netlist_usage", "TARGET_MHZ", "ROUTER"]

#: Default clock constraints, near what the head reaches (nextpnr reports the achieved Fmax
#: either way; a target far above it only makes placement work longer). Measured 2026-11-23:
#: 33 MHz on ECP5-85F at (T, d_h) = (9, 32) with a 100 MHz target, the critical path in the
#: weight exponent's eps(e) (`WeightExponent`). On the UP5K only the softmax-only head fits
#: (13-14 MHz before ec606ec, 17 MHz since; boards/top.py).
TARGET_MHZ = {"ice40": 20.0, "ecp5": 40.0}

#: nextpnr's router per family (None: its default), as for the array engine.
ROUTER = {"ecp5": "router2"}


def head_build_name(max_tokens: int, max_d_h: int, cordic_arch: str,
                    modes=("analytic",), d_osc: int = 2, mac_lanes: int = 1,
                    compact: bool = False) -> str:
    """The build's name (and folder under build_dir/board/); the modes besides "analytic"
    are named (`_drive`, `_pairwise`, `_softmax`), `_only` marks a head without it,
    `_o<d_osc>` a head on the sphere (d_osc > 2), `_l<L>` one of L MAC lanes and
    `_compact` a compact head."""
    modes = check_modes(modes)
    named = [mode.removeprefix("ode-") for mode in modes if mode != "analytic"]
    return (f"attention_t{max_tokens}_d{max_d_h}_{cordic_arch}"
            + "".join(f"_{m}" for m in named) + ("" if "analytic" in modes else "_only")
            + ("" if d_osc == 2 else f"_o{d_osc}")
            + ("" if mac_lanes == 1 else f"_l{mac_lanes}") + ("_compact" if compact else ""))


def netlist_usage(board: str, build_dir, name: str) -> dict | None:
    """Yosys's pre-placement estimate {lut, ff, dsp, bram} of the build `name` for `board` in
    `build_dir` (lower bounds; what `build` checks the device against before nextpnr), or
    None when synthesis wrote no statistics."""
    spec = get_board(board)
    stat = Path(build_dir) / spec.name / name / f"{name}.stat.json"
    if not stat.is_file():
        return None
    return _netlist_usage(spec.family, parse_yosys_stat(stat))


def build_attention_head(board: str, max_tokens: int, max_d_h: int,
                         cordic_arch: str = "pipelined", build_dir="build/boards",
                         progress=None, *, target_mhz: float | None = None,
                         seed: int = 1, modes=("analytic",), d_osc: int = 2,
                         mac_lanes: int = 1, compact: bool = False) -> dict:
    """Build a head of capacity (max_tokens, max_d_h) with `cordic_arch` CORDICs, the
    `modes` (hdl/attention.MODES; "analytic" always), `d_osc`, `mac_lanes` and `compact`
    for `board`.

    Returns build()'s dict (lut, ff, dsp, bram, fmax_mhz, seconds, ...) plus max_tokens,
    max_d_h, cordic_arch, modes, d_osc, mac_lanes, compact and name. Parameter errors
    (AttentionHeadError, TypeError, UnknownBoard) come before any tool runs; a head too big
    for the device raises `DesignDoesNotFit` (then `netlist_usage(board, build_dir, name)` gives Yosys's figures).
    """
    spec = get_board(board)
    # The head refuses a capacity or an architecture it cannot build here, before any tool.
    head = AttentionHead(DEFAULT_CONFIG, max_tokens=max_tokens, max_d_h=max_d_h,
                         cordic_arch=cordic_arch, modes=modes, d_osc=d_osc,
                         mac_lanes=mac_lanes, compact=compact)
    modes = check_modes(modes)
    target = float(target_mhz) if target_mhz else TARGET_MHZ[spec.family]
    name = head_build_name(max_tokens, max_d_h, cordic_arch, modes, d_osc, mac_lanes,
                           head.compact)
    result = build(lambda: head, board, build_dir=Path(build_dir), target_mhz=target,
                   name=name, seed=seed, progress=progress, router=ROUTER.get(spec.family))
    result.update(max_tokens=max_tokens, max_d_h=max_d_h, cordic_arch=cordic_arch,
                  modes=list(modes), d_osc=d_osc, mac_lanes=mac_lanes, compact=head.compact,
                  name=name)
    return result


def torus_build_name(max_tokens: int, max_d: int, cordic_arch: str) -> str:
    return f"torus_t{max_tokens}_d{max_d}_{cordic_arch}"


def build_torus_layer(board: str, max_tokens: int, max_d: int, cordic_arch: str = "pipelined",
                      build_dir="build/boards", progress=None, *,
                      target_mhz: float | None = None, seed: int = 1) -> dict:
    """Build paper B's torus layer (`oscarray.hdl.torus.TorusLayer`) of capacity
    (max_tokens, max_d) for `board`, like `build_attention_head` (the same targets, router and
    refusals): build()'s dict plus max_tokens, max_d, cordic_arch and name."""
    from ..hdl.torus import TorusLayer
    spec = get_board(board)
    layer = TorusLayer(max_tokens=max_tokens, max_d=max_d, cordic_arch=cordic_arch)
    target = float(target_mhz) if target_mhz else TARGET_MHZ[spec.family]
    name = torus_build_name(max_tokens, max_d, cordic_arch)
    result = build(lambda: layer, board, build_dir=Path(build_dir), target_mhz=target,
                   name=name, seed=seed, progress=progress, router=ROUTER.get(spec.family))
    result.update(max_tokens=max_tokens, max_d=max_d, cordic_arch=cordic_arch, name=name)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    board, tokens, d_h, arch = argv[:4]
    flags = [a for a in argv[4:] if a in ("ode", "compact") or a.startswith("lanes=")]
    folders = [a for a in argv[4:] if a not in flags]
    build_dir = folders[0] if folders else "build/boards"
    modes = MODES if "ode" in flags else ("analytic",)
    lanes = [int(a.removeprefix("lanes=")) for a in flags if a.startswith("lanes=")]
    result = build_attention_head(board, int(tokens), int(d_h), arch, build_dir,
                                  progress=lambda message: print(message, flush=True),
                                  modes=modes, mac_lanes=lanes[-1] if lanes else 1,
                                  compact="compact" in flags)
    print(json.dumps(result, default=str, indent=1))


if __name__ == "__main__":
    main()
