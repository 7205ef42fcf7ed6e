"""The Kuramoto array engine: Euler steps of a coupled-oscillator array in hardware.

The arithmetic is specified bit for bit by `oscarray.golden.array_fixed` (read its module
docstring for the formats); this module builds the three forms (pairwise, matvec, drive; the
form is a run register, so one build serves every case; `forms` may leave some out) around
one CORDIC for the phases and rotations (`oscarray.hdl.cordic`; pipelined, or iterative for
area: `cordic_arch`), plus `lanes` (P, 1..MAX_LANES) coupling lanes: each lane has its own
MAC pair (`MacLane`), its own bank of k and (pairwise only) its own CORDIC.

One Euler step, as the sequencer runs it:

    phases   for j < n: theta_j = R(acc_j, A - P) mod 2**P into the CORDIC (x = 2**F, y = 0);
             the results (cos_j, sin_j) go to the column buffer, -theta_j to the theta buffer,
             and both into the order sums, which leave on the `order` stream. This pass also
             runs once after the last step (the final order sums), so `order` carries
             steps_taken + 1 items, as `run_fixed`.
    coupling the rows in G = ceil(n / P) groups of P: in group g lane l works on row
             i = g P + l. Every clock the walk broadcasts one column j to all lanes (one read
             of the column buffer), and each lane reads k_ij from its own bank: row i lives in
             bank i mod P at word (i div P) n + j, so all banks read one address, a counter
             (`k_bank_word`). A step issues G n clocks (`issue_clocks`, = n**2 / P when P
             divides n). Nothing is summed across lanes, so lanes cost no adder tree and no
             per-lane copies of the columns.
             matvec: lane l accumulates C_i = sum_j k_ij cos_j and Z_i = sum_j k_ij sin_j.
             pairwise: lane l holds -theta_i (taken from the -theta_j passing by, one group
             ahead), its CORDIC takes (theta_j - theta_i) mod 2**P, and the lane accumulates
             S_i = sum_j k_ij sin_ij (on the exact antipode sin_ij reads +1 for j > i and -1 for
             j < i); k is read L + 1 clocks later than in matvec, with the CORDIC's result.
             At a group's last column the lanes load their sums into the hand-over chain, which
             gives one row per clock (rows in order) while the next group walks, each row
             shifted by t + r_i (r_i from the row_shift memory, read two rows ahead): matvec
             rotates (R(C_i, t + r_i), R(Z_i, t + r_i)) by -theta_i in the main CORDIC;
             pairwise (R(C_i, t + r_i), R(S_i, t + r_i)), C_i = sum_j k_ij cos_ij, is the
             update's (x, y) directly.
             drive: (h_x, h_y) of each oscillator, one per clock, rotated by -theta_i (the
             lanes are idle).
    update   each rotation result y (pairwise: R(S_i, t + r_i)), nudged off the exact antipode (not
             in pairwise form: its pairs have their own nudge), gives inc_i = w_i +
             R(y * D, s) (0 when pinned); acc_i += inc_i (mod 2**A); the step is calm when
             every free |inc_i| (wrapped to A bits) is below tol, or with angle_shift a > 0
             when every free oscillator has x > 0 and |y| 2**a <= x, or x = y = 0 (pairwise:
             x = R(C_i, t + r_i)).

The run stops after `max_steps` steps or after CONVERGE_STEPS calm steps in a row (when tol
is enabled); then `done` rises and the `phases` stream gives the final accumulators.

Clocks per step (`cycles_per_step`, checked cycle for cycle against the RTL; L = CORDIC
latency, 32 by default; r = rows of the last group): matvec G n + 2r + 2L + 18 (the first
group's walk runs behind the phase pass; plus (G - 1)(2P - 1 - n) when n < 2P - 1), pairwise
n + G n + r + 2L + 17, drive 2n + 2L + 13. With the iterative CORDIC (C = 63 clocks per result) the rotations set the pace:
about 2n(C + 1) per step in matvec and drive (see `cycles_per_step`).

Contents: memories and run registers start from the `QuantizedCase` given at elaboration
(Memory init, reset values) and can be rewritten between runs through the `load` stream
(target, address, data); `load_writes(q, lanes=P)` is that encoding of a case. One build
therefore serves every case up to `capacity` oscillators.
"""

from __future__ import annotations

from amaranth.hdl import (Cat, ClockSignal, Const, Instance, Module, Mux, Signal, Value,
                          signed, unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import numpy as np

from ..golden.array_fixed import (COUPLING_BITS, CONVERGE_STEPS, FORMS, MAX_ANGLE_SHIFT,
                                  MAX_ROW_SHIFT, ROW_SHIFT_BITS,
                                  SCALE_BITS, ArrayFixedConfig, QuantizedCase)
from .cordic import ARCHITECTURES, Cordic

__all__ = ["ArrayEngine", "MacLane", "StepUpdate", "ArrayEngineError", "check_config",
           "check_case", "check_lanes", "TARGETS", "REGISTERS", "MAX_CAPACITY", "MAX_LANES",
           "load_writes", "load_layout", "order_layout", "cycles_per_step", "cycles_per_run",
           "issue_clocks", "row_groups", "k_bank_bits", "k_bank_depth", "k_bank_word",
           "iterative_cycles_per_result", "ENGINE_FORMS", "round_shift_var", "delay_line",
           "round_shift_split", "round_shift_finish", "magnitude", "check_forms", "check_names",
           "check_cordic_arch", "NO_INIT_SUFFIX", "mul_dsp16", "dsp16_platform"]

#: The forms this engine builds (all of the golden model's).
ENGINE_FORMS = FORMS

#: The k memory holds capacity**2 couplings x 16 bit: 256**2 (1 Mbit) fill the UP5K's four
#: SPRAMs; the ECP5-85F's 208 DP16KD (1024 x 16 each for k) hold about 440**2 next to the
#: other memories. 512 leaves room above that without letting a typo elaborate a huge memory.
MAX_CAPACITY = 512

#: Memories whose name ends in this have no power-on contents worth keeping (the k banks of an
#: engine elaborated without a case: every word a run reads is written through `load` first).
#: `oscarray.boards.build` drops their (all-zero) Memory init before synthesis, since Yosys maps
#: a memory with init to no RAM without init (the iCE40 SPRAM).
NO_INIT_SUFFIX = "__no_init"

#: Coupling lanes (MAC pairs, and pairwise CORDICs): 1..MAX_LANES. 64 lanes take 128
#: multipliers, most of the ECP5-85F's 156.
MAX_LANES = 64

#: `load` targets: which memory (or the run registers) a write goes to.
TARGETS = {"acc": 0, "w": 1, "k": 2, "pinned": 3, "drive": 4, "reg": 5, "row_shift": 6}

#: Run registers (`load` target "reg", address below).
REGISTERS = {"n": 0, "drive_form": 1, "t": 2, "d": 3, "s": 4, "tol": 5, "tol_enable": 6,
             "max_steps": 7, "pairwise_form": 8, "angle_shift": 9}

SHIFT_BITS = 6            # t and s: R(., t), R(., s) with shifts up to 63
STEP_COUNT_BITS = 32      # max_steps and steps_taken
CYCLE_COUNT_BITS = 48


class ArrayEngineError(ValueError):
    """Parameters or a case that this engine cannot hold."""


def magnitude(value, bits: int) -> Value:
    """|value| of a signed Value as an unsigned `bits`-bit one (bits = its width: -2**(w-1)
    becomes 2**(w-1))."""
    return Mux(value < 0, -value, value)[:bits]


def round_shift_var(value, amount):
    """R(value, amount) for a run-time shift: (v >> a) + v[a - 1], and v for a = 0.

    The rounding bit is bit a - 1 of v, read as bit 0 of (v << 1) >> a, so a = 0 needs no
    special case (it reads the 0 shifted in). A signed v keeps its sign through the shift, so a
    shift past its width gives -1 + 1 = 0 for negative v, as (v + 2**(a-1)) >> a does.
    """
    return (value >> amount) + ((value << 1) >> amount)[0]


def round_shift_split(value, amount):
    """R(value, amount) in two clocks' worth of logic: `round_shift_split(v, a)` is the
    variable shift (v << 1) >> a, which keeps the rounding bit v[a - 1] as its bit 0;
    `round_shift_finish` of that adds it: (w >> 1) + w[0] = R(v, a), as `round_shift_var`."""
    return (value << 1) >> amount


def round_shift_finish(shifted):
    """The second half of `round_shift_split`."""
    return (shifted >> 1) + shifted[0]


def order_layout(config: ArrayFixedConfig) -> data.StructLayout:
    """One `order` item: (sum_j cos_j, sum_j sin_j), each of n values in [-2**17, 2**17)."""
    width = SCALE_BITS + config.capacity.bit_length()
    return data.StructLayout({"cos": signed(width), "sin": signed(width)})


def check_lanes(lanes) -> int:
    """lanes as an int in 1..MAX_LANES, or ArrayEngineError (TypeError for a non-integer)."""
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)):
        raise TypeError(f"lanes must be an integer, not {lanes!r}")
    if not 1 <= lanes <= MAX_LANES:
        raise ArrayEngineError(f"lanes must be 1..{MAX_LANES}, not {lanes}")
    return int(lanes)


def k_bank_depth(config: ArrayFixedConfig, lanes: int = 1) -> int:
    """Words of one k bank: bank l holds rows l, l + P, ... (ceil(capacity / P) rows) of
    capacity words each (rows have stride n <= capacity)."""
    return -(-config.capacity // lanes) * config.capacity


def k_bank_bits(config: ArrayFixedConfig, lanes: int = 1) -> int:
    """Word address bits of one k bank (`k_bank_depth` words)."""
    return max(1, (k_bank_depth(config, lanes) - 1).bit_length())


def _addr_bits(config: ArrayFixedConfig, lanes: int = 1) -> int:
    # k addresses are (bank, word): bank in the bits above the bank's word address. The run
    # registers' addresses (up to 8) must fit too (capacity 2 would give 2 bits otherwise).
    return max(1, (config.capacity ** 2 - 1).bit_length(),
               k_bank_bits(config, lanes) + (lanes - 1).bit_length(),
               max(REGISTERS.values()).bit_length())


def _data_bits(config: ArrayFixedConfig) -> int:
    # The widest write: tol (A + 1 bits), a drive pair (2 x 18), max_steps (32).
    return max(config.acc_bits + 1, 2 * SCALE_BITS, STEP_COUNT_BITS)


def load_layout(config: ArrayFixedConfig, lanes: int = 1) -> data.StructLayout:
    """One `load` write: data (low bits), addr, target (see TARGETS)."""
    return data.StructLayout({"data": unsigned(_data_bits(config)),
                              "addr": unsigned(_addr_bits(config, lanes)),
                              "target": unsigned(3)})


def row_groups(n: int, lanes: int = 1) -> int:
    """G = ceil(n / P): the coupling pass walks the rows in G groups of P (lane l takes row
    g P + l of group g)."""
    return -(-n // lanes)


def issue_clocks(n: int, lanes: int = 1) -> int:
    """Clocks the coupling pass takes to issue the n**2 terms on `lanes` lanes (pipelined
    CORDIC): every clock one column j goes to all P lanes, G = ceil(n / P) groups of n
    columns, G n clocks (= n**2 / P when P divides n)."""
    return row_groups(n, lanes) * n


def _last_group_rows(n: int, lanes: int) -> int:
    """Rows of the last group (the ones still to hand over when the walk ends)."""
    return n - (row_groups(n, lanes) - 1) * lanes


def iterative_cycles_per_result(config: ArrayFixedConfig) -> int:
    """C: clocks from an input handshake to the output handshake of the iterative CORDIC of
    the engine's format (63 for the default); it takes the next input one clock later."""
    from .cordic_iterative import schedule_program
    return schedule_program(config.cordic).length + 1


def cycles_per_step(config: ArrayFixedConfig, n: int, form: str, ideal: bool = False,
                    lanes: int = 1, cordic_arch: str = "pipelined") -> int:
    """Clocks of one Euler step of n oscillators (the order stream always ready).

    ideal: the work spread over its units plus the pipeline latency: ceil(n**2 / P) coupling
    terms on P lanes (pairwise, matvec) or 2n CORDIC items (drive: n phases, n rotations),
    plus 2L (a phase through the CORDIC, a rotation or a lane CORDIC). With the pipelined
    CORDIC (L = its latency, G = `row_groups`, r = rows of the last group) this architecture
    takes:

        phase pass   n + L + 4     (acc read, theta register, the all-collected check, ORDER)
        matvec       G n + 2r - 1 + L + 14 - (n - 1)   (column read and register, k read,
                                    operand, product and accumulate registers, chain load,
                                    the chain's head, rotation input, update, STEP_END; the
                                    first group's columns 0 .. n - 2 go out during the phase
                                    pass, as soon as each column is in the buffer; lane l
                                    loads the chain l clocks after lane 0, so the last
                                    group's r rows reach the head every other clock; when
                                    n < 2P - 1 each group waits 2P - 1 - n clocks more)
        pairwise     G n + r + L + 13   (the angle register and the lane CORDIC come before the
                                    MACs instead of the rotation after them; no early walk:
                                    the lanes need their theta_i first)
        drive        n + L + 9

    The r (matvec 2r) clocks are the last group handing its rows over one by one; earlier
    groups hand over while the next group walks. cordic_arch="iterative" (C = `iterative_cycles_per_result`,
    63 by default; a new input C + 1 clocks after the last): the phase pass n (C + 1) + 4;
    drive n (C + 1) + 9; pairwise (G n - 1)(C + 3) + C + r + 14 (one column at a time in the
    lane CORDICs); matvec by `_matvec_stalled_coupling` (the rotations, C + 1 apart, set the
    pace: about n (C + 1) when G n < n (C + 1)). `ideal` is the pipelined engine's.
    """
    check_lanes(lanes)
    check_cordic_arch(cordic_arch)
    latency = config.cordic.latency_pipelined
    if ideal:
        work = 2 * n if form == "drive" else -(-n * n // lanes)
        return work + 2 * latency
    groups, last = row_groups(n, lanes), _last_group_rows(n, lanes)
    if cordic_arch == "iterative":
        c = iterative_cycles_per_result(config)
        phases = n * (c + 1) + 4
        if form == "drive":
            return phases + n * (c + 1) + 9
        if form == "pairwise":
            return phases + (groups * n - 1) * (c + 3) + c + last + 14
        return phases + _matvec_stalled_coupling(n, lanes, c)
    phases = n + latency + 4
    if form == "drive":
        return phases + n + latency + 9
    if form == "pairwise":
        return phases + groups * n + last + latency + 13
    # matvec: the first group's walk runs behind the phase pass, n - 1 clocks earlier; lane l
    # hands its row over l clocks late and rows reach the head every other clock (2r); a
    # group ends at least 2P - 1 clocks after the last (`settle`).
    spacing = (groups - 1) * max(0, 2 * lanes - 1 - n)
    return phases + groups * n + 2 * last - 1 + latency + 14 - (n - 1) + spacing


#: Clocks from a group's last column (issued) to the clock the lanes load the chain (matvec):
#: the column read, the column register, the lane's operand, product and accumulate stages.
LOAD_DELAY = 5


def _matvec_stalled_coupling(n: int, lanes: int, c: int) -> int:
    """The matvec coupling pass with the iterative CORDIC (C = c), from COUPLING to STEP_END,
    clock by clock as the sequencer runs it: the walk issues a column per clock, but a group's
    last column only when the hand-over chain is empty and the last group has loaded it
    (LOAD_DELAY + P clocks after its last column); lane l loads chain element l LOAD_DELAY + l
    clocks after the last column; the chain moves towards its head while the head is empty
    or taken; the head goes to the h register when h is free, h to the rotation input when
    that is free, and the CORDIC takes a rotation when it is ready (C + 1 clocks after the
    last). The last result is updated, written and ends the step 8 clocks later."""
    total = row_groups(n, lanes) * n
    issued, settle, h_valid, rot_valid = 0, 0, False, False
    chain = [False] * lanes
    ready_at, loads, outputs, clock, last_output = 0, {}, 0, 0, None
    while outputs < n:
        accept = rot_valid and clock >= ready_at
        if accept:
            ready_at = clock + c + 1
            outputs += 1
            last_output = clock + c
        h_advance = h_valid and (not rot_valid or accept)
        h_free = not h_valid or h_advance
        drain = chain[0] and h_free
        shift = not chain[0] or h_free
        settle_next = max(settle - 1, 0)
        if issued < total:
            last = issued % n == n - 1
            if not last or (settle == 0 and not any(chain)):
                if last:
                    rows = min(lanes, n - issued // n * lanes)
                    for lane in range(rows):
                        loads.setdefault(clock + LOAD_DELAY + lane, []).append(lane)
                    settle_next = LOAD_DELAY + lanes
                issued += 1
        rot_valid = h_advance or (rot_valid and not accept)
        h_valid = drain or (h_valid and not h_advance)
        if shift:
            chain = chain[1:] + [False]
        for lane in loads.pop(clock, []):
            chain[lane] = True
        settle = settle_next
        clock += 1
    return last_output + 8


def cycles_per_run(config: ArrayFixedConfig, n: int, form: str, steps: int,
                   lanes: int = 1, cordic_arch: str = "pipelined") -> int:
    """`cycles` after a run of `steps` steps: the steps and the final phase pass."""
    if cordic_arch == "iterative":
        final = n * (iterative_cycles_per_result(config) + 1) + 4
    else:
        final = n + config.cordic.latency_pipelined + 4
    return steps * cycles_per_step(config, n, form, lanes=lanes, cordic_arch=cordic_arch) + final


# ---------------------------------------------------------------------------------------------
# A case in the engine's words (one encoding, used by Memory init and by the load port)

def check_config(config: ArrayFixedConfig):
    """Refuse formats this engine cannot build (ArrayEngineError, a ValueError)."""
    if not isinstance(config, ArrayFixedConfig):
        raise TypeError(f"config must be an ArrayFixedConfig, not {config!r}")
    if config.capacity > MAX_CAPACITY:
        raise ArrayEngineError(
            f"capacity {config.capacity} exceeds {MAX_CAPACITY}: the k memory holds "
            f"capacity**2 couplings ({MAX_CAPACITY}**2 x 16 bit is already 1 Mbit)")


def check_names(names, allowed: tuple, what: str, example: str, error=ValueError) -> tuple:
    """names as a tuple in `allowed`'s order: a non-empty collection of names from `allowed`,
    each once (`error`; TypeError for a bare string or a non-collection)."""
    if isinstance(names, str) or not isinstance(names, (tuple, list, set, frozenset)):
        raise TypeError(f"{what} must be a tuple of {what[:-1]} names such as {example}, "
                        f"not {names!r}")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise error(f"unknown {what} {', '.join(map(repr, unknown))}; choose from "
                    f"{', '.join(allowed)}")
    if not names or len(set(names)) != len(names):
        raise error(f"{what} must name each at most once and at least one, not "
                    f"{tuple(names)!r}")
    return tuple(name for name in allowed if name in names)


def check_forms(forms) -> tuple:
    """forms as a tuple in ENGINE_FORMS order (`check_names`; ArrayEngineError)."""
    return check_names(forms, ENGINE_FORMS, "forms", "('matvec', 'drive')", ArrayEngineError)


def check_cordic_arch(arch) -> str:
    """arch if it is a CORDIC architecture this engine builds (ArrayEngineError)."""
    if arch not in ARCHITECTURES:
        raise ArrayEngineError(f"unknown cordic_arch {arch!r}; choose one of "
                               f"{', '.join(ARCHITECTURES)}")
    return arch


def check_case(q: QuantizedCase, config: ArrayFixedConfig | None = None,
               forms=ENGINE_FORMS):
    """Refuse a case the engine (of `config`, default the case's, built with `forms`) cannot
    hold (ArrayEngineError)."""
    config = config or q.config
    check_config(config)
    forms = check_forms(forms)
    if not isinstance(q, QuantizedCase):
        raise TypeError(f"case must be a QuantizedCase, not {q!r}")
    _check_case(config, q)
    if q.form not in forms:
        raise ArrayEngineError(
            f"the case is in {q.form} form but this engine is built without it "
            f"(forms={forms!r}); build it with {q.form!r} in forms, or quantize the case "
            f"for one of {', '.join(forms)}")


def _check_case(config: ArrayFixedConfig, q: QuantizedCase):
    if q.form not in ENGINE_FORMS:
        raise ArrayEngineError(f"unknown form {q.form!r}; choose one of {', '.join(FORMS)}")
    if q.config.acc_bits != config.acc_bits or q.config.phase_bits != config.phase_bits:
        raise ArrayEngineError(
            f"the case is quantized for A = {q.config.acc_bits}, P = {q.config.phase_bits} "
            f"bits but the engine has A = {config.acc_bits}, P = {config.phase_bits}")
    if not 1 <= q.n <= config.capacity:
        raise ArrayEngineError(f"N = {q.n} oscillators: the engine holds 1..{config.capacity}")
    if not 0 <= q.t < 2 ** SHIFT_BITS or not 0 <= q.s < 2 ** SHIFT_BITS:
        raise ArrayEngineError(f"shifts t = {q.t}, s = {q.s} exceed {2 ** SHIFT_BITS - 1}")
    if not 0 <= q.d < 2 ** (SCALE_BITS - 1):
        raise ArrayEngineError(f"step scale D = {q.d} does not fit {SCALE_BITS} signed bits")
    if not 0 <= q.steps < 2 ** STEP_COUNT_BITS:
        raise ArrayEngineError(f"steps = {q.steps} exceeds the {STEP_COUNT_BITS}-bit counter")
    if np.abs(q.k).max(initial=0) >= 2 ** (COUPLING_BITS - 1):
        raise ArrayEngineError(f"couplings exceed {COUPLING_BITS} signed bits")
    if q.rows.shape != (q.n,) or not ((0 <= q.rows) & (q.rows <= MAX_ROW_SHIFT)).all():
        raise ArrayEngineError(f"row shifts must be {q.n} integers in 0..{MAX_ROW_SHIFT}")
    if not 0 <= q.angle_shift <= MAX_ANGLE_SHIFT:
        raise ArrayEngineError(f"angle_shift = {q.angle_shift} is outside 0..{MAX_ANGLE_SHIFT}")
    if q.drive is not None and np.abs(q.drive).max(initial=0) >= 2 ** (SCALE_BITS - 1):
        raise ArrayEngineError(f"the drive exceeds {SCALE_BITS} signed bits")


def _case_registers(config: ArrayFixedConfig, q: QuantizedCase) -> dict:
    a = config.acc_bits
    tol = 0 if q.tol is None else int(q.tol)
    # |inc| <= 2**(A-1) after wrapping: any tol above that is "always calm", so clamping it
    # to 2**A (A + 1 register bits) changes nothing; tol <= 0 is "never calm".
    return {"n": q.n, "drive_form": int(q.form == "drive"), "t": q.t, "d": q.d, "s": q.s,
            "tol": min(max(tol, 0), 2 ** a), "tol_enable": int(q.tol is not None),
            "max_steps": q.steps, "pairwise_form": int(q.form == "pairwise"),
            "angle_shift": q.angle_shift}


def _case_memories(config: ArrayFixedConfig, q: QuantizedCase) -> dict:
    """Memory name -> list of (address, value); unlisted words are 0."""
    a, n = config.acc_bits, q.n
    mask = (1 << a) - 1
    drive = q.drive if q.drive is not None else np.zeros((n, 2), np.int64)
    # k is listed row by row with stride n (not capacity): term q = i * n + j
    # (`k_bank_word` places it in a lane's bank).
    return {
        "acc": [(i, int(v) & mask) for i, v in enumerate(q.acc0)],
        "w": [(i, int(v) & mask) for i, v in enumerate(q.w)],     # w mod 2**A: sums wrap
        "k": [(i, int(v)) for i, v in enumerate(np.asarray(q.k).reshape(-1))],
        "pinned": [(i, int(v)) for i, v in enumerate(q.pinned)],
        "row_shift": [(i, int(v)) for i, v in enumerate(q.rows)],
        "drive": [(i, (int(x), int(y))) for i, (x, y) in enumerate(drive)],
    }


def k_bank_word(term: int, n: int, lanes: int) -> tuple[int, int]:
    """(bank, word) of coupling term q = i n + j: row i lives in bank i mod P, as row
    i div P of that bank (stride n), so in a group of P rows every lane reads word
    (i div P) n + j of its own bank in the same clock."""
    row, column = divmod(term, n)
    return row % lanes, (row // lanes) * n + column


def load_writes(q: QuantizedCase, config: ArrayFixedConfig | None = None,
                lanes: int = 1, forms=ENGINE_FORMS) -> np.ndarray:
    """The `load` writes that put case `q` into an engine of `lanes` lanes: (M, 3) int64
    rows of (target, addr, data), registers last. Signed values are written as their two's
    complement in the memory's width; coupling q = i n + j goes to `k_bank_word` (bank
    i mod P, word (i div P) n + j), at address bank * 2**k_bank_bits + word. `forms`: the engine's (a case in a form
    it is built without is refused here, before any write)."""
    config = config or q.config
    check_case(q, config, forms)
    lanes = check_lanes(lanes)
    word_bits = k_bank_bits(config, lanes)
    rows = []
    for name, words in _case_memories(config, q).items():
        for addr, value in words:
            if name == "k":
                value &= (1 << COUPLING_BITS) - 1
                bank, word = k_bank_word(addr, q.n, lanes)
                addr = (bank << word_bits) | word
            elif name == "drive":
                x, y = value
                mask = (1 << SCALE_BITS) - 1
                value = (x & mask) | ((y & mask) << SCALE_BITS)
            rows.append((TARGETS[name], addr, value))
    for name, value in _case_registers(config, q).items():
        rows.append((TARGETS["reg"], REGISTERS[name], value))
    return np.array(rows, np.int64).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# Multipliers for 16 x 16 DSPs (iCE40 SB_MAC16)

def dsp16_platform(platform) -> bool:
    """Whether `platform`'s DSPs multiply 16 x 16 bits (iCE40): Yosys splits an 18-bit operand
    over two SB_MAC16 there, so `mul_dsp16` keeps each product on one."""
    # amaranth's iCE40 platforms (SiliconBluePlatform) have no `family`; their device does.
    return str(getattr(platform, "device", "")).lower().startswith("ice40")


def _split18(x):
    """(s16, hi) with x = s16 + 2**15 * (1 + 2 hi) for a signed 18-bit x: s16 = x[:16] - 2**15
    (signed 16 bits: bit 15 inverted), hi = x[16:18] in -2..1, so 1 + 2 hi is -3, -1, 1 or 3."""
    x = Value.cast(x)
    return Cat(x[:15], ~x[15]).as_signed(), x[16:18].as_signed()


def _times_odd(value, hi):
    """value * (1 + 2 hi) for hi in -2..1, without a multiplier: +-value or +-3 value."""
    value = Value.cast(value)
    three = hi[0] ^ hi[1]                       # hi = 1 or -2: |1 + 2 hi| = 3
    magnitude = Mux(three, value + (value << 1), value)
    return Mux(hi[1], -magnitude, magnitude)


def mul_dsp16(a, b):
    """a * b for signed a and b of at most 18 bits, as one 16 x 16 signed product (one DSP)
    plus shifts and small adders: an operand of 17-18 bits is s16 + 2**15 (1 + 2 hi)
    (`_split18`). Bit for bit a * b."""
    a, b = Value.cast(a), Value.cast(b)
    assert a.shape().signed and b.shape().signed and len(a) <= 18 and len(b) <= 18
    if len(a) <= 16 and len(b) <= 16:
        return a * b
    if len(a) > 16 and len(b) <= 16:
        a, b = b, a
    b16, b_hi = _split18(_widen18(b))
    if len(a) <= 16:
        return a * b16 + (_times_odd(a, b_hi) << 15)
    a16, a_hi = _split18(_widen18(a))
    a_odd = _times_odd(Const(1, signed(3)), a_hi)          # 1 + 2 hi_a in -3..3
    return (a16 * b16 + ((_times_odd(a16, b_hi) + _times_odd(b16, a_hi)) << 15)
            + (_times_odd(a_odd, b_hi) << 30))


def _widen18(x):
    """x sign-extended to 18 bits."""
    x = Value.cast(x)
    return Cat(x, x[-1].replicate(18 - len(x))).as_signed()


def delay_line(m: Module, value, clocks: int, name: str):
    """`value` delayed by `clocks` registers (in domain sync), named name_d1, name_d2, ..."""
    for clock in range(clocks):
        later = Signal.like(value, name=f"{name}_d{clock + 1}")
        m.d.sync += later.eq(value)
        value = later
    return value


def ecp5_platform(platform) -> bool:
    """Whether `platform` is an ECP5 (its MULT18X18D has input and output registers that
    Yosys does not use by itself: `registered_product` instantiates them)."""
    return str(getattr(platform, "device", "")).upper().startswith("LFE5")


def registered_product(m: Module, a, b, platform, dsp16: bool | None = None,
                       name: str = "product") -> Signal:
    """a * b (signed, at most 18 x 18 bits) two clocks after a and b: the operands are
    registered, then the product. On ECP5 both registers are the MULT18X18D's own (a
    multiplier between fabric registers is 3.9 ns of logic plus two long routes, under
    130 MHz); elsewhere they are fabric registers around `a * b` (`mul_dsp16` on iCE40, see
    `dsp16_platform`). Bit for bit a * b either way."""
    a, b = Value.cast(a), Value.cast(b)
    assert a.shape().signed and b.shape().signed and len(a) <= 18 and len(b) <= 18
    product = Signal(signed(len(a) + len(b)), name=name, reset_less=True)
    if ecp5_platform(platform):
        raw = Signal(36, name=f"{name}_raw")
        a18, b18 = _widen18(a), _widen18(b)
        ports = {f"i_A{bit}": a18[bit] for bit in range(18)}
        ports.update({f"i_B{bit}": b18[bit] for bit in range(18)})
        ports.update({f"i_C{bit}": 0 for bit in range(18)})
        ports.update({f"o_P{bit}": raw[bit] for bit in range(36)})
        m.submodules[name] = Instance(
            "MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0",
            p_REG_OUTPUT_CLK="CLK0", p_GSR="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal(), i_CE0=1, i_RST0=0, **ports)
        m.d.comb += product.eq(raw[:len(product)].as_signed())
        return product
    a_reg = Signal.like(a, name=f"{name}_a", reset_less=True)
    b_reg = Signal.like(b, name=f"{name}_b", reset_less=True)
    dsp16 = dsp16_platform(platform) if dsp16 is None else dsp16
    m.d.sync += [a_reg.eq(a), b_reg.eq(b),
                 product.eq(mul_dsp16(a_reg, b_reg) if dsp16 else a_reg * b_reg)]
    return product


# ---------------------------------------------------------------------------------------------
# Components

class MacLane(wiring.Component):
    """One coupling lane's multiply-accumulate pair: C += k cos, Z += k sin over one row.

    The inputs of a clock are registered (operand stage), multiplied (product stage, one DSP
    each) and added to the row's sums (accumulate stage): a row's sums are in the accumulators
    3 clocks after its last term came in.

    Ports
    -----
    valid : In(1)              a term is present
    first : In(1)              it is the first term of a row (the sums restart from it)
    last : In(1)               it is the last term of a row
    k : In(signed(16))         the coupling k_ij
    cos, sin : In(signed(18))  the factors (cos_j, sin_j; pairwise: cos and sin(theta_j - theta_i))
    done : Out(1)              c and z hold a finished row's sums (3 clocks after its `last`),
                               for one clock: the next row's first term may follow at once
    c, z : Out(signed(W))      sum_j k_ij cos_j and sum_j k_ij sin_j, W = 34 + bits(capacity)
                               (the accumulators themselves: registers)

    dsp16: multiply with one 16 x 16 DSP per product (`mul_dsp16`); None (default): on
    iCE40 platforms (`dsp16_platform`), where Yosys would use two SB_MAC16 per 16 x 18.
    """

    def __init__(self, capacity: int, dsp16: bool | None = None):
        self.dsp16 = dsp16
        self.width = COUPLING_BITS + SCALE_BITS + capacity.bit_length()
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1),
            "k": In(signed(COUPLING_BITS)), "cos": In(signed(SCALE_BITS)),
            "sin": In(signed(SCALE_BITS)),
            "done": Out(1), "c": Out(signed(self.width)), "z": Out(signed(self.width)),
        })

    latency = 3

    def elaborate(self, platform):
        m = Module()
        # Operand and product stages: `registered_product` (on ECP5, the DSP's own registers).
        pc = registered_product(m, self.k, self.cos, platform, self.dsp16, "pc")
        ps = registered_product(m, self.k, self.sin, platform, self.dsp16, "ps")
        flags, flags2 = Signal(3), Signal(3)
        m.d.sync += [flags.eq(Cat(self.valid, self.first, self.last)), flags2.eq(flags)]
        valid, first, last = flags2
        # Accumulate stage: a row's first product replaces the sums. The sums are data (read
        # only with `done`), so they are not reset (see the engine's reset note).
        c = Signal(signed(self.width), reset_less=True)
        z = Signal(signed(self.width), reset_less=True)
        with m.If(valid):
            m.d.sync += [c.eq(Mux(first, 0, c) + pc), z.eq(Mux(first, 0, z) + ps)]
        m.d.comb += [self.c.eq(c), self.z.eq(z)]
        m.d.sync += self.done.eq(valid & last)
        return m


class StepUpdate(wiring.Component):
    """One oscillator's update from its rotation result (latency 4, one per clock).

    Ports
    -----
    valid : In(1)                  the inputs below are present
    x, y : In(signed(18))          the CORDIC's rotation of the coupling vector by -theta_i
    acc : In(unsigned(A))          acc_i before the step
    w : In(unsigned(A))            w_i mod 2**A
    pinned : In(1)                 oscillator i never moves
    d : In(signed(18)), s : In(6)  step scale D * 2**-s
    tol : In(unsigned(A + 1))      calm threshold (accumulator units)
    angle_shift : In(5)            a > 0: the angle test |y'| 2**a <= x, x > 0 (or x = y' = 0)
                                   instead of tol
    nudge : In(1)                  apply the antipode nudge below (not in pairwise form)
    done : Out(1)                  new_acc and noisy are valid (4 clocks after valid)
    new_acc : Out(unsigned(A))     acc_i + inc_i mod 2**A, inc_i = w_i + R(y' D, s), 0 if pinned
    noisy : Out(1)                 a free oscillator that fails the calm test (|inc_i| >= tol,
                                   or the angle test): the step is not calm

    y' is y nudged off the exact antipode: y = 0 with x < 0 reads +1 (`nudge_antipode`), when
    `nudge`.
    dsp16: as `MacLane`'s (the 18 x 18 product on one 16 x 16 DSP on iCE40).

    Stages: the nudged y and D into the multiplier's operand registers, the product
    (`registered_product`), the variable shift of R(product, s), w + R (its rounding bit a
    carry in; 0 when pinned); new_acc and noisy are combinational from the last. tol must be
    steady a clock before results arrive (a register holds -tol), angle_shift while they pass:
    the engine's are run registers, changed only while idle.
    """

    def __init__(self, acc_bits: int, dsp16: bool | None = None):
        self.acc_bits = acc_bits
        self.dsp16 = dsp16
        a = acc_bits
        super().__init__({
            "valid": In(1), "x": In(signed(SCALE_BITS)), "y": In(signed(SCALE_BITS)),
            "acc": In(unsigned(a)), "w": In(unsigned(a)), "pinned": In(1),
            "d": In(signed(SCALE_BITS)), "s": In(unsigned(SHIFT_BITS)),
            "tol": In(unsigned(a + 1)), "angle_shift": In(5), "nudge": In(1),
            "done": Out(1), "new_acc": Out(unsigned(a)), "noisy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        a = self.acc_bits
        # Stages 1-2: the nudged y times D (one DSP, operand and product registers).
        nudged = Mux(self.nudge & (self.y == 0) & (self.x < 0), 1, self.y)
        product = registered_product(m, nudged, self.d, platform, self.dsp16)
        # The angle test beside the product, one operation a stage (angle_shift is a run
        # register: constant while a step's results pass): y' and x, then |y'| and x >> a
        # (|y'| 2**a <= x is |y'| <= x >> a for integers, so no shifter is wider than x),
        # then the compare. In one clock they were the 16-lane ECP5 build's critical path.
        nudged1, x1 = Signal(signed(SCALE_BITS)), Signal(signed(SCALE_BITS))
        size2, limit2 = Signal(SCALE_BITS), Signal(SCALE_BITS)
        # eligible: x > 0, or x = y' = 0 (then limit and size are 0 and the test passes).
        eligible2, askew3, askew4 = Signal(), Signal(), Signal()
        m.d.sync += [nudged1.eq(nudged), x1.eq(self.x),
                     size2.eq(magnitude(nudged1, SCALE_BITS)),
                     limit2.eq(x1.as_unsigned() >> self.angle_shift),
                     eligible2.eq((x1 > 0) | ((x1 == 0) & (nudged1 == 0))),
                     askew3.eq(~(eligible2 & (size2 <= limit2))), askew4.eq(askew3)]
        # acc, w, pinned and valid travel beside it.
        acc2, w2 = Signal(a), Signal(a)
        pinned2, valid2 = Signal(), Signal()
        acc1, w1 = Signal(a), Signal(a)
        pinned1, valid1 = Signal(), Signal()
        m.d.sync += [acc1.eq(self.acc), w1.eq(self.w), pinned1.eq(self.pinned),
                     valid1.eq(self.valid), acc2.eq(acc1), w2.eq(w1), pinned2.eq(pinned1),
                     valid2.eq(valid1)]
        # Stage 3: the variable shift of R(product, s) (a register of its own); its rounding
        # bit is added in stage 4 beside omega (a carry in), so neither stage has two long
        # carry chains in a row (shift and rounding add in one clock were the update's
        # critical path on ECP5).
        halved = Signal(signed(2 * SCALE_BITS + 1))
        acc3, w3 = Signal(a), Signal(a)
        pinned3, valid3 = Signal(), Signal()
        m.d.sync += [halved.eq(round_shift_split(product, self.s)), acc3.eq(acc2), w3.eq(w2),
                     pinned3.eq(pinned2), valid3.eq(valid2)]
        # Stage 4: add omega; everything mod 2**A from here (the accumulator wraps, and the
        # detector reads inc wrapped to A bits, as `run_fixed`).
        inc = Signal(signed(a))
        scaled_plus_w = w3 + round_shift_finish(halved)     # w + R(product, s)
        acc4, pinned4 = Signal(a), Signal()
        m.d.sync += [inc.eq(Mux(pinned3, 0, scaled_plus_w)), acc4.eq(acc3),
                     pinned4.eq(pinned3), self.done.eq(valid3)]
        # |inc| >= tol as two compares side by side, against tol and a register holding -tol
        # (tol is a run register: constant while results pass), not a negation and then a
        # compare.
        minus_tol = Signal(signed(a + 2))
        m.d.sync += minus_tol.eq(-self.tol)
        loud = (inc >= self.tol) | (inc <= minus_tol)
        m.d.comb += [self.new_acc.eq(acc4 + inc),
                     self.noisy.eq(~pinned4 & Mux(self.angle_shift != 0, askew4, loud))]
        return m


class ArrayEngine(wiring.Component):
    """The array engine: the three forms (or those in `forms`), one CORDIC for phases and
    rotations, `lanes` coupling lanes (a CORDIC, if pairwise is built, and a MAC pair each).

    Parameters
    ----------
    config : ArrayFixedConfig   formats and capacity (at most MAX_CAPACITY oscillators)
    case : QuantizedCase or None
        The contents at reset (Memory init and register reset values); None: all zero.
    lanes : int                 P, 1..MAX_LANES: rows worked on at once (P pairwise CORDIC
                                evaluations, or P matvec MAC pairs per clock); the k memory
                                has P banks.
    forms : tuple of str        the forms this build runs (default all of ENGINE_FORMS).
                                Without "pairwise" the lane CORDICs and the lanes' theta_i
                                registers are left out (matvec needs only the MAC pairs);
                                without "drive" the drive memory. A register write selecting
                                a form left out is ignored (pairwise_form, drive_form read 0:
                                the engine runs matvec); `check_case`/`load_writes` with the
                                same forms refuse such a case first.
    cordic_arch : str           "pipelined" (default) or "iterative" (`Cordic.create`) for the
                                main CORDIC and the lane CORDICs. The iterative one takes a
                                new input only after its last result (63 clocks for the
                                default format): the sequencer then follows its i.ready
                                (one item in flight per pass; see `cycles_per_step`).

    Memories: every one has one read and one write port; the k banks (the large one) share
    one address between them (run reads, load writes: never at once), so they map to
    single-port RAM (iCE40 SPRAM) as well as to block RAM. Without a case, the k banks are
    named with NO_INIT_SUFFIX (no power-on contents needed).

    Ports
    -----
    start : In(1)          starts a run (from idle or done; ignored while busy). The run
                           begins from the accumulators in memory, so a second start continues
                           from where the last run ended, unless acc is loaded again.
    busy : Out(1)          a run is in progress
    done : Out(1)          the last run has finished (until the next start)
    steps_taken : Out(32)  Euler steps of the current or last run
    cycles : Out(48)       clocks from start to done (counts while busy; saturates at
                           2**48 - 1, which the longest runs, 2**32 - 1 steps of a large
                           array, can reach)
    converged : Out(1)     the detector stopped the run (CONVERGE_STEPS calm steps, tol enabled)
    order : Out(stream)    (cos, sin) = (sum_j cos_j, sum_j sin_j) of each state, before each
                           step and after the last: steps_taken + 1 items per run. The engine
                           waits while an item is not accepted.
    phases : Out(stream)   after done: the final accumulators acc_0 .. acc_{n-1} (unsigned A
                           bits), once per run, in order (n: the run's; a later load of n
                           does not change the items)
    update : Out(valid, index, acc)
                           an observation port: one clock per accumulator write during a run,
                           n per step in index order (for traces; ignore it otherwise)
    load : In(stream)      writes (target, addr, data) while not busy (ready = not busy,
                           also in the clock a start is taken: a write then counts for that
                           run, max_steps too). Addresses outside a memory (acc, w, pinned,
                           drive, row_shift: >= capacity; k: a bank >= P or a word >= `k_bank_depth`)
                           and unknown registers are ignored:
                           acc/w (A bits, w mod 2**A), k (16-bit two's complement: k_ij at
                           bank i mod P, word (i div P) n + j (`k_bank_word`): address
                           bank * 2**k_bank_bits + word), pinned (bit 0), row_shift
                           (r_i, ROW_SHIFT_BITS: row i's couplings are k_ij 2**-(e + r_i)),
                           drive (h_x low 18 bits, h_y high 18 bits), reg (REGISTERS: n,
                           drive_form, t, d, s, tol, tol_enable, max_steps, pairwise_form,
                           angle_shift; with drive_form and pairwise_form both set, the engine runs drive).
                           `load_writes(q, lanes=P)` encodes a case.

    Loads are the caller's to get right: t, the row shifts, D and s must be the case's
    (`quantize_case`), so R(C_i, t + r_i) fits the CORDIC's 18 bits.

    Reset: the synchronous reset clears the controller and the valid bits and flags of every
    pipeline; the lanes' data registers (k, columns, thetas, angles, products, sums, the
    hand-over chain, h) are not reset: they are read only beside a valid bit, and on a
    64-lane ECP5 build a reset reaching all 17.5k of them was the critical path (14.5 ns of
    routing). They start at 0 at configuration all the same.
    """

    #: A max_steps load in the clock of a start counts for that run's first `final` (the
    #: start reads the value being loaded). The formal proofs turn it off (a subclass) to show
    #: that they catch the defect it fixes: without it the start reads the old max_steps while
    #: the run compares its steps with the new one, so a 0 loaded then lets steps_taken run
    #: on until it wraps at 2**32.
    start_sees_load = True

    def __init__(self, config: ArrayFixedConfig, case: QuantizedCase | None = None, *,
                 lanes: int = 1, forms=ENGINE_FORMS, cordic_arch: str = "pipelined"):
        try:
            check_config(config)
            self.lanes = check_lanes(lanes)
            self.forms = check_forms(forms)
            self.cordic_arch = check_cordic_arch(cordic_arch)
            if case is not None:
                check_case(case, config, self.forms)
        except Exception:
            # A refused engine is not an unused one: no UnusedElaboratable warning on top.
            self._MustUse__silence = True
            raise
        self.config = config
        self.case = case
        self.cordic_config = config.cordic
        a = config.acc_bits
        index = unsigned(max(1, (config.capacity - 1).bit_length()))
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "steps_taken": Out(STEP_COUNT_BITS), "cycles": Out(CYCLE_COUNT_BITS),
            "converged": Out(1),
            "order": Out(stream.Signature(order_layout(config))),
            "phases": Out(stream.Signature(unsigned(a))),
            "update": Out(wiring.Signature({"valid": Out(1), "index": Out(index),
                                            "acc": Out(unsigned(a))})),
            "load": In(stream.Signature(load_layout(config, self.lanes))),
        })

    def _init(self, name: str, depth: int) -> list:
        if self.case is None:
            return []
        words = dict(_case_memories(self.config, self.case)[name])
        if name == "drive":
            return [dict(zip("xy", words.get(i, (0, 0)))) for i in range(depth)]
        return [words.get(i, 0) for i in range(depth)]

    def _k_init(self, lane: int, depth: int) -> list:
        """Bank `lane` of k (`k_bank_word`)."""
        if self.case is None:
            return []
        bank = [0] * depth
        for term, value in _case_memories(self.config, self.case)["k"]:
            lane_of, word = k_bank_word(term, self.case.n, self.lanes)
            if lane_of == lane:
                bank[word] = value
        return bank

    def elaborate(self, platform):
        m = Module()
        cfg, lanes = self.config, self.lanes
        a, p, f, cap = cfg.acc_bits, cfg.phase_bits, cfg.frac_bits, cfg.capacity
        latency = self.cordic_config.latency_pipelined
        has_pairwise, has_drive = "pairwise" in self.forms, "drive" in self.forms
        # The iterative CORDIC is not always ready: the passes keep one item in flight and
        # hold the CORDIC's input until i.ready (see the `stalls` branches below). The
        # pipelined one always is (its output is always taken), so those builds keep the
        # issue-every-clock logic unchanged.
        stalls = self.cordic_arch != "pipelined"
        regs = (_case_registers(cfg, self.case) if self.case is not None
                else dict.fromkeys(REGISTERS, 0))
        pair = data.StructLayout({"x": signed(SCALE_BITS), "y": signed(SCALE_BITS)})
        bank_depth = k_bank_depth(cfg, lanes)
        word_bits = k_bank_bits(cfg, lanes)

        # -- memories (1 read + 1 write port each: block RAM) ---------------------------------
        mem = {
            "acc": Memory(shape=unsigned(a), depth=cap, init=self._init("acc", cap)),
            "w": Memory(shape=unsigned(a), depth=cap, init=self._init("w", cap)),
            "pinned": Memory(shape=unsigned(1), depth=cap, init=self._init("pinned", cap)),
            "row_shift": Memory(shape=unsigned(ROW_SHIFT_BITS), depth=cap,
                                init=self._init("row_shift", cap)),
            # Work buffers of one step: theta (-theta_i mod 2**P, the rotations' angle, so no
            # negation follows the block RAM's slow clock to out; pairwise: -theta_j for
            # the walk) and the columns (cos_j, sin_j) that the walk broadcasts to every lane.
            "theta": Memory(shape=unsigned(p), depth=cap, init=[]),
            "columns": Memory(shape=pair, depth=cap, init=[]),
        }
        if has_drive:
            mem["drive"] = Memory(shape=pair, depth=cap, init=self._init("drive", cap))
        for lane in range(lanes):
            mem[f"k{lane}"] = Memory(shape=signed(COUPLING_BITS), depth=bank_depth,
                                     init=self._k_init(lane, bank_depth))
        rd, wr = {}, {}
        for name, memory in mem.items():
            no_init = name.startswith("k") and self.case is None
            m.submodules[f"mem_{name}" + (NO_INIT_SUFFIX if no_init else "")] = memory
            rd[name], wr[name] = memory.read_port(), memory.write_port()
        # The k banks: one address for both ports (single-port RAM). A run reads, the load port
        # writes. A k write travels from lane to lane in the walk's own systolic chains (the
        # column carries its data, the k address its word, the flags a write bit and its bank
        # in `rows`; a net to every bank was the 64-lane build's critical path, 15.9 ns of
        # routing, and a chain of its own added 35 wires a lane to a congested build) and
        # lands in bank l l + 1 clocks after its transfer. Loads come only while the engine
        # is idle, and the walk reaches lane l no earlier than L + 4 + l clocks after a start,
        # so every write lands before a run reads it. Reads and writes never meet (no
        # read-during-write behaviour to emulate, and Yosys sees the ports exclusive: iCE40
        # SPRAM).
        k_write_layout = data.StructLayout({"valid": 1, "bank": range(max(lanes, 2)),
                                            "addr": word_bits, "data": COUPLING_BITS})
        k_write_in = Signal(k_write_layout)
        busy = Signal()

        # -- run registers ---------------------------------------------------------------------
        n = Signal(range(cap + 1), init=regs["n"])
        drive_form = Signal(init=regs["drive_form"])
        t = Signal(SHIFT_BITS, init=regs["t"])
        d = Signal(signed(SCALE_BITS), init=regs["d"])
        s = Signal(SHIFT_BITS, init=regs["s"])
        tol = Signal(a + 1, init=regs["tol"])
        tol_enable = Signal(init=regs["tol_enable"])
        max_steps = Signal(STEP_COUNT_BITS, init=regs["max_steps"])
        pairwise_form = Signal(init=regs["pairwise_form"])
        angle_shift = Signal(5, init=regs["angle_shift"])
        registers = [n, drive_form, t, d, s, tol, tol_enable, max_steps, pairwise_form,
                     angle_shift]
        left_out = {"pairwise_form": not has_pairwise, "drive_form": not has_drive}
        assert len(registers) == len(REGISTERS)

        # -- units -----------------------------------------------------------------------------
        m.submodules.cordic = cordic = Cordic.create(self.cordic_config, self.cordic_arch)
        lane_cordics, macs = [], []
        for lane in range(lanes):
            macs.append(MacLane(cap))
            m.submodules[f"mac{lane}"] = macs[-1]
            if has_pairwise:
                unit = Cordic.create(self.cordic_config, self.cordic_arch)
                m.submodules[f"lane_cordic{lane}"] = unit
                lane_cordics.append(unit)
                m.d.comb += unit.o.ready.eq(1)
        m.submodules.update = update = StepUpdate(a)
        # Every CORDIC result is taken the clock it appears, so the pipelined units never stall
        # and their inputs are always ready: the non-`stalls` issue logic below relies on that.
        m.d.comb += cordic.o.ready.eq(1)

        # -- sequencer state -------------------------------------------------------------------
        # busy (declared with the k banks) is a register, not decoded from the state: Icarus
        # never evaluates a combinational block whose inputs keep their initial values, and
        # load.ready (= not busy) is read before the first start.
        final = Signal()             # this phase pass is the last (no step follows)
        calm = Signal(range(CONVERGE_STEPS + 1))
        noisy = Signal()             # a free |inc| >= tol in this step
        # An update's noisy bit a clock late (a register beside the update unit: its compare
        # reaching `noisy` directly was a 16-lane ECP5 build's critical path). The last update
        # of a step sets it in time: STEP_END comes two clocks after that update.
        noisy_late = Signal()
        m.d.sync += noisy_late.eq(update.done & update.noisy)
        issue = Signal(range(cap + 1))      # phase pass: next j; drive: next oscillator
        collected = Signal(range(cap + 1))  # CORDIC results taken in this pass
        written = Signal(range(cap + 1))    # accumulators written in this step
        readout = Signal(range(cap + 1))    # phases stream index
        readout_primed = Signal()
        # The readout's next index, items left and "any left" as registers: the acc read
        # address then follows a transfer through one mux (compare, increment and the memory's
        # collision logic in one clock were the 64-lane ECP5 build's critical path).
        readout_ahead = Signal(range(cap + 2))
        readout_left = Signal(range(cap + 1))
        readout_more = Signal()
        # Inputs the main CORDIC accepted in this pass (phases, drive): with `stalls`, what
        # was issued but not yet accepted is issue - fed.
        fed = Signal(range(cap + 1))
        walking = Signal()
        column = Signal(range(cap))
        k_word = Signal(range(k_bank_depth(cfg, lanes) + 1))
        row_base = Signal(range(cap + lanes + 1))       # g P
        head_row = Signal(range(cap + lanes + 1))       # the row at the chain's head
        head_row_next = Signal.like(head_row)           # head_row as it will be next clock
        m.d.comb += head_row_next.eq(head_row)
        m.d.sync += head_row.eq(head_row_next)
        # t + r_i of the head's row and of the row after it, in registers, so the drain's
        # shift amount comes from a register and not through the memory and an adder (that
        # was the 16-lane ECP5 build's critical path). Rows drain in order, one a clock at
        # most, so the memory is read two rows ahead (data(c) = r of head_row(c) + 2) and a
        # drain moves the pair on. The read address is one of two registers (row_ahead =
        # head_row + 2 and the one after), chosen by the drain, not an adder. A pass begins
        # by reading rows 0 and 1 (`row_t_fill`: from the clock after begin_phase_pass, so a
        # row_shift load in a start's clock is seen), long before its first drain (the
        # CORDIC's latency at least). One copy of the head's amount each for C and Z: it
        # fans out to every bit of both shifters.
        row_t_bits = max(SHIFT_BITS, ROW_SHIFT_BITS) + 1
        row_t_c, row_t_z, row_t_after = (Signal(row_t_bits, name=name) for name in
                                         ("row_t_c", "row_t_z", "row_t_after"))
        row_t_fill = Signal(range(4))
        row_ahead = Signal.like(head_row, name="row_ahead")
        row_ahead_after = Signal.like(head_row, name="row_ahead_after")
        t_plus_row = Signal(row_t_bits)
        draining = Signal()         # `drain`, below
        m.d.comb += [rd["row_shift"].addr.eq(Mux(draining, row_ahead_after, row_ahead)),
                     t_plus_row.eq(t + rd["row_shift"].data)]
        with m.If(draining | (row_t_fill >= 2)):        # a drain, or the fill's reads
            m.d.sync += [row_ahead.eq(row_ahead_after), row_ahead_after.eq(row_ahead_after + 1)]
        with m.If(row_t_fill != 0):
            m.d.sync += row_t_fill.eq(row_t_fill - 1)
        with m.If(row_t_fill == 2):
            m.d.sync += [row_t_c.eq(t_plus_row), row_t_z.eq(t_plus_row)]
        with m.If(row_t_fill == 1):
            m.d.sync += row_t_after.eq(t_plus_row)
        walk_done = row_base >= n
        last_column = column == n - 1
        order_cos = Signal(signed(len(self.order.payload.cos)))
        order_sin = Signal(signed(len(self.order.payload.sin)))
        m.d.comb += [self.busy.eq(busy), self.converged.eq(calm == CONVERGE_STEPS),
                     self.order.payload.cos.eq(order_cos), self.order.payload.sin.eq(order_sin)]
        with m.If(busy & ~self.cycles.all()):         # saturates (see `cycles`)
            m.d.sync += self.cycles.eq(self.cycles + 1)
        # max_steps as the run sees it: a load in the clock of the start writes it then.
        max_steps_next = Signal(STEP_COUNT_BITS)
        m.d.comb += max_steps_next.eq(max_steps)

        def begin_phase_pass():
            m.d.sync += [issue.eq(0), collected.eq(0), fed.eq(0), order_cos.eq(0),
                         order_sin.eq(0), column.eq(0), k_word.eq(0), row_base.eq(0)]
            m.d.comb += head_row_next.eq(0)
            m.d.sync += [row_t_fill.eq(3), row_ahead.eq(0), row_ahead_after.eq(1)]

        def walk_column():
            # matvec and pairwise: column j of this group to every lane.
            m.d.comb += walking.eq(1)
            m.d.sync += k_word.eq(k_word + 1)
            with m.If(last_column):
                m.d.sync += [column.eq(0), row_base.eq(row_base + lanes)]
            with m.Else():
                m.d.sync += column.eq(column + 1)

        # The first group's walk follows the phase pass (column j once its cos, sin are in
        # the buffer) and waits only for COUPLING at its last column, whose sums start the
        # rotations: matvec with the pipelined CORDIC (with stalls the CORDIC sets the pace
        # anyway; pairwise lanes would need every theta_i of the group first).
        early_walk = Signal()
        if not stalls:
            m.d.comb += early_walk.eq(~final & ~pairwise_form & ~drive_form & ~last_column
                                      & (column < collected))

        def begin_run():
            with m.If(self.start):
                m.d.sync += [self.steps_taken.eq(0), calm.eq(0), self.cycles.eq(0),
                             final.eq(max_steps_next == 0), self.done.eq(0), busy.eq(1)]
                begin_phase_pass()
                m.next = "PHASES"

        # Pipeline registers of the phase pass (acc read -> theta -> CORDIC).
        p1_valid, p1_index = Signal(), Signal(range(cap))
        p2_valid, p2_index, p2_theta = Signal(), Signal(range(cap)), Signal(p)
        # theta = R(acc, A - P) mod 2**P: the top P bits of acc + half an LSB of theta.
        theta_read = (rd["acc"].data + (1 << (a - p - 1)))[a - p:a]
        m.d.sync += p1_valid.eq(0)
        if stalls:
            # p2 holds its item until the CORDIC takes it; one item in flight (issue == fed
            # gates the issue), so p1 never meets a held p2.
            with m.If(p1_valid):
                m.d.sync += [p2_valid.eq(1), p2_index.eq(p1_index), p2_theta.eq(theta_read)]
            with m.Elif(cordic.i.ready):
                m.d.sync += p2_valid.eq(0)
        else:
            m.d.sync += [p2_valid.eq(p1_valid), p2_index.eq(p1_index), p2_theta.eq(theta_read)]
        with m.If(cordic.i.valid & cordic.i.ready):
            m.d.sync += fed.eq(fed + 1)
        # Rotation input registers of the coupling pass (held until accepted).
        rot_valid = Signal()
        rot_x, rot_y = Signal(signed(SCALE_BITS)), Signal(signed(SCALE_BITS))
        rot_z = Signal(p)
        rot_free = ~rot_valid | cordic.i.ready
        with m.If(rot_free):
            m.d.sync += rot_valid.eq(0)
        drive_valid = Signal()
        m.d.sync += drive_valid.eq(0)
        # Update pipeline: the CORDIC result (pairwise: the row sum) waits a clock for acc, w,
        # pinned.
        u1_valid = Signal()
        u1_x, u1_y = Signal(signed(SCALE_BITS)), Signal(signed(SCALE_BITS))
        m.d.sync += u1_valid.eq(0)

        # The CORDIC input: phases (x = 1.0, y = 0) or a rotation by -theta_i.
        in_phase_pass = Signal()
        m.d.comb += [
            cordic.i.valid.eq(p2_valid | rot_valid),
            cordic.i.payload.x.eq(Mux(in_phase_pass, 1 << f, rot_x)),
            cordic.i.payload.y.eq(Mux(in_phase_pass, 0, rot_y)),
            cordic.i.payload.z.eq(Mux(in_phase_pass, p2_theta, rot_z)),
        ]
        minus_theta = Signal(p)
        m.d.comb += [minus_theta.eq(-p2_theta), wr["theta"].addr.eq(p2_index),
                     wr["theta"].data.eq(minus_theta), wr["theta"].en.eq(p2_valid)]
        # The phase pass writes column j of the walk when its CORDIC result comes back.
        m.d.comb += [wr["columns"].addr.eq(collected),
                     wr["columns"].data.x.eq(cordic.o.payload.x),
                     wr["columns"].data.y.eq(cordic.o.payload.y)]

        # -- the coupling walk: G groups of P rows, n columns each --------------------------------
        # Clock by clock one column j enters the lanes; lane l works on row g P + l of group
        # g and reads k from its own bank at word g n + j (a counter: k_word). In matvec the
        # column, its k address and its flags travel from lane to lane, one register per lane
        # (lane l sees column j l clocks after lane 0): every net stays local, however many
        # lanes there are. Pairwise gives each column to all lanes at once (the lane CORDICs
        # answer together).
        m.d.comb += rd["columns"].addr.eq(column)
        # Stage a1 (the reads arrive): the column's flags; rel_row = j - g P (the antipode's
        # sign), rel_next = j - (g + 1) P (which lane's next row this column is), rows = the
        # group's rows (n - g P: lanes from there on have no row).
        rel_shape = signed(len(row_base) + 2)
        a1_valid, a1_first, a1_last, a1_word = Signal(), Signal(), Signal(), Signal.like(k_word)
        a1_rel_row, a1_rel_next = Signal(rel_shape), Signal(rel_shape)
        a1_rows = Signal(range(cap + 1))
        m.d.sync += [a1_valid.eq(walking), a1_first.eq(column == 0), a1_last.eq(last_column),
                     a1_word.eq(k_word), a1_rel_row.eq(column - row_base),
                     a1_rel_next.eq(column - row_base - lanes), a1_rows.eq(n - row_base)]
        # A group's last column may go out when its sums cannot meet the last group's on the
        # hand-over chain: `settle` clocks after the last one (matvec: its lane l loads the
        # chain l clocks late, and its rows reach the head every other clock; with stalls, the
        # chain must also be empty).
        settle = Signal(range(LOAD_DELAY + 2 * lanes + 1))
        end_gate = Signal()
        with m.If(walking & last_column):
            m.d.sync += settle.eq(LOAD_DELAY + lanes if stalls else 2 * lanes - 2)
        with m.Elif(settle != 0):
            m.d.sync += settle.eq(settle - 1)

        # The systolic chains (matvec): lane l's k address (a clock ahead of its column),
        # column and flags. Lane l reads k with the address one lane back (two clocks ahead of
        # its column; lane 0 with k_word itself) into a register, k_reg: a block RAM's clock
        # to out is 5.6 ns on ECP5, too long to go on to a multiplier in the same clock.
        # write: a k write (valid is 0), its bank in rows.
        flag_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1,
                                         "rows": range(max(cap, lanes) + 1), "write": 1})
        sys_addr = [Signal.like(k_word, name=f"sys_addr{lane}", reset_less=True)
                    for lane in range(lanes)]
        sys_column = [Signal(pair, name=f"sys_column{lane}", reset_less=True)
                      for lane in range(lanes)]
        sys_flags = [Signal(flag_layout, name=f"sys_flags{lane}") for lane in range(lanes)]
        a1_flags = Signal(flag_layout)
        m.d.comb += [a1_flags.valid.eq(a1_valid), a1_flags.first.eq(a1_first),
                     a1_flags.last.eq(a1_last), a1_flags.rows.eq(a1_rows)]
        write_flags = Signal(flag_layout)
        write_column = Signal(pair)
        m.d.comb += [write_flags.write.eq(1), write_flags.rows.eq(k_write_in.bank),
                     write_column.x.eq(k_write_in.data)]
        with m.If(k_write_in.valid):
            m.d.sync += [sys_addr[0].eq(k_write_in.addr), sys_column[0].eq(write_column),
                         sys_flags[0].eq(write_flags)]
        with m.Else():
            m.d.sync += [sys_addr[0].eq(k_word), sys_column[0].eq(rd["columns"].data),
                         sys_flags[0].eq(a1_flags)]
        for lane in range(1, lanes):
            m.d.sync += [sys_addr[lane].eq(sys_addr[lane - 1]),
                         sys_column[lane].eq(sys_column[lane - 1]),
                         sys_flags[lane].eq(sys_flags[lane - 1])]
        lane_flags = sys_flags
        lane_addr = [k_word] + sys_addr[:-1]
        lane_busy = Signal()        # stalls: a pairwise column is in the lane CORDICs
        if has_pairwise:
            flags = Signal(flag_layout.size + len(a1_rel_row))
            m.d.comb += flags.eq(Cat(a1_flags, a1_rel_row))
            angle_valid = Signal()
            m.d.sync += angle_valid.eq(a1_valid & pairwise_form)
            if stalls:
                # One column at a time (the walk waits for lane_busy): its flags and k word
                # wait in registers. Every lane CORDIC gets the column, so all answer at once.
                held_flags, held_word = Signal.like(flags), Signal.like(a1_word)
                with m.If(a1_valid):
                    m.d.sync += [held_flags.eq(flags), held_word.eq(a1_word)]
                answered = lane_cordics[0].o.valid
                with m.If(walking & pairwise_form):
                    m.d.sync += lane_busy.eq(1)
                with m.Elif(answered):
                    m.d.sync += lane_busy.eq(0)
                late = Mux(answered, held_flags, 0)
                late_word = held_word
            else:
                late = delay_line(m, flags, latency + 1, "lane_flags")
                late_word = delay_line(m, a1_word, latency - 1, "lane_word")
            late_flags = late[:flag_layout.size]
            late_rel_row = late[flag_layout.size:].as_signed()
            lane_flags = [Mux(pairwise_form, late_flags, Value.cast(sys)) for sys in sys_flags]
            lane_addr = [Mux(pairwise_form, late_word, ahead) for ahead in lane_addr]
            # Each lane's -theta_i: captured when its row's theta_j passes (the phase pass for
            # group 0, the walk of group g for group g + 1), taken up at the group's first
            # column.
            capture_valid = Mux(in_phase_pass, p2_valid, a1_valid)
            capture_rel = Mux(in_phase_pass, p2_index, a1_rel_next)
            capture_theta = Mux(in_phase_pass, minus_theta, rd["theta"].data)   # -theta_i
        for lane, mac in enumerate(macs):
            flags_in = data.View(flag_layout, lane_flags[lane])
            # A k write passing this lane's bank (see the k banks).
            writing = sys_flags[lane].write & (sys_flags[lane].rows == lane)
            k_addr = Mux(writing, sys_addr[lane], lane_addr[lane])
            bank_rd, bank_wr = rd[f"k{lane}"], wr[f"k{lane}"]
            k_reg = Signal(signed(COUPLING_BITS), name=f"k_reg{lane}", reset_less=True)
            m.d.sync += k_reg.eq(bank_rd.data)
            m.d.comb += [bank_rd.addr.eq(k_addr), bank_wr.addr.eq(k_addr),
                         bank_rd.en.eq(~writing), bank_wr.en.eq(writing),
                         bank_wr.data.eq(sys_column[lane].x[:COUPLING_BITS])]
            # A lane past the group's last row works on nothing: it never ends a row.
            m.d.comb += [mac.valid.eq(flags_in.valid), mac.first.eq(flags_in.first),
                         mac.last.eq(flags_in.last & (flags_in.rows > lane)),
                         mac.k.eq(k_reg)]
            column_in = sys_column[lane]
            if not has_pairwise:
                m.d.comb += [mac.cos.eq(column_in.x), mac.sin.eq(column_in.y)]
                continue
            row_theta = Signal(p, name=f"row_theta{lane}", reset_less=True)
            next_theta = Signal(p, name=f"next_theta{lane}", reset_less=True)
            with m.If(capture_valid & (capture_rel == lane)):
                m.d.sync += next_theta.eq(capture_theta)
            theta_i = Mux(a1_first, next_theta, row_theta)
            with m.If(a1_valid & a1_first):
                m.d.sync += row_theta.eq(next_theta)
            angle = Signal(p, name=f"angle{lane}", reset_less=True)
            m.d.sync += angle.eq(theta_i - rd["theta"].data)      # theta_j - theta_i
            unit = lane_cordics[lane]
            m.d.comb += [unit.i.valid.eq(angle_valid), unit.i.payload.x.eq(1 << f),
                         unit.i.payload.y.eq(0), unit.i.payload.z.eq(angle)]
            # The antipode: sin(pi) is one angle for (i, j) and (j, i); the pair's order
            # gives the sign (+1 for j > i), so the pair separates.
            sin_ij, cos_ij = unit.o.payload.y, unit.o.payload.x
            antipode = (sin_ij == 0) & (cos_ij < 0)
            sin_nudged = Mux(antipode, Mux(late_rel_row > lane, 1, -1), sin_ij)
            m.d.comb += [mac.cos.eq(Mux(pairwise_form, cos_ij, column_in.x)),
                         mac.sin.eq(Mux(pairwise_form, sin_nudged, column_in.y))]

        # -- the hand-over chain: the finished rows, in order, one per clock at the head ----------
        # Lane l loads element l when its row ends (matvec: l clocks after lane 0; pairwise:
        # all at once); elements move towards the head (element 0) every clock (with stalls:
        # while the head is empty or taken). The head goes to the h register, then to the
        # rotation by -theta_i (matvec) or straight to the update (pairwise).
        width = macs[0].width
        chain_c = [Signal(signed(width), name=f"chain_c{lane}", reset_less=True)
                   for lane in range(lanes)]
        chain_z = [Signal(signed(width), name=f"chain_z{lane}", reset_less=True)
                   for lane in range(lanes)]
        chain_valid = Signal(lanes)
        h_valid, h_row = Signal(), Signal(range(cap + lanes + 1))
        # h holds (v << 1) >> (t + r_i) of the row's sums (`round_shift_split`: R(v, t + r_i)
        # fits 18 bits, so this fits 20); the rounding finishes on the way out.
        h_c = Signal(signed(SCALE_BITS + 2), reset_less=True)
        h_z = Signal(signed(SCALE_BITS + 2), reset_less=True)
        h_advance = h_valid & Mux(pairwise_form, 1, rot_free)
        h_free = ~h_valid | h_advance
        drain = chain_valid[0] & h_free
        m.d.comb += draining.eq(drain)
        # Without stalls the head is always taken: the chain then shifts every clock, so its
        # thousands of registers need no shift enable.
        shift = (~chain_valid[0] | h_free) if stalls else 1
        for lane, mac in enumerate(macs):
            above = lanes - 1 > lane
            with m.If(mac.done):
                m.d.sync += [chain_c[lane].eq(mac.c), chain_z[lane].eq(mac.z),
                             chain_valid[lane].eq(1)]
            with m.Elif(shift):
                m.d.sync += chain_valid[lane].eq(chain_valid[lane + 1] if above else 0)
                if above:
                    m.d.sync += [chain_c[lane].eq(chain_c[lane + 1]),
                                 chain_z[lane].eq(chain_z[lane + 1])]
        h_load = [h_c.eq(round_shift_split(chain_c[0], row_t_c)),
                  h_z.eq(round_shift_split(chain_z[0], row_t_z))]
        if not stalls:
            # h is taken the clock after it loads, so it may load every clock: `drain` then
            # fans out to the few registers below, not to h's 40 (its fan-out was the 16-lane
            # ECP5 build's critical path).
            m.d.sync += h_load
        with m.If(drain):
            if stalls:
                m.d.sync += h_load
            m.d.sync += [h_valid.eq(1), h_row.eq(head_row),
                         row_t_c.eq(row_t_after), row_t_z.eq(row_t_after),
                         row_t_after.eq(t_plus_row)]
            m.d.comb += head_row_next.eq(head_row + 1)
        with m.Elif(h_advance):
            m.d.sync += h_valid.eq(0)
        if stalls:
            m.d.comb += end_gate.eq((settle == 0) & (chain_valid == 0))
        else:
            m.d.comb += end_gate.eq(settle == 0)
        # theta: drive reads theta_i with the drive; pairwise theta_j with the walk; matvec
        # theta_i of the row entering h, and h's row while h waits (only with stalls: without
        # them h never waits). The buffer holds -theta.
        matvec_theta_row = Mux(drain, head_row, h_row) if stalls else head_row
        m.d.comb += rd["theta"].addr.eq(Mux(drive_form, issue, Mux(
            pairwise_form, column, matvec_theta_row)))

        # With both form registers set the pass is drive's (see COUPLING).
        pairwise_pass = pairwise_form & ~drive_form
        # The update unit: acc, w, pinned were read at the CORDIC result's clock.
        m.d.comb += [update.valid.eq(u1_valid), update.x.eq(u1_x), update.y.eq(u1_y),
                     update.acc.eq(rd["acc"].data), update.w.eq(rd["w"].data),
                     update.pinned.eq(rd["pinned"].data), update.d.eq(d), update.s.eq(s),
                     update.tol.eq(tol), update.angle_shift.eq(angle_shift),
                     update.nudge.eq(~pairwise_pass)]
        m.d.comb += [self.update.valid.eq(update.done), self.update.index.eq(written),
                     self.update.acc.eq(update.new_acc)]

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                begin_run()

            with m.State("PHASES"):
                m.d.comb += [in_phase_pass.eq(1), rd["acc"].addr.eq(issue)]
                with m.If(early_walk):
                    walk_column()
                with m.If((issue < n) & ((issue == fed) if stalls else 1)):
                    m.d.sync += [issue.eq(issue + 1), p1_valid.eq(1), p1_index.eq(issue)]
                with m.If(cordic.o.valid):
                    m.d.comb += wr["columns"].en.eq(1)
                    m.d.sync += [collected.eq(collected + 1),
                                 order_cos.eq(order_cos + cordic.o.payload.x),
                                 order_sin.eq(order_sin + cordic.o.payload.y)]
                with m.Elif(collected == n):
                    m.next = "ORDER"

            with m.State("ORDER"):
                m.d.comb += [self.order.valid.eq(1)]
                with m.If(early_walk):
                    walk_column()
                with m.If(self.order.ready):
                    with m.If(final):
                        m.d.sync += [self.done.eq(1), busy.eq(0), readout.eq(0),
                                     readout_primed.eq(0), readout_ahead.eq(1),
                                     readout_left.eq(n), readout_more.eq(n != 0)]
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [issue.eq(0), collected.eq(0), written.eq(0), noisy.eq(0),
                                     fed.eq(0)]
                        m.next = "COUPLING"

            with m.State("COUPLING"):
                if stalls:
                    # One drive item in flight; pairwise: one column in the lane CORDICs.
                    drive_ok = issue == fed
                    walk_ok = Mux(pairwise_form, ~lane_busy, ~last_column | end_gate)
                else:
                    drive_ok = 1
                    walk_ok = pairwise_form | ~last_column | end_gate
                with m.If(drive_form):
                    with m.If((issue < n) & drive_ok):
                        if has_drive:
                            m.d.comb += rd["drive"].addr.eq(issue)
                        m.d.sync += [issue.eq(issue + 1), drive_valid.eq(1)]
                with m.Elif(~walk_done & walk_ok):
                    walk_column()
                if has_drive:
                    with m.If(drive_valid):
                        m.d.sync += [rot_valid.eq(1), rot_x.eq(rd["drive"].data.x),
                                     rot_y.eq(rd["drive"].data.y),
                                     rot_z.eq(rd["theta"].data)]
                with m.If(h_advance & ~pairwise_form):
                    m.d.sync += [rot_valid.eq(1),
                                 rot_x.eq(round_shift_finish(h_c)[:SCALE_BITS]),
                                 rot_y.eq(round_shift_finish(h_z)[:SCALE_BITS]),
                                 rot_z.eq(rd["theta"].data)]
                # Results come back in order: result `collected` belongs to oscillator
                # `collected`; read its acc, w, pinned now, update next clock. Pairwise: the
                # row sum S_i is the result, R(S_i, t + r_i) the update's y, R(C_i, t + r_i)
                # its x (no nudge: the pairs have their own).
                # With both form registers set the pass is drive's (the branch above), so its
                # results come from the CORDIC: waiting for pairwise row sums there would
                # never end (a deadlock the formal response proof found).
                m.d.comb += [rd["acc"].addr.eq(collected), rd["w"].addr.eq(collected),
                             rd["pinned"].addr.eq(collected)]
                with m.If(Mux(pairwise_pass, h_valid, cordic.o.valid)):
                    m.d.sync += [
                        collected.eq(collected + 1), u1_valid.eq(1),
                        u1_x.eq(Mux(pairwise_pass, round_shift_finish(h_c)[:SCALE_BITS],
                                    cordic.o.payload.x)),
                        u1_y.eq(Mux(pairwise_pass, round_shift_finish(h_z)[:SCALE_BITS],
                                    cordic.o.payload.y))]
                with m.If(update.done):
                    m.d.comb += [wr["acc"].addr.eq(written), wr["acc"].data.eq(update.new_acc),
                                 wr["acc"].en.eq(1)]
                    m.d.sync += written.eq(written + 1)
                with m.Elif(written == n):
                    m.next = "STEP_END"
                with m.If(noisy_late):
                    m.d.sync += noisy.eq(1)

            with m.State("STEP_END"):
                taken = self.steps_taken + 1
                calm_next = Mux(tol_enable & ~noisy, Mux(calm == CONVERGE_STEPS, calm, calm + 1),
                                0)
                m.d.sync += [self.steps_taken.eq(taken), calm.eq(calm_next),
                             final.eq((taken == max_steps) | (calm_next == CONVERGE_STEPS))]
                begin_phase_pass()
                m.next = "PHASES"

            with m.State("DONE"):
                # phases: rd acc holds acc[readout]; the address runs one ahead on a transfer.
                # The run's n items (a load of n after the run does not change them).
                fire = self.phases.valid & self.phases.ready
                m.d.comb += [rd["acc"].addr.eq(Mux(fire, readout_ahead, readout)),
                             self.phases.payload.eq(rd["acc"].data),
                             self.phases.valid.eq(readout_primed & readout_more)]
                m.d.sync += readout_primed.eq(1)
                with m.If(fire):
                    m.d.sync += [readout.eq(readout_ahead), readout_ahead.eq(readout_ahead + 1),
                                 readout_left.eq(readout_left - 1),
                                 readout_more.eq(readout_left != 1)]
                begin_run()

        # -- load port: writes while idle or done (and in the clock of a start) --------------
        m.d.comb += self.load.ready.eq(~busy)
        load_item = self.load.payload
        with m.If(self.load.valid & ~busy):
            with m.Switch(load_item.target):
                for name in ("acc", "w", "pinned", "row_shift", "drive"):
                    if name not in wr:
                        continue        # the drive memory of a build without drive
                    with m.Case(TARGETS[name]):
                        port = wr[name]
                        # An address >= capacity is ignored (not aliased onto a low one).
                        m.d.comb += [port.addr.eq(load_item.addr),
                                     port.en.eq(load_item.addr < cap),
                                     port.data.eq(load_item.data[:len(Value.cast(port.data))])]
                with m.Case(TARGETS["k"]):
                    # Into the walk's systolic chains (see the k banks).
                    # A bank >= P or a word beyond the bank is ignored (not aliased).
                    k_bank, k_word_in = load_item.addr[word_bits:], load_item.addr[:word_bits]
                    m.d.comb += [k_write_in.valid.eq((k_bank < lanes) & (k_word_in < bank_depth)),
                                 k_write_in.bank.eq(k_bank),
                                 k_write_in.addr.eq(k_word_in),
                                 k_write_in.data.eq(load_item.data[:COUPLING_BITS])]
                with m.Case(TARGETS["reg"]):
                    with m.Switch(load_item.addr):
                        for register, (key, address) in zip(registers, REGISTERS.items()):
                            with m.Case(address):
                                # A form this build leaves out stays unselected (0).
                                if left_out.get(key, False):
                                    continue
                                m.d.sync += register.eq(load_item.data[:len(register)])
                                if key == "max_steps" and self.start_sees_load:
                                    m.d.comb += max_steps_next.eq(
                                        load_item.data[:len(register)])
        return m
