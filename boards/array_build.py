"""Build the array engine (`oscarray.hdl.array.ArrayEngine`) for a board and measure it.

`build_array_engine` elaborates an engine without contents (cases arrive through its `load`
port, so one bitstream serves every case up to the capacity) and runs `boards.build.build`
on it; the result is build()'s dict plus the engine's parameters, the SPRAM count (iCE40) and
the clocks per Euler step of each built form at full capacity (`cycles_per_step`).

    python -m oscarray.boards.array_build icebreaker 256 4 matvec,drive iterative
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..golden.array_fixed import ArrayFixedConfig
from ..hdl.array import (ArrayEngine, check_config, check_cordic_arch, check_forms,
                         check_lanes, cycles_per_step)
from .build import build, get_board

__all__ = ["build_array_engine", "TARGET_MHZ"]

#: Default clock constraints, near what this engine reaches (nextpnr reports the achieved
#: Fmax either way; a target far above it only makes placement work longer).
TARGET_MHZ = {"ice40": 50.0, "ecp5": 150.0}

#: nextpnr's router per family (None: its default).
ROUTER = {"ecp5": "router2"}


def _spram_cells(stat_path: Path) -> int:
    """SB_SPRAM256KA cells in the Yosys statistics of a build (0 when there are none)."""
    from .build import parse_yosys_stat
    if not stat_path.is_file():
        return 0
    cells = parse_yosys_stat(stat_path)
    return sum(count for cell, count in cells.items() if "SB_SPRAM256KA" in cell)


def build_array_engine(board: str, n: int, lanes: int, forms=("matvec", "drive"),
                       cordic_arch: str = "pipelined", build_dir="build/boards", progress=None,
                       *, target_mhz: float | None = None, seed: int = 1) -> dict:
    """Build an engine of capacity `n`, `lanes` lanes, `forms`, `cordic_arch` for `board`.

    Returns build()'s dict (lut, ff, dsp, bram, fmax_mhz, seconds, ...) plus board, capacity,
    lanes, forms, cordic_arch, spram (SB_SPRAM256KA cells in the netlist) and
    cycles_per_step ({form: clocks of one Euler step of n oscillators}). Parameter errors
    (ArrayEngineError, TypeError, UnknownBoard) come before any tool runs.
    """
    spec = get_board(board)
    config = ArrayFixedConfig(capacity=n)
    lanes, forms = check_lanes(lanes), check_forms(forms)
    cordic_arch = check_cordic_arch(cordic_arch)
    check_config(config)        # with the checks above: everything the engine refuses
    target = float(target_mhz) if target_mhz else TARGET_MHZ[spec.family]
    name = f"array_c{n}_l{lanes}_{'_'.join(forms)}_{cordic_arch}"
    build_dir = Path(build_dir)
    options = dict(lanes=lanes, forms=forms, cordic_arch=cordic_arch)
    # router2 on ECP5: router1 took over 20 minutes (and was still congested) on 64 lanes.
    router = ROUTER.get(spec.family)
    result = build(lambda: ArrayEngine(config, **options), board, build_dir=build_dir,
                   target_mhz=target, name=name, seed=seed, progress=progress, router=router)
    result.update(
        capacity=n, lanes=lanes, forms=forms, cordic_arch=cordic_arch,
        spram=_spram_cells(build_dir / spec.name / name / f"{name}.stat.json"),
        cycles_per_step={form: cycles_per_step(config, n, form, lanes=lanes,
                                               cordic_arch=cordic_arch) for form in forms})
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    board, n, lanes, forms, arch = argv[:5]
    build_dir = argv[5] if len(argv) > 5 else "build/boards"
    result = build_array_engine(board, int(n), int(lanes), tuple(forms.split(",")), arch,
                                build_dir, progress=lambda message: print(message, flush=True))
    print(json.dumps(result, default=str, indent=1))


if __name__ == "__main__":
    main()
