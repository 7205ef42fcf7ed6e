"""Run a case on a board, or on a board top's RTL through a simulated UART; build a board.

The flows behind (the CLI is a thin layer over these):

    oscarray run --port /dev/ttyUSB0 --in case.npz --out result.npz [--baud B] [--json]
    oscarray run --sim --in case.npz --out result.npz [--json]
    oscarray build --board ulx3s-85f|orangecrab-25f|icebreaker --design attention|link [--json]

`run_case` sends an attention case through the host driver (oscarray/driver.py): to a board
on a serial port, or (`sim=True`) to the board top's RTL in cocotb, where the same driver
runs in a bridge thread and every byte crosses the top's UART pins bit by bit
(sim/board_sim.py). The result npz has the keys of `oscarray attention --engine rtl`'s
(attn, out, x_star, steps, the integers, scales, cycles, engine), and the summary counts the
integers that differ from golden-fixed's (`mismatches`: 0 when bit-exact).

`build_board` builds a board top (boards/top.py) and returns the build's figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["build_board", "run_case", "selftest", "sim_top_options"]


def _say(progress, message: str) -> None:
    if progress:
        progress(message)


def sim_top_options(case, board: str | None = None, max_tokens=None, max_d_h=None,
                    modes=None) -> dict:
    """The simulated top for `case`: `board`'s head (its TopSpec: capacity and modes), or
    else the smallest head that holds it (flows.py `attention_rtl_capacity`: powers of two,
    T >= 16, d_h >= 32), with `modes` if given, else the ODE modes when the case needs
    them (one top for several cases: give the modes of them all). `modes` other than the
    board's head's are a ValueError (not silently the board's)."""
    from .boards.top import top_spec
    from .flows import attention_rtl_capacity
    from .hdl.attention import OSCILLATOR_MODES, check_modes
    if board is not None:
        spec = top_spec(board)
        if not spec.fits:
            raise ValueError(f"--board {board}: {spec.refusal}")
        if modes is not None and check_modes(modes) != check_modes(spec.modes):
            raise ValueError(f"--board {board}: its head has the modes "
                             f"{', '.join(check_modes(spec.modes))}, not "
                             f"{', '.join(check_modes(modes))} (a board's head is its top's)")
        return {"max_tokens": max_tokens or spec.max_tokens,
                "max_d_h": max_d_h or spec.max_d_h, "modes": tuple(spec.modes)}
    tokens, d_h = attention_rtl_capacity(case.tokens, case.d_h, max_tokens, max_d_h)
    if modes is None:
        modes = ("analytic",) if case.mode == "analytic" else tuple(OSCILLATOR_MODES)
    return {"max_tokens": tokens, "max_d_h": d_h, "modes": modes}


def _head_case(case, head: dict):
    """`case` as the head `head` (its modes) runs it (driver.head_case)."""
    from .driver import head_case
    return head_case(case, head["modes"])


def _write_result(out: Path, result: dict, engine: str, mechanism: str | None = None) -> None:
    """result.npz as `oscarray attention` writes it (flows.py's keys and scales JSON); a
    softmax result (`mechanism`) as `oscarray softmax` does, with its "mechanism"."""
    from .flows import ATTENTION_RESULT_KEYS, _json_default
    from .golden.npz import write_npz
    arrays = {key: np.asarray(result[key]) for key in ATTENTION_RESULT_KEYS if key in result}
    arrays["scales"] = np.asarray(json.dumps(result["scales"], default=_json_default))
    arrays["cycles"] = np.asarray(result["cycles"], np.int64)
    arrays["engine"] = np.asarray(engine)
    if mechanism is not None:
        arrays["mechanism"] = np.asarray(mechanism)
    write_npz(out, arrays)


def run_case(case_path, out=None, *, port: str | None = None, sim: bool = False,
             baud: int = 115_200, progress=None, board: str | None = None,
             simulator: str | None = None, build_root=None, max_tokens=None, max_d_h=None,
             timeout: float = 2.0, divisor: int = 4, modes=None) -> dict:
    """Run the attention case at `case_path` on a board (`port`, a serial device at `baud`)
    or on a board top's RTL (`sim`: cocotb, `simulator` "verilator" or "icarus", the top of
    `board` or else the smallest that holds the case, with `modes` if given; UART at
    `divisor` clocks a bit), and write result.npz to `out`.

    Everything is checked before any work (exactly one of port and sim, the output path,
    the case, the head's refusals in simulation; on a board, after its PING: the head's
    capacity and modes). Returns a summary: engine ("board" or "board-sim"), case, shape,
    mode, transport, head (the engine on the device: T, d_h capacity, modes), cycles (per
    head, from the engine's counter), cycles_expected (per head: `cycles_per_head`, or
    `ode_cycles` of the engine runs the result reports),
    mismatches (integers differing from golden-fixed; 0: bit-exact), not_converged,
    frames, retries, answers, bytes_sent and bytes_received (sim), sim_s and sim_build_s
    (sim: the simulation, and compiling the top: near zero when cached), elapsed_s, out.
    """
    from .boards.top import spec_for_head, top_spec
    from .flows import _check_output_path, attention_rtl_mismatches
    from .golden.attention import load_case
    from .hdl.attention import check_case, cycles_per_head, ode_cycles, ode_engine_runs

    if (port is None) == (not sim):
        raise ValueError("give exactly one of --port (a board) and --sim (the RTL in cocotb)")
    out = _check_output_path("--out", out)
    case = load_case(case_path)
    start = time.perf_counter()
    summary = {"case": str(case_path), "shape": [case.heads, case.tokens, case.d_h, case.d_osc],
               "mode": case.mode}
    if sim:
        from .sim.board_sim import run_board_sim
        options = sim_top_options(case, board, max_tokens, max_d_h, modes)
        case = _head_case(case, options)
        summary["mode"] = case.mode
        # the board's top as it is built (its CORDICs and output FIFO); else the defaults
        built = ({"cordic_arch": top_spec(board).cordic_arch,
                  "out_fifo": top_spec(board).out_fifo} if board is not None else {})
        arch = built.get("cordic_arch", "pipelined")
        check_case(case, **options)                 # the head's refusals, before any work
        _say(progress, f"board-sim: the top of a head T <= {options['max_tokens']}, d_h <= "
                       f"{options['max_d_h']} ({', '.join(options['modes'])}) in cocotb, the "
                       f"driver through its UART pins at {divisor} clocks a bit (the first "
                       f"run of a top compiles it, a few minutes)")
        run = run_board_sim("case", case_path=case_path, divisor=divisor, sim=simulator,
                            build_root=build_root, top_options={**options, **built})
        result, engine = run["result"], "board-sim"
        summary.update(transport=f"sim:{run['sim']} (UART {divisor} clocks/bit)",
                       bytes_sent=run["bytes_sent"], bytes_received=run["bytes_received"],
                       framing_errors=run["framing_errors"], **run["stats"],
                       head=run["identity"], sim_s=run["run_s"], sim_build_s=run["build_s"])
    else:
        from .driver import Driver, SerialTransport
        _say(progress, f"board: {port} at {baud} baud")
        transport = SerialTransport(port, baud, timeout=timeout)
        try:
            driver = Driver(transport, progress=progress)
            driver.ping()
            head = driver.attention_head()
            _say(progress, f"board: a head of T <= {head['max_tokens']}, d_h <= "
                           f"{head['max_d_h']} ({', '.join(head['modes'])})")
            case = _head_case(case, head)
            summary["mode"] = case.mode
            spec = spec_for_head(head)
            arch = spec.cordic_arch if spec is not None else "pipelined"
            result = driver.run_case(case)
        finally:
            transport.close()
        engine = "board"
        summary.update(transport=f"serial:{port}@{baud}", head=driver.identity,
                       **driver.stats)
    elapsed = time.perf_counter() - start
    if case.mode == "softmax":
        from .softmax_flow import softmax_rtl_mismatches
        mismatches = softmax_rtl_mismatches(case, result)
    else:
        mismatches = attention_rtl_mismatches(case, result)
    if out is not None:
        _write_result(out, result, engine, "softmax" if case.mode == "softmax" else None)
    cycles = [int(c) for c in result["cycles"]]
    if case.mode in ("analytic", "softmax"):
        expected = [cycles_per_head(case.tokens, case.d_h, case.causal, cordic_arch=arch,
                                    mode=case.mode)] * case.heads
    else:                   # the ODE modes: from the Euler steps the engine reported
        expected = [ode_cycles(case.tokens, case.d_h, case.causal, case.mode,
                               ode_engine_runs(case, result, head), warm=case.init == "warm")
                    for head in range(case.heads)]
    steps = np.asarray(result.get("steps", 0))     # none in softmax: nothing to converge
    summary.update(engine=engine, cycles=cycles, cycles_expected=expected,
                   mismatches=mismatches, not_converged=int(np.count_nonzero(steps < 0)),
                   elapsed_s=round(elapsed, 2), out=None if out is None else str(out))
    _say(progress, f"{engine}: {case.heads} head(s), cycles {cycles}, "
                   f"{'bit-exact with golden-fixed' if mismatches == 0 else f'{mismatches} integers differ from golden-fixed'}")
    return summary


def selftest(*, port: str | None = None, sim: bool = False, baud: int = 115_200,
             words: int = 64, progress=None, simulator: str | None = None, build_root=None,
             timeout: float = 2.0) -> dict:
    """The link's loopback self-test (driver.py `link_selftest`) on a `--design link` board
    (`port`) or its top in simulation (`sim`). Returns its summary (mismatches 0: pass)."""
    if (port is None) == (not sim):
        raise ValueError("give exactly one of --port (a board) and --sim (the RTL in cocotb)")
    if sim:
        from .sim.board_sim import run_board_sim
        _say(progress, "board-sim: the link top with the loopback engine")
        run = run_board_sim("selftest", design="link", sim=simulator, build_root=build_root,
                            words=words)
        return {**run["result"], "transport": f"sim:{run['sim']}"}
    from .driver import Driver, SerialTransport, link_selftest
    transport = SerialTransport(port, baud, timeout=timeout)
    try:
        return {**link_selftest(Driver(transport), words=words),
                "transport": f"serial:{port}@{baud}"}
    finally:
        transport.close()


def build_board(board: str, design: str = "attention", progress=None,
                build_root="build/boards", **options) -> dict:
    """Build the top of `design` ("attention": the head sized for the board; "link": the
    link with its loopback engine) for `board` (boards/top.py `build_top`).

    Returns build()'s JSON fields (board, device, bitstream, lut, ff, dsp, bram, fmax_mhz,
    target_mhz = the design's clock, timing_met, core_lut, core_ff, netlist, seconds) and
    the top's (design, clk_mhz, baud, divisor, pll, engine_id, max_payload; the head's
    max_tokens, max_d_h, modes, cordic_arch). Refusals (an unknown board or design) come
    before any tool runs."""
    from .boards.top import build_top
    result = build_top(board, design, build_dir=Path(build_root), progress=progress,
                       **options)
    result["bitstream"] = str(result["bitstream"])
    return result
