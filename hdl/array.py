"""The Kuramoto array engine: Euler steps of a coupled-oscillator array in hardware.

The arithmetic is specified bit for bit by `oscarray.golden.array_fixed` (read its module
docstring for the formats); this module builds the three forms (pairwise, matvec, drive; the
form is a run register, so one build serves every case; `forms` may leave some out) around
one CORDIC for the phases and rotations (`oscarray.hdl.cordic`; pipelined, or iterative for
area: `cordic_arch`), plus `lanes` (P, 1..16) coupling lanes: each lane has its own CORDIC
(pairwise only) and its own MAC pair (matvec).

One Euler step, as the sequencer runs it:

    phases   for j < n: theta_j = R(acc_j, A - P) mod 2**P into the CORDIC (x = 2**F, y = 0);
             the results (cos_j, sin_j) and theta_j go to buffers (one copy per lane, so every
             lane reads its own column each clock) and into the order sums. The sums leave
             on the `order` stream. This pass also runs once after the last step (the final
             order sums), so `order` carries steps_taken + 1 items, as `run_fixed`.
    coupling the n**2 terms (i, j) in row-major order, P per clock: term q = i n + j goes to
             lane q mod P, and the k memory is banked the same way (bank q mod P, word
             q div P), so the P lanes of one clock read one word address. A clock may hold
             the end of row i and the start of row i + 1 (never two row ends: with n < P the
             clock stops early), so a step issues in ceil(n**2 / P) clocks for n >= P
             (`issue_clocks`).
             pairwise: lane l takes (theta_j - theta_i) mod 2**P into its CORDIC; the result
             sin_ij (or, on the exact antipode, +1 for j > i and -1 for j < i) times k_ij
             goes to the MAC unit, which sums the lanes of each row: S_i; then R(S_i, t)
             is the update's input directly.
             matvec: lane l multiplies k_ij by cos_j and sin_j; the MAC unit sums the lanes
             per row: C_i, Z_i; each finished row goes into the CORDIC as
             (R(C_i, t), R(Z_i, t)) rotated by -theta_i, while the next rows accumulate.
             drive: (h_x, h_y) of each oscillator, one per clock, rotated by -theta_i (the
             lanes are idle).
    update   each rotation result y (pairwise: R(S_i, t)), nudged off the exact antipode (not
             in pairwise form: x = 0 there), gives inc_i = w_i + R(y * D, s) (0 when
             pinned); acc_i += inc_i (mod 2**A); the step is calm when every free |inc_i|
             (wrapped to A bits) is below tol.

The run stops after `max_steps` steps or after CONVERGE_STEPS calm steps in a row (when tol
is enabled); then `done` rises and the `phases` stream gives the final accumulators.

Clocks per step (L = CORDIC latency, 32 by default; T = ceil(log2 P), the lane adder tree;
I = `issue_clocks(n, P)`, = ceil(n**2 / P) for n >= P): pairwise and matvec
n + I + 2L + T + 13, drive 2n + 2L + 11 (`cycles_per_step`). The phase pass and the
coupling pass do not overlap yet. With the iterative CORDIC (C = 63 clocks per result) the
passes are CORDIC-bound: about 2n(C + 1) per step in every form (see `cycles_per_step`).

Contents: memories and run registers start from the `QuantizedCase` given at elaboration
(Memory init, reset values) and can be rewritten between runs through the `load` stream
(target, address, data); `load_writes(q, lanes=P)` is that encoding of a case. One build
therefore serves every case up to `capacity` oscillators.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import numpy as np

from ..golden.array_fixed import (COUPLING_BITS, CONVERGE_STEPS, FORMS, SCALE_BITS,
                                  ArrayFixedConfig, QuantizedCase)
from .cordic import ARCHITECTURES, Cordic

__all__ = ["ArrayEngine", "MacUnit", "StepUpdate", "ArrayEngineError", "check_config",
           "check_case", "check_lanes", "TARGETS", "REGISTERS", "MAX_CAPACITY", "MAX_LANES",
           "load_writes", "load_layout", "order_layout", "cycles_per_step", "cycles_per_run",
           "issue_clocks", "k_bank_bits", "iterative_cycles_per_result", "ENGINE_FORMS",
           "round_shift_var", "check_forms", "check_cordic_arch", "NO_INIT_SUFFIX", "mul_dsp16",
           "dsp16_platform"]

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

#: Coupling lanes (pairwise CORDICs, matvec MAC pairs): 1..MAX_LANES.
MAX_LANES = 16

#: `load` targets: which memory (or the run registers) a write goes to.
TARGETS = {"acc": 0, "w": 1, "k": 2, "pinned": 3, "drive": 4, "reg": 5}

#: Run registers (`load` target "reg", address below).
REGISTERS = {"n": 0, "drive_form": 1, "t": 2, "d": 3, "s": 4, "tol": 5, "tol_enable": 6,
             "max_steps": 7, "pairwise_form": 8}

SHIFT_BITS = 6            # t and s: R(., t), R(., s) with shifts up to 63
STEP_COUNT_BITS = 32      # max_steps and steps_taken
CYCLE_COUNT_BITS = 48


class ArrayEngineError(ValueError):
    """Parameters or a case that this engine cannot hold."""


def round_shift_var(value, amount):
    """R(value, amount) for a run-time shift: (v >> a) + v[a - 1], and v for a = 0.

    The rounding bit is bit a - 1 of v, read as bit 0 of (v << 1) >> a, so a = 0 needs no
    special case (it reads the 0 shifted in). A signed v keeps its sign through the shift, so a
    shift past its width gives -1 + 1 = 0 for negative v, as (v + 2**(a-1)) >> a does.
    """
    return (value >> amount) + ((value << 1) >> amount)[0]


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


def k_bank_bits(config: ArrayFixedConfig, lanes: int = 1) -> int:
    """Word address bits of one k bank: capacity**2 couplings over `lanes` banks."""
    words = -(-config.capacity ** 2 // lanes)
    return max(1, (words - 1).bit_length())


def _addr_bits(config: ArrayFixedConfig, lanes: int = 1) -> int:
    # k addresses are (bank, word): bank in the bits above the bank's word address.
    return max(1, (config.capacity ** 2 - 1).bit_length(),
               k_bank_bits(config, lanes) + (lanes - 1).bit_length())


def _data_bits(config: ArrayFixedConfig) -> int:
    # The widest write: tol (A + 1 bits), a drive pair (2 x 18), max_steps (32).
    return max(config.acc_bits + 1, 2 * SCALE_BITS, STEP_COUNT_BITS)


def load_layout(config: ArrayFixedConfig, lanes: int = 1) -> data.StructLayout:
    """One `load` write: data (low bits), addr, target (see TARGETS)."""
    return data.StructLayout({"data": unsigned(_data_bits(config)),
                              "addr": unsigned(_addr_bits(config, lanes)),
                              "target": unsigned(3)})


def issue_clocks(n: int, lanes: int = 1) -> int:
    """Clocks the coupling pass takes to issue the n**2 terms on `lanes` lanes.

    Term q = i n + j runs on lane q mod P; a clock takes the lanes from where the last one
    stopped up to P - 1, but at most one row end: it stops before the end of row i + 1.
    That never happens for n >= P, so then this is ceil(n**2 / P)."""
    if n >= lanes:
        return -(-n * n // lanes)
    return _walk(n, lanes)[0]


def _tree_levels(lanes: int) -> int:
    return (lanes - 1).bit_length()


def _walk(n: int, lanes: int) -> tuple[int, list]:
    """The coupling walk of `issue_clocks`: (clocks, the 0-based clock of each row end)."""
    ends, clock, start, i, j = [], 0, 0, 0, 0
    while i < n:
        limit = n if i + 1 == n else 2 * n - 1
        count = min(lanes - start, limit - j)
        j += count
        if j >= n:
            i, j = i + 1, j - n
            ends.append(clock)
        start = 0 if start + count == lanes else start + count
        clock += 1
    return clock, ends


def _row_end_clocks(n: int, lanes: int) -> list:
    """The walk clock (0-based) that issues the end of each row, as `issue_clocks` walks."""
    return _walk(n, lanes)[1]


def iterative_cycles_per_result(config: ArrayFixedConfig) -> int:
    """C: clocks from an input handshake to the output handshake of the iterative CORDIC of
    the engine's format (63 for the default); it takes the next input one clock later."""
    from .cordic_iterative import CordicIterative
    unit = CordicIterative(config.cordic)
    unit._MustUse__silence = True
    return unit.cycles_per_result


def cycles_per_step(config: ArrayFixedConfig, n: int, form: str, ideal: bool = False,
                    lanes: int = 1, cordic_arch: str = "pipelined") -> int:
    """Clocks of one Euler step of n oscillators (the order stream always ready).

    ideal: the phase pass n + L, then the coupling work spread over the lanes
    (ceil(n**2 / P), or n in drive form) + L (pairwise: the lane CORDICs; matvec and drive:
    the rotation). This architecture adds a fixed pipeline overhead: the phase pass 4 (acc
    read, theta register, the all-collected check, ORDER), the lane adder tree
    ceil(log2 P), and 9 in matvec (k/cs read, product and accumulate registers, rotation
    input, result register, two update stages, the all-written check, STEP_END) and in
    pairwise (k/theta read, angle register, product and accumulate registers, update input
    register, two update stages, the all-written check, STEP_END), 7 in drive (drive read,
    rotation input, result register, two update stages, the checks). The issue stretches to
    `issue_clocks` when n < P (at most one row end per clock).

    cordic_arch="iterative" (C = `iterative_cycles_per_result`, 63 by default; a new input
    C + 1 clocks after the last): the phase pass n (C + 1) + 4; drive n (C + 1) + 7; pairwise
    (I - 1)(C + 3) + C + T + 10 (one lane batch at a time: walk, angle, C, handback); matvec
    by the recurrence in `_matvec_iterative_coupling` (a row end waits until every earlier row
    is in the CORDIC; rows go in C + 1 apart, so n (C + 1) + T + 10 + C when the rows are
    shorter than C + 1 walk clocks, about I + C + T + 10 when they are much longer). `ideal`
    is the pipelined engine's.
    """
    check_lanes(lanes)
    check_cordic_arch(cordic_arch)
    latency = config.cordic.latency_pipelined
    if cordic_arch == "iterative" and not ideal:
        c = iterative_cycles_per_result(config)
        phases = n * (c + 1) + 4
        tree = _tree_levels(lanes)
        if form == "drive":
            return phases + n * (c + 1) + 7
        if form == "pairwise":
            return phases + (issue_clocks(n, lanes) - 1) * (c + 3) + c + tree + 10
        return phases + _matvec_iterative_coupling(n, lanes, c)
    if form == "drive":
        return n + latency + n + latency + (0 if ideal else 4 + 7)
    if ideal:
        return n + latency + -(-n * n // lanes) + latency
    overhead = 4 + _tree_levels(lanes) + 9
    return n + latency + issue_clocks(n, lanes) + latency + overhead


def _matvec_iterative_coupling(n: int, lanes: int, c: int) -> int:
    """The matvec coupling pass with the iterative CORDIC (C = c), from COUPLING to STEP_END.

    Row r's end is issued at E_r: its walk clock, pushed back by every stall so far, and not
    before the clock after A_{r-1} (row r-1 into the CORDIC). Its c, z reach the rotation
    input T + 4 clocks later; the CORDIC takes it at A_r, at least C + 1 after A_{r-1}. The
    last result comes C after A_{n-1}, and 6 more clocks update, write and end the step."""
    tree = _tree_levels(lanes)
    ends = _row_end_clocks(n, lanes)
    end_clock, taken, last_walk = None, None, None
    for walk in ends:
        if end_clock is None:
            end_clock = walk
        else:
            end_clock = max(end_clock + walk - last_walk, taken + 1)
        rotation_in = end_clock + tree + 4
        taken = rotation_in if taken is None else max(rotation_in, taken + c + 1)
        last_walk = walk
    return taken + c + 6


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


def check_forms(forms) -> tuple:
    """forms as a tuple in ENGINE_FORMS order: a non-empty collection of form names, each once
    (ArrayEngineError; TypeError for a bare string or a non-collection)."""
    if isinstance(forms, str) or not isinstance(forms, (tuple, list, set, frozenset)):
        raise TypeError(f"forms must be a tuple of form names such as ('matvec', 'drive'), "
                        f"not {forms!r}")
    unknown = [f for f in forms if f not in ENGINE_FORMS]
    if unknown:
        raise ArrayEngineError(f"unknown form(s) {', '.join(map(repr, unknown))} in forms; "
                               f"choose from {', '.join(ENGINE_FORMS)}")
    if not forms or len(set(forms)) != len(forms):
        raise ArrayEngineError(f"forms must name each form at most once and at least one, "
                               f"not {tuple(forms)!r}")
    return tuple(f for f in ENGINE_FORMS if f in forms)


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
    if q.drive is not None and np.abs(q.drive).max(initial=0) >= 2 ** (SCALE_BITS - 1):
        raise ArrayEngineError(f"the drive exceeds {SCALE_BITS} signed bits")


def _case_registers(config: ArrayFixedConfig, q: QuantizedCase) -> dict:
    a = config.acc_bits
    tol = 0 if q.tol is None else int(q.tol)
    # |inc| <= 2**(A-1) after wrapping: any tol above that is "always calm", so clamping it
    # to 2**A (A + 1 register bits) changes nothing; tol <= 0 is "never calm".
    return {"n": q.n, "drive_form": int(q.form == "drive"), "t": q.t, "d": q.d, "s": q.s,
            "tol": min(max(tol, 0), 2 ** a), "tol_enable": int(q.tol is not None),
            "max_steps": q.steps, "pairwise_form": int(q.form == "pairwise")}


def _case_memories(config: ArrayFixedConfig, q: QuantizedCase) -> dict:
    """Memory name -> list of (address, value); unlisted words are 0."""
    a, n = config.acc_bits, q.n
    mask = (1 << a) - 1
    drive = q.drive if q.drive is not None else np.zeros((n, 2), np.int64)
    # k is stored row by row with stride n (not capacity): term q = i * n + j, so the lanes
    # walk the memory with one counter (`load_writes` splits q into bank and word).
    return {
        "acc": [(i, int(v) & mask) for i, v in enumerate(q.acc0)],
        "w": [(i, int(v) & mask) for i, v in enumerate(q.w)],     # w mod 2**A: sums wrap
        "k": [(i, int(v)) for i, v in enumerate(np.asarray(q.k).reshape(-1))],
        "pinned": [(i, int(v)) for i, v in enumerate(q.pinned)],
        "drive": [(i, (int(x), int(y))) for i, (x, y) in enumerate(drive)],
    }


def load_writes(q: QuantizedCase, config: ArrayFixedConfig | None = None,
                lanes: int = 1, forms=ENGINE_FORMS) -> np.ndarray:
    """The `load` writes that put case `q` into an engine of `lanes` lanes: (M, 3) int64
    rows of (target, addr, data), registers last. Signed values are written as their two's
    complement in the memory's width; coupling q = i n + j goes to bank q mod P, word
    q div P, at address bank * 2**k_bank_bits + word. `forms`: the engine's (a case in a form
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
                addr = ((addr % lanes) << word_bits) | (addr // lanes)
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


# ---------------------------------------------------------------------------------------------
# Components

class MacUnit(wiring.Component):
    """P lanes of two multiply-accumulates per clock, summed per row: C += k cos, Z += k sin.

    The terms of one clock are P consecutive terms of the row-major walk: the lanes that
    belong to the current row, then (after its end) those that start the next row.

    Ports
    -----
    valid : In(P)                lane l has a term
    hi : In(P)                   lane l's term belongs to the next row (after the row end)
    end : In(1)                  the current row ends in this clock
    k : In(P x signed(16))       the couplings k_ij
    cos, sin : In(P x signed(18))
                                 the factors (cos_j, sin_j; pairwise: sin only)
    done : Out(1)                one clock, `latency` clocks after a clock with `end`: c and
                                 z hold that row's sums
    c, z : Out(signed(W))        sum_j k_ij cos_j and sum_j k_ij sin_j, W = 34 + bits(capacity)

    dsp16: multiply with one 16 x 16 DSP per product (`mul_dsp16`); None (default): on
    iCE40 platforms (`dsp16_platform`), where Yosys would use two SB_MAC16 per 16 x 18.

    The products are registered (one DSP stage), then the lanes go through an adder tree
    with a register per level (ceil(log2 P) levels), then into the accumulators. Rows
    start from 0: the accumulators are 0 at reset and after every row end without a next
    row.
    """

    def __init__(self, capacity: int, lanes: int = 1, dsp16: bool | None = None):
        self.lanes = check_lanes(lanes)
        self.dsp16 = dsp16
        self.width = COUPLING_BITS + SCALE_BITS + capacity.bit_length()
        super().__init__({
            "valid": In(lanes), "hi": In(lanes), "end": In(1),
            "k": In(data.ArrayLayout(signed(COUPLING_BITS), lanes)),
            "cos": In(data.ArrayLayout(signed(SCALE_BITS), lanes)),
            "sin": In(data.ArrayLayout(signed(SCALE_BITS), lanes)),
            "done": Out(1), "c": Out(signed(self.width)), "z": Out(signed(self.width)),
        })

    @property
    def latency(self) -> int:
        return 2 + _tree_levels(self.lanes)

    def elaborate(self, platform):
        m = Module()
        lanes, width = self.lanes, self.width
        product_shape = signed(COUPLING_BITS + SCALE_BITS)
        dsp16 = dsp16_platform(platform) if self.dsp16 is None else self.dsp16
        multiply = mul_dsp16 if dsp16 else (lambda a, b: a * b)
        valid, hi = Signal(lanes), Signal(lanes)
        any_valid, end = Signal(), Signal()
        m.d.sync += [valid.eq(self.valid), hi.eq(self.hi), any_valid.eq(self.valid.any()),
                     end.eq(self.end)]
        # Four sums per clock: (current row, next row) x (c, z).
        sums = {key: [] for key in ("lo_c", "lo_z", "hi_c", "hi_z")}
        for lane in range(lanes):
            pc = Signal(product_shape, name=f"pc{lane}")
            ps = Signal(product_shape, name=f"ps{lane}")
            m.d.sync += [pc.eq(multiply(self.k[lane], self.cos[lane])),
                         ps.eq(multiply(self.k[lane], self.sin[lane]))]
            lo_lane, hi_lane = valid[lane] & ~hi[lane], valid[lane] & hi[lane]
            sums["lo_c"].append(Mux(lo_lane, pc, 0))
            sums["lo_z"].append(Mux(lo_lane, ps, 0))
            sums["hi_c"].append(Mux(hi_lane, pc, 0))
            sums["hi_z"].append(Mux(hi_lane, ps, 0))
        # The adder tree: one register per level.
        for level in range(_tree_levels(lanes)):
            for key, terms in sums.items():
                summed = []
                for pair in range(0, len(terms), 2):
                    total = Signal(signed(width), name=f"{key}_t{level}_{pair // 2}")
                    m.d.sync += total.eq(sum(terms[pair:pair + 2]))
                    summed.append(total)
                sums[key] = summed
            any_next, end_next = Signal(name=f"any_t{level}"), Signal(name=f"end_t{level}")
            m.d.sync += [any_next.eq(any_valid), end_next.eq(end)]
            any_valid, end = any_next, end_next
        (lo_c,), (lo_z,), (hi_c,), (hi_z,) = sums.values()
        acc_c, acc_z = Signal(signed(width)), Signal(signed(width))
        m.d.sync += self.done.eq(any_valid & end)
        with m.If(any_valid):
            with m.If(end):
                m.d.sync += [self.c.eq(acc_c + lo_c), self.z.eq(acc_z + lo_z),
                             acc_c.eq(hi_c), acc_z.eq(hi_z)]
            with m.Else():
                m.d.sync += [acc_c.eq(acc_c + lo_c), acc_z.eq(acc_z + lo_z)]
        return m


class StepUpdate(wiring.Component):
    """One oscillator's update from its rotation result (latency 2, one per clock).

    Ports
    -----
    valid : In(1)                  the inputs below are present
    x, y : In(signed(18))          the CORDIC's rotation of the coupling vector by -theta_i
    acc : In(unsigned(A))          acc_i before the step
    w : In(unsigned(A))            w_i mod 2**A
    pinned : In(1)                 oscillator i never moves
    d : In(signed(18)), s : In(6)  step scale D * 2**-s
    tol : In(unsigned(A + 1))      calm threshold (accumulator units)
    done : Out(1)                  new_acc and noisy are valid (2 clocks after valid)
    new_acc : Out(unsigned(A))     acc_i + inc_i mod 2**A, inc_i = w_i + R(y' D, s), 0 if pinned
    noisy : Out(1)                 a free oscillator with |inc_i| >= tol (the step is not calm)

    y' is y nudged off the exact antipode: y = 0 with x < 0 reads +1 (`nudge_antipode`).
    dsp16: as `MacUnit`'s (the 18 x 18 product on one 16 x 16 DSP on iCE40).
    """

    def __init__(self, acc_bits: int, dsp16: bool | None = None):
        self.acc_bits = acc_bits
        self.dsp16 = dsp16
        a = acc_bits
        super().__init__({
            "valid": In(1), "x": In(signed(SCALE_BITS)), "y": In(signed(SCALE_BITS)),
            "acc": In(unsigned(a)), "w": In(unsigned(a)), "pinned": In(1),
            "d": In(signed(SCALE_BITS)), "s": In(unsigned(SHIFT_BITS)),
            "tol": In(unsigned(a + 1)),
            "done": Out(1), "new_acc": Out(unsigned(a)), "noisy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        a = self.acc_bits
        # Stage 1: nudge and multiply (one DSP).
        nudged = Mux((self.y == 0) & (self.x < 0), 1, self.y)
        product = Signal(signed(2 * SCALE_BITS))
        acc1, w1 = Signal(a), Signal(a)
        pinned1, valid1 = Signal(), Signal()
        dsp16 = dsp16_platform(platform) if self.dsp16 is None else self.dsp16
        m.d.sync += [product.eq(mul_dsp16(_widen18(nudged), self.d) if dsp16
                                else nudged * self.d), acc1.eq(self.acc), w1.eq(self.w),
                     pinned1.eq(self.pinned), valid1.eq(self.valid)]
        # Stage 2: round, add omega; everything mod 2**A from here (the accumulator wraps,
        # and the detector reads inc wrapped to A bits, as `run_fixed`).
        inc = Signal(signed(a))
        acc2, pinned2 = Signal(a), Signal()
        m.d.sync += [inc.eq(Mux(pinned1, 0, w1 + round_shift_var(product, self.s))),
                     acc2.eq(acc1), pinned2.eq(pinned1), self.done.eq(valid1)]
        magnitude = Mux(inc < 0, -inc, inc)
        m.d.comb += [self.new_acc.eq(acc2 + inc),
                     self.noisy.eq(~pinned2 & (magnitude >= self.tol))]
        return m


class ArrayEngine(wiring.Component):
    """The array engine: the three forms (or those in `forms`), one CORDIC for phases and
    rotations, `lanes` coupling lanes (a CORDIC, if pairwise is built, and a MAC pair each).

    Parameters
    ----------
    config : ArrayFixedConfig   formats and capacity (at most MAX_CAPACITY oscillators)
    case : QuantizedCase or None
        The contents at reset (Memory init and register reset values); None: all zero.
    lanes : int                 P, 1..MAX_LANES: pairwise terms (CORDIC evaluations) and
                                matvec MAC pairs per clock; the k memory has P banks.
    forms : tuple of str        the forms this build runs (default all of ENGINE_FORMS).
                                Without "pairwise" the lane CORDICs, the lanes' theta copies
                                and theta_next are left out (matvec needs only the MAC pairs);
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
    cycles : Out(48)       clocks from start to done (counts while busy)
    converged : Out(1)     the detector stopped the run (CONVERGE_STEPS calm steps, tol enabled)
    order : Out(stream)    (cos, sin) = (sum_j cos_j, sum_j sin_j) of each state, before each
                           step and after the last: steps_taken + 1 items per run. The engine
                           waits while an item is not accepted.
    phases : Out(stream)   after done: the final accumulators acc_0 .. acc_{n-1} (unsigned A
                           bits), once per run, in order
    update : Out(valid, index, acc)
                           an observation port: one clock per accumulator write during a run,
                           n per step in index order (for traces; ignore it otherwise)
    load : In(stream)      writes (target, addr, data) while not busy (ready = not busy):
                           acc/w (A bits, w mod 2**A), k (16-bit two's complement, row-major
                           with stride n: k_ij is term q = i * n + j, at bank q mod P, word
                           q div P: address bank * 2**k_bank_bits + word), pinned (bit 0),
                           drive (h_x low 18 bits, h_y high 18 bits), reg (REGISTERS: n,
                           drive_form, t, d, s, tol, tol_enable, max_steps, pairwise_form).
                           `load_writes(q, lanes=P)` encodes a case.

    Loads are the caller's to get right: t, D and s must be the case's (`quantize_case`), so
    R(C, t) fits the CORDIC's 18 bits.
    """

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
        """Bank `lane` of k: term q = lane + P * word."""
        if self.case is None:
            return []
        words = dict(_case_memories(self.config, self.case)["k"])
        return [words.get(word * self.lanes + lane, 0) for word in range(depth)]

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
        bank_depth = -(-cap * cap // lanes)
        word_bits = k_bank_bits(cfg, lanes)

        # -- memories (1 read + 1 write port each: block RAM) ---------------------------------
        mem = {
            "acc": Memory(shape=unsigned(a), depth=cap, init=self._init("acc", cap)),
            "w": Memory(shape=unsigned(a), depth=cap, init=self._init("w", cap)),
            "pinned": Memory(shape=unsigned(1), depth=cap, init=self._init("pinned", cap)),
            # Work buffer of one step: theta_i for the rotations (pairwise: the row's theta_i).
            "theta": Memory(shape=unsigned(p), depth=cap, init=[]),
        }
        if has_drive:
            mem["drive"] = Memory(shape=pair, depth=cap, init=self._init("drive", cap))
        if has_pairwise:
            # theta_{i+1}: the next row's, for lanes past the row end.
            mem["theta_next"] = Memory(shape=unsigned(p), depth=cap, init=[])
        for lane in range(lanes):
            # Per lane: its k bank, and its own copy of the columns (cos_j, sin_j) and
            # (pairwise) theta_j.
            mem[f"k{lane}"] = Memory(shape=signed(COUPLING_BITS), depth=bank_depth,
                                     init=self._k_init(lane, bank_depth))
            mem[f"cs{lane}"] = Memory(shape=pair, depth=cap, init=[])
            if has_pairwise:
                mem[f"theta{lane}"] = Memory(shape=unsigned(p), depth=cap, init=[])
        rd, wr = {}, {}
        for name, memory in mem.items():
            no_init = name.startswith("k") and self.case is None
            m.submodules[f"mem_{name}" + (NO_INIT_SUFFIX if no_init else "")] = memory
            rd[name], wr[name] = memory.read_port(), memory.write_port()
        # The k banks: one address for both ports (single-port RAM). A run reads (k_run_addr),
        # the load port writes while idle; the read port is enabled only during a run, so no
        # read ever meets a write (no read-during-write behaviour to emulate).
        k_run_addr, k_load_addr = Signal(word_bits), Signal(word_bits)
        busy = Signal()
        for lane in range(lanes):
            k_addr = Mux(busy, k_run_addr, k_load_addr)
            m.d.comb += [rd[f"k{lane}"].addr.eq(k_addr), wr[f"k{lane}"].addr.eq(k_addr),
                         rd[f"k{lane}"].en.eq(busy)]

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
        registers = [n, drive_form, t, d, s, tol, tol_enable, max_steps, pairwise_form]
        left_out = {"pairwise_form": not has_pairwise, "drive_form": not has_drive}
        assert len(registers) == len(REGISTERS)

        # -- units -----------------------------------------------------------------------------
        m.submodules.cordic = cordic = Cordic.create(self.cordic_config, self.cordic_arch)
        lane_cordics = []
        for lane in range(lanes if has_pairwise else 0):
            unit = Cordic.create(self.cordic_config, self.cordic_arch)
            m.submodules[f"lane_cordic{lane}"] = unit
            lane_cordics.append(unit)
            m.d.comb += unit.o.ready.eq(1)
        m.submodules.mac = mac = MacUnit(cap, lanes)
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
        issue = Signal(range(cap + 1))      # phase pass: next j; drive: next oscillator
        collected = Signal(range(cap + 1))  # CORDIC results taken in this pass
        rows_out = Signal(range(cap + 1))   # matvec rows handed to the CORDIC
        written = Signal(range(cap + 1))    # accumulators written in this step
        readout = Signal(range(cap + 1))    # phases stream index
        readout_primed = Signal()
        # Inputs the main CORDIC accepted in this pass (phases, rotations): with `stalls`, what
        # was issued but not yet accepted is issue - fed (phases, drive) or row - fed (matvec).
        fed = Signal(range(cap + 1))
        # The walk over the n**2 terms: the next term is (row, col) = q, q = word * P + first.
        word = Signal(range(bank_depth + 1))
        first = Signal(range(max(lanes, 2)))
        row = Signal(range(cap + 1))
        col = Signal(range(cap))
        order_cos = Signal(signed(len(self.order.payload.cos)))
        order_sin = Signal(signed(len(self.order.payload.sin)))
        m.d.comb += [self.busy.eq(busy), self.converged.eq(calm == CONVERGE_STEPS),
                     self.order.payload.cos.eq(order_cos), self.order.payload.sin.eq(order_sin)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        def begin_phase_pass():
            m.d.sync += [issue.eq(0), collected.eq(0), fed.eq(0), order_cos.eq(0),
                         order_sin.eq(0)]

        def begin_run():
            with m.If(self.start):
                m.d.sync += [self.steps_taken.eq(0), calm.eq(0), self.cycles.eq(0),
                             final.eq(max_steps == 0), self.done.eq(0), busy.eq(1)]
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
        if stalls:
            with m.If(cordic.i.ready):
                m.d.sync += rot_valid.eq(0)
        else:
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
        # theta_j into every copy of the theta buffer.
        for name in ["theta", "theta_next"] + [f"theta{lane}" for lane in range(lanes)]:
            if name in wr:
                m.d.comb += [wr[name].addr.eq(p2_index), wr[name].data.eq(p2_theta),
                             wr[name].en.eq(p2_valid)]

        # -- the coupling walk: which term each lane takes this clock ---------------------------
        # Lanes first..P-1 take the next terms; a clock holds at most one row end, so the
        # terms stop before the end of row + 1 (limit), and at the end of the last row.
        walking = Signal()
        limit = Signal(range(2 * cap))
        m.d.comb += limit.eq(Mux(row + 1 >= n, n, 2 * n - 1))
        lane_valid, lane_hi, lane_gt = Signal(lanes), Signal(lanes), Signal(lanes)
        lane_col = []
        for lane in range(lanes):
            position = Signal(signed((cap + lanes).bit_length() + 1), name=f"position{lane}")
            column = Signal(range(cap), name=f"column{lane}")
            # (the last lane always follows `first`: no constant comparison for Verilator)
            started = (first <= lane) if lane < lanes - 1 else 1
            m.d.comb += [
                position.eq(col + lane - first),
                lane_valid[lane].eq(walking & started & (position < limit)),
                lane_hi[lane].eq(position >= n),
                column.eq(Mux(lane_hi[lane], position - n, position)),
                lane_gt[lane].eq(column > row + lane_hi[lane]),
            ]
            lane_col.append(column)
        count = Signal(range(lanes + 1))
        m.d.comb += count.eq(Mux(lanes - first < limit - col, lanes - first, limit - col))
        row_end = col + count >= n

        # Stage 1 (the reads arrive): the lanes' flags and the k word.
        a1_valid, a1_hi, a1_gt, a1_end = Signal(lanes), Signal(lanes), Signal(lanes), Signal()
        a1_word = Signal.like(word)
        m.d.sync += [a1_valid.eq(lane_valid), a1_hi.eq(lane_hi), a1_gt.eq(lane_gt),
                     a1_end.eq(walking & row_end), a1_word.eq(word)]

        def delayed(value, clocks: int, name: str):
            for clock in range(clocks):
                later = Signal.like(value, name=f"{name}_d{clock + 1}")
                m.d.sync += later.eq(value)
                value = later
            return value

        # Pairwise: stage 2 registers the angle theta_j - theta_i per lane, the lane CORDIC
        # takes it; k is read L clocks later so that it arrives with the CORDIC's result.
        lane_busy = Signal()        # stalls: a pairwise batch is in the lane CORDICs
        if has_pairwise:
            flags = Signal(3 * lanes + 1)
            m.d.comb += flags.eq(Cat(a1_valid, a1_hi, a1_gt, a1_end))
            angle_any = Signal()
            m.d.sync += angle_any.eq(a1_valid.any() & pairwise_form)
            if stalls:
                # One batch at a time (the walk waits for lane_busy): its flags and k word wait
                # in registers instead of L-deep delay lines. Every lane CORDIC gets an input
                # (the flags mask the unused ones), so all answer in the same clock.
                a1_walked = Signal()
                held_flags, held_word = Signal.like(flags), Signal.like(a1_word)
                m.d.sync += a1_walked.eq(walking)
                with m.If(a1_walked):
                    m.d.sync += [held_flags.eq(flags), held_word.eq(a1_word)]
                answered = lane_cordics[0].o.valid
                with m.If(walking & pairwise_form):
                    m.d.sync += lane_busy.eq(1)
                with m.Elif(answered):
                    m.d.sync += lane_busy.eq(0)
                late = Mux(answered, held_flags, 0)
                late_word = held_word
            else:
                late = delayed(flags, latency + 1, "lane_flags")
                late_word = delayed(a1_word, latency, "lane_word")
            late_valid, late_hi = late[:lanes], late[lanes:2 * lanes]
            late_gt, late_end = late[2 * lanes:3 * lanes], late[3 * lanes]
            m.d.comb += [rd["theta_next"].addr.eq(row + 1),
                         k_run_addr.eq(Mux(pairwise_form, late_word, word))]
        else:
            m.d.comb += k_run_addr.eq(word)
        for lane in range(lanes):
            m.d.comb += [rd[f"cs{lane}"].addr.eq(lane_col[lane]),
                         mac.k[lane].eq(rd[f"k{lane}"].data)]
            if not has_pairwise:
                m.d.comb += [mac.cos[lane].eq(rd[f"cs{lane}"].data.x),
                             mac.sin[lane].eq(rd[f"cs{lane}"].data.y)]
                continue
            angle = Signal(p, name=f"angle{lane}")
            angle_valid = Signal(name=f"angle_valid{lane}")
            row_theta = Mux(a1_hi[lane], rd["theta_next"].data, rd["theta"].data)
            m.d.sync += [angle.eq(rd[f"theta{lane}"].data - row_theta),
                         angle_valid.eq(a1_valid[lane])]
            unit = lane_cordics[lane]
            m.d.comb += [unit.i.valid.eq(angle_any if stalls else angle_valid),
                         unit.i.payload.x.eq(1 << f),
                         unit.i.payload.y.eq(0), unit.i.payload.z.eq(angle),
                         rd[f"theta{lane}"].addr.eq(lane_col[lane])]
            # The antipode: sin(pi) is one angle for (i, j) and (j, i); the pair's order
            # gives the sign (+1 for j > i), so the pair separates.
            sin_ij, cos_ij = unit.o.payload.y, unit.o.payload.x
            antipode = (sin_ij == 0) & (cos_ij < 0)
            sin_nudged = Mux(antipode, Mux(late_gt[lane], 1, -1), sin_ij)
            m.d.comb += [
                mac.cos[lane].eq(Mux(pairwise_form, 0, rd[f"cs{lane}"].data.x)),
                mac.sin[lane].eq(Mux(pairwise_form, sin_nudged, rd[f"cs{lane}"].data.y)),
            ]
        if has_pairwise:
            m.d.comb += [mac.valid.eq(Mux(pairwise_form, late_valid, a1_valid)),
                         mac.hi.eq(Mux(pairwise_form, late_hi, a1_hi)),
                         mac.end.eq(Mux(pairwise_form, late_end, a1_end))]
        else:
            m.d.comb += [mac.valid.eq(a1_valid), mac.hi.eq(a1_hi), mac.end.eq(a1_end)]
        # theta_i for the rotation: matvec reads row rows_out ahead of the MAC's done (and the
        # next one on the clock it is used, so rows one clock apart still get their own theta);
        # drive reads it with the drive; pairwise reads the walk's row.
        m.d.comb += rd["theta"].addr.eq(Mux(drive_form, issue,
                                            Mux(pairwise_form, row, rows_out + mac.done)))

        # The update unit: acc, w, pinned were read at the CORDIC result's clock.
        m.d.comb += [update.valid.eq(u1_valid), update.x.eq(u1_x), update.y.eq(u1_y),
                     update.acc.eq(rd["acc"].data), update.w.eq(rd["w"].data),
                     update.pinned.eq(rd["pinned"].data), update.d.eq(d), update.s.eq(s),
                     update.tol.eq(tol)]
        m.d.comb += [self.update.valid.eq(update.done), self.update.index.eq(written),
                     self.update.acc.eq(update.new_acc)]

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                begin_run()

            with m.State("PHASES"):
                m.d.comb += [in_phase_pass.eq(1), rd["acc"].addr.eq(issue)]
                with m.If((issue < n) & ((issue == fed) if stalls else 1)):
                    m.d.sync += [issue.eq(issue + 1), p1_valid.eq(1), p1_index.eq(issue)]
                with m.If(cordic.o.valid):
                    for lane in range(lanes):
                        port = wr[f"cs{lane}"]
                        m.d.comb += [port.addr.eq(collected), port.en.eq(1),
                                     port.data.x.eq(cordic.o.payload.x),
                                     port.data.y.eq(cordic.o.payload.y)]
                    m.d.sync += [collected.eq(collected + 1),
                                 order_cos.eq(order_cos + cordic.o.payload.x),
                                 order_sin.eq(order_sin + cordic.o.payload.y)]
                with m.Elif(collected == n):
                    m.next = "ORDER"

            with m.State("ORDER"):
                m.d.comb += [self.order.valid.eq(1)]
                with m.If(self.order.ready):
                    with m.If(final):
                        m.d.sync += [self.done.eq(1), busy.eq(0), readout.eq(0),
                                     readout_primed.eq(0)]
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [issue.eq(0), collected.eq(0), rows_out.eq(0),
                                     written.eq(0), noisy.eq(0), word.eq(0), first.eq(0),
                                     row.eq(0), col.eq(0), fed.eq(0)]
                        m.next = "COUPLING"

            with m.State("COUPLING"):
                if stalls:
                    # One drive item in flight; matvec: a row's end only when every earlier
                    # row is in the CORDIC (its c, z would otherwise overwrite a rotation
                    # still waiting in rot_*); pairwise: one batch in the lane CORDICs.
                    drive_ok = issue == fed
                    walk_ok = Mux(pairwise_form, ~lane_busy, ~row_end | (row == fed))
                else:
                    drive_ok = walk_ok = 1
                with m.If(drive_form):
                    with m.If((issue < n) & drive_ok):
                        if has_drive:
                            m.d.comb += rd["drive"].addr.eq(issue)
                        m.d.sync += [issue.eq(issue + 1), drive_valid.eq(1)]
                with m.Elif((row < n) & walk_ok):
                    # matvec and pairwise: the next `count` terms.
                    m.d.comb += walking.eq(1)
                    advanced = col + count
                    m.d.sync += [row.eq(row + row_end),
                                 col.eq(Mux(row_end, advanced - n, advanced))]
                    with m.If(first + count == lanes):
                        m.d.sync += [word.eq(word + 1), first.eq(0)]
                    with m.Else():
                        m.d.sync += first.eq(first + count)
                if has_drive:
                    with m.If(drive_valid):
                        m.d.sync += [rot_valid.eq(1), rot_x.eq(rd["drive"].data.x),
                                     rot_y.eq(rd["drive"].data.y),
                                     rot_z.eq(-rd["theta"].data)]
                with m.If(mac.done & ~pairwise_form):
                    m.d.sync += [rot_valid.eq(1), rows_out.eq(rows_out + 1),
                                 rot_x.eq(round_shift_var(mac.c, t)[:SCALE_BITS]),
                                 rot_y.eq(round_shift_var(mac.z, t)[:SCALE_BITS]),
                                 rot_z.eq(-rd["theta"].data)]
                # Results come back in order: result `collected` belongs to oscillator
                # `collected`; read its acc, w, pinned now, update next clock. Pairwise: the
                # row sum S_i is the result, R(S_i, t) the update's y (x = 0: no nudge).
                m.d.comb += [rd["acc"].addr.eq(collected), rd["w"].addr.eq(collected),
                             rd["pinned"].addr.eq(collected)]
                with m.If(Mux(pairwise_form, mac.done, cordic.o.valid)):
                    m.d.sync += [
                        collected.eq(collected + 1), u1_valid.eq(1),
                        u1_x.eq(Mux(pairwise_form, 0, cordic.o.payload.x)),
                        u1_y.eq(Mux(pairwise_form, round_shift_var(mac.z, t)[:SCALE_BITS],
                                    cordic.o.payload.y))]
                with m.If(update.done):
                    m.d.comb += [wr["acc"].addr.eq(written), wr["acc"].data.eq(update.new_acc),
                                 wr["acc"].en.eq(1)]
                    m.d.sync += [written.eq(written + 1), noisy.eq(noisy | update.noisy)]
                with m.Elif(written == n):
                    m.next = "STEP_END"

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
                fire = self.phases.valid & self.phases.ready
                m.d.comb += [rd["acc"].addr.eq(readout + fire),
                             self.phases.payload.eq(rd["acc"].data),
                             self.phases.valid.eq(readout_primed & (readout < n))]
                m.d.sync += readout_primed.eq(1)
                with m.If(fire):
                    m.d.sync += readout.eq(readout + 1)
                begin_run()

        # -- load port: writes while idle or done ---------------------------------------------
        m.d.comb += self.load.ready.eq(~busy)
        load = self.load.payload
        with m.If(self.load.valid & ~busy):
            with m.Switch(load.target):
                for name in ("acc", "w", "pinned", "drive"):
                    if name not in wr:
                        continue        # the drive memory of a build without drive
                    with m.Case(TARGETS[name]):
                        port = wr[name]
                        m.d.comb += [port.addr.eq(load.addr), port.en.eq(1),
                                     port.data.eq(load.data[:len(Value.cast(port.data))])]
                with m.Case(TARGETS["k"]):
                    bank = load.addr[word_bits:]
                    m.d.comb += k_load_addr.eq(load.addr[:word_bits])
                    for lane in range(lanes):
                        port = wr[f"k{lane}"]
                        m.d.comb += [port.en.eq(bank == lane),
                                     port.data.eq(load.data[:COUPLING_BITS])]
                with m.Case(TARGETS["reg"]):
                    with m.Switch(load.addr):
                        for register, (key, address) in zip(registers, REGISTERS.items()):
                            with m.Case(address):
                                # A form this build leaves out stays unselected (0).
                                if left_out.get(key, False):
                                    continue
                                m.d.sync += register.eq(load.data[:len(register)])
        return m
