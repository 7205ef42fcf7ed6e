"""Paper A's oscillator attention head (relu_eps) in hardware: its three modes at d_osc = 2, the
analytic and ode-drive modes at d_osc 3..16 (the unit vector on the sphere and the Lohe flow:
hdl/sphere.py), and softmax.

The arithmetic is specified bit for bit by `oscarray.golden.attention_fixed` (read its module
docstring: the steps below carry its numbers); this module builds it for one head at a time.
The host does step 0 (`head_writes`: q, k at B bits, v at 18, the unit anchors a_j in Q2.16,
the constant c and the score shift F = e_q + e_k + C) and writes it through the `load` stream;
`start` runs every row i = 0 .. T-1 of the head, and the `o` stream gives each row's results.

One row, as the sequencer runs it (n = i + 1 attended tokens when causal, else T; every pass
issues one item per clock into a fixed-latency pipeline and ends when its last item leaves):

    SCORES    for j < n, d < d_h: raw_ij = sum_d q_id k_jd (one B x B MAC, step 1; L of
              them with `mac_lanes` L, d_h / L groups of components);
              m_ij = max(raw_ij, 0) * c (step 2) into the score buffer; the row's max.
    EXPONENT  e_w = the largest e in [E_MIN, E_MAX] with R(max m, F - e) + eps(e) <= 2**17 - 1
              (step 3; `WeightExponent`: one e per clock over the whole range into a
              pipeline, so the clock count does not depend on the data; eps(e) is a ROM of
              the host constant).
              Outside that range no e fits (the golden model refuses such a case): `error`.
    WEIGHTS   for j < n: W_ij = R(m_ij, F - e_w) + eps (step 3), h_i += W_ij a_j (step 4).
    NORMALIZE (x, y) = R(h_i, n_i) (step 6, `Normalizer`: a 3-stage pipeline).
    VECTOR    theta_i = z of the vectoring CORDIC (x, y, 0).
    ROTATE    x_i = (cos, sin) = the rotation CORDIC of (2**16, 0) by theta_i (step 8).
              At d_osc > 2, one state SPHERE instead of NORMALIZE, VECTOR and ROTATE: x_i =
              golden attention_sphere's unit vector (`SphereNormalizer`, which borrows
              RECIP's reciprocal unit); WEIGHTS and READOUT then have d_osc products side by
              side, and the row's header every component of h and x (`header_names`).
              ode-drive there (golden attention_sphere `lohe_flow`, one row's oscillator at
              a time, so "warm" simply goes on from the last row's state): FLOW_RECIP
              (s_i's reciprocal), FLOW_HN (hn_i = R(h r, 32 + L)), FLOW_LOAD (x0 from the
              `start` memory), then per Euler step FLOW_DOT (c = R(x . hn, 16)), FLOW_V
              (v = hn - R(c x, 16)), FLOW_X (x 2**16 + D v), the normalizer, FLOW_CHECK
              (the calm test, x <- x'), until calm or max_steps (`flow_cycles`).
              ode-pairwise there replaces FLOW_DOT and FLOW_V of each step by a pass over
              the row's anchors: PW_FETCH, then per anchor j FLOW_DOT (c_j = R(x . a_j,
              16)), FLOW_V (t_j = a_j - R(c_j x, 16)), PW_ACC (V += W_ij t_j, C += W_ij
              c_j, W_ij from the `flow_w` row buffer kept by WEIGHTS), and PW_NORM (v =
              R(V r, 32 + L)).
    READOUT   for j < n: u_ij, g_ij = u**p (step 9, `Numerator`) into the numerator buffer;
              S_i = sum_j g_ij.
    RECIP     (r_i, L_i) = reciprocal(S_i) (step 5, `Reciprocal`: one divide-mode CORDIC).
    ATTN      for j < n: attn_ij = R(g_ij r_i, 16 + L_i) (step 10) into the attn buffer.
    OUT       for d < d_h, j < n: out_id = R(sum_j attn_ij v_jd, 16) (step 11).
    EMIT      the row on `o`: e_w, h_x, h_y, theta, cos, sin, attn_i0 .. attn_i(T-1) (0 where
              not attended), out_i0 .. out_i(d_h-1) (`row_items` per row).

Every pass of a row waits for the one before. This first version gives each operation its
own multiplier, used in its pass only (10 in all: q k B x B, relu(raw) c 43 x 17 at d_h = 32,
W a_x and W a_y 17 x 18, cos a_x and sin a_y 18 x 18, u u 18 x 18, g2 g2 19 x 19,
g r 21 x 17, attn v 17 x 18): at most two work in any clock, so they can share two
multipliers later. Clocks per head: `cycles_per_head` (checked clock for clock against the
RTL): per row 2 n d_h + 3 n + T + d_h + L_v + L_r + L_d + 57, with L the CORDICs'
latencies (pipelined: 33, 32, 20 at P = 20; iterative: 105, 63, 58) and the `o` stream
always ready. The two MAC passes (2 n d_h) are the work; the rest is per-row overhead that
a later version can overlap with the next row. `mac_lanes` L (`AttentionHead`) widens both
MAC passes: L products a clock, q, k, v and out in L banks, the score products summed by a
pipelined adder tree, so 2 n ceil(d_h / L) + `score_tree_stages`(L) clocks instead of
2 n d_h, for L q k and L attn v multipliers. The compact head (`AttentionHead`'s compact, for
the iCE40UP5K) does the sharing: q k, g r and attn v on one multiplier, W a on the
Numerator's x a ones, one CORDIC datapath for the three CORDIC operations
(`SharedCordicIterative`), and the lean units of hdl/lean.py; the same clocks.

Right shifts of W's rounding are clamped (`shift_round`): F - e_w has no upper bound (F grows
as q and k shrink), and R(m, s) = 0 for every s >= 63 (m < 2**62), as golden `_shift` does.

The ODE modes (built with `modes`; the `mode` register picks one per run) replace NORMALIZE
and VECTOR by the array engine (`ArrayEngine`, 1 lane) inside the head, in three passes:
    A  for every row: SCORES, EXPONENT, WEIGHTS, s_i = sum_j W_ij and its reciprocal (the
       RECIP unit); ode-drive: hn_i = R(h_i r_i, 32 + L_i) and the run's drive shift k
       (golden `drive_shift`); ode-pairwise: W kept, the row's coupling exponent e_i.
    run  ode-drive: hn << k into the engine's drive memory; ode-pairwise: kn_ij =
       R(W_ij r_i, 32 + L_i - e_i) into its k at (i, T + j) and e_i - e into its row shift
       (e = min_i e_i over rows with a drive: the engine's per-row coupling exponent), anchors
       pinned at T + j, the sum shift t = max_i (u_i - (e_i - e)), u_i the golden
       `pairwise_sum_shift` of sum_j kn_ij; t and s = s_ref + (k, or e + t' - t) into its
       registers (a warm run's one row is its own e; its t' is 0 now that kn has the row's
       exponent, so warm's first pass over the row, which finds t', is redundant: kept, its
       clocks are in `ode_cycles`); the Euler steps; theta_i = R(acc_i, A - P) of its final
       accumulators. "warm": one run per token (1 oscillator, or 1 + T), each from the last
       token's final state, interleaved with pass A (drive) or after it (pairwise).
    C  for every row: ROTATE by that theta_i, READOUT, RECIP, ATTN, OUT, EMIT (the header's
       steps and converged from the row's run).
Clocks: `ode_cycles`, given each run's Euler steps (checked clock for clock against the RTL).

The softmax mode (golden/softmax.py, the reference of issue 5's cost table) shares SCORES
(without the relu: the score buffer keeps the sign), RECIP, ATTN, OUT and EMIT, and puts one
pass between them:
    EXP       for j < n: y_ij = min(R(M_i - m_ij, F - 16), Y_MAX), g_ij = 2**-y (`NegExp2`:
              two 256-entry ROMs and a multiply) into the numerator buffer; S_i = sum_j g_ij.
Built alone (modes=("softmax",)) the head has none of the oscillator's units (no anchors,
WeightExponent, Normalizer, vector and rotation CORDICs, Numerator): the fair hardware
comparison. Its rows' headers are zeros (converged, 0 steps). Clocks per row:
2 n d_h + 2 n + T + d_h + L_d + 27 (`cycles_per_row(..., mode="softmax")`).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.array_fixed import (CONVERGE_STEPS, COUPLING_BITS, ArrayFixedConfig,
                                  MAX_ROW_SHIFT, SCALE_BITS, pairwise_term_bound)
from ..golden.attention import NOT_CONVERGED, RELU_EPS, AttentionCase, validate_case
from ..golden.exp2 import Y_BITS, Y_FRAC, Y_MAX
from ..golden.softmax import EXP_FRAC, softmax_constant, softmax_front_end
from ..golden.softmax import MECHANISM as SOFTMAX
from ..golden.attention_fixed import (
    DATA_BITS,
    DEFAULT_CONFIG,
    FRAC,
    MAX_TOKENS,
    AttentionFixedConfig,
    engine_constants,
    engine_cases,
    formats,
    front_end,
    prepare_anchors,
    quantize_tensor,
    score_constant,
    validate_fixed,
)
from .array import (NO_INIT_SUFFIX, STEP_COUNT_BITS, ArrayEngine, check_names, cycles_per_run,
                    delay_line, magnitude, round_shift_finish, round_shift_split,
                    round_shift_var)
from .array import TARGETS as ENGINE_TARGETS
from .array import REGISTERS as ENGINE_REGISTERS
from ..golden.attention_sphere import MAX_D_OSC, TOL_BITS, flow_constants, flow_start
from .cordic import ARCHITECTURES, Cordic
from .cordic_iterative import SharedCordicIterative
from .exp2 import NegExp2
from .sphere import SphereNormalizer, sphere_cycles

__all__ = [
    "E_MAX",
    "E_MIN",
    "HEADER",
    "KINDS",
    "MODES",
    "MAX_D_H",
    "NO_COLLISION_ATTR",
    "REGISTERS",
    "SHIFT_BITS",
    "TARGETS",
    "AttentionHead",
    "AttentionHeadError",
    "Normalizer",
    "Numerator",
    "Reciprocal",
    "WeightExponent",
    "bit_length",
    "magnitude",
    "check_case",
    "check_d_osc",
    "check_modes",
    "cordic_latencies",
    "cycles_per_head",
    "cycles_per_row",
    "decode_items",
    "head_d_osc",
    "head_writes",
    "load_layout",
    "flow_cycles",
    "ode_cycles",
    "ode_engine_runs",
    "output_layout",
    "relu_eps_int",
    "header_names",
    "row_items",
    "shift_round",
]

#: A memory with this attribute (1; one read and one write port) never uses what its read
#: port returns in a clock its write port writes the address read: the head's q, k, v and
#: anchors are written by `load` only while idle, and each row buffer is written in one pass
#: and read for use only in later passes, which begin after the writing pass's last item
#: has left. On the iCE40, whose block RAM leaves such a read undefined,
#: `oscarray.boards.build` then spares Yosys emulating the RTL's read-old-data behaviour in
#: logic (flip-flops holding each write's data and address, a comparator and a multiplexer:
#: about 400 logic cells for the head). tests/test_memory_collisions.py checks the claim:
#: the head stays bit-exact with those reads returning garbage. (An attribute, not a name:
#: the names, and so the other builds' netlists, stay as they were.)
NO_COLLISION_ATTR = "oscarray_no_collide"

DATA_MAX = (1 << (DATA_BITS - 1)) - 1      # 2**17 - 1: W, the reciprocal's m
W_BITS = DATA_BITS - 1                      # W: 17 bits unsigned
SHIFT_BITS = 12                             # the score shift register F (signed)
CYCLE_BITS = 32
MAX_D_H = 128                               # the golden model's bound for 20-bit q, k


def relu_eps_int(e: int) -> int:
    """eps(e) = floor(1e-3 * 2**e + 1/2): relu_eps's 1e-3 in units of 2**-e (host constant,
    the same expression as golden `_w_exponent`)."""
    return math.floor(RELU_EPS * 2.0 ** e + 0.5)


#: The exponents a row's W can have: below E_MIN eps(e) = 0 (the golden model refuses the
#: case), above E_MAX eps(e) alone exceeds 2**17 - 1.
E_MIN = min(e for e in range(64) if relu_eps_int(e) >= 1)
E_MAX = max(e for e in range(64) if relu_eps_int(e) <= DATA_MAX)

#: ode-pairwise's coupling exponent e (golden normalized_couplings) of any row: kn_ij ~
#: 2**e W_ij / s_i with 1/T <= max_j W_ij / s_i <= 1, so e = 14 always fits and e above
#: 15 + bits(T) never does (T <= 2048).
E_PW_MIN, E_PW_MAX = 14, 27
# The engine's row shift e_i - e must fit its memory (no saturation in the head).
assert E_PW_MAX - E_PW_MIN <= MAX_ROW_SHIFT
#: Clocks from issuing a candidate e_i in PW_SEARCH to its result (its pipeline's clamp and
#: shift-and-compare registers).
PW_SEARCH_LAG = 2

#: The modes a head can be built with (`modes`): paper A's three (with any of them,
#: "analytic" is always built: the ODE modes share its passes) and the softmax reference
#: (golden/softmax.py) on the same front end and value path.
MODES = ("analytic", "ode-drive", "ode-pairwise", SOFTMAX)
OSCILLATOR_MODES = MODES[:3]

#: `load` targets. "engine" (ode-drive builds) passes a write on to the array engine's own
#: `load` port: engine target in the address bits from ENGINE_INDEX_BITS up, its address
#: (an oscillator index or a register number) below.
TARGETS = {"q": 0, "k": 1, "v": 2, "anchor": 3, "reg": 4, "engine": 5, "start": 6}
ENGINE_INDEX_BITS = 12                      # oscillator indices up to MAX_TOKENS

#: Run registers (`load` target "reg", address below): tokens T, d_h, causal, p (1, 2 or 4),
#: score_c (the constant c, 17 bits), score_shift (F = e_q + e_k + C, signed SHIFT_BITS);
#: ode-drive builds: mode (index in MODES), warm (one engine run per token), step_shift (the
#: engine's step shift s0 for drives at 2**-16; a run with drives shifted by k uses s0 + k).
REGISTERS = {"tokens": 0, "d_h": 1, "causal": 2, "p": 3, "score_c": 4, "score_shift": 5,
             "mode": 6, "warm": 7, "step_shift": 8, "flow_step": 9, "flow_tol": 10,
             "max_steps": 11}
FLOW_TOL_BITS = TOL_BITS                    # the sphere flow's tol_q register
FLOW_V_BITS = 20                            # v, c and the step's operands (|v| < 2**18)
FLOW_X_BITS = 38                            # x 2**16 + D v (|X| < 2**35)
FLOW_KINDS = {"hn": 0, "load": 1, "dot": 2, "v": 3, "x": 4, "acc": 5, "norm": 6}

#: `o` item kinds, in the order a row gives them (HEADER first, then T attn, d_h out).
#: steps: the Euler steps of the row's engine run (0 in the analytic mode and for a zero
#: drive); converged: its detector fired (1 in the analytic mode and for a zero drive).
KINDS = {"e_w": 0, "h_x": 1, "h_y": 2, "theta": 3, "cos": 4, "sin": 5, "attn": 6, "out": 7,
         "steps": 8, "converged": 9, "h_c": 10, "x_c": 11}
HEADER = ("e_w", "h_x", "h_y", "theta", "cos", "sin", "steps", "converged")


def header_names(d_osc: int = 2) -> tuple:
    """A row's header items at d_osc: HEADER, with d_osc > 2's further components of h and
    x after h_y and after sin (kinds h_c and x_c); theta is 0 there (no phase on the
    sphere)."""
    h_more = tuple(f"h_{c}" for c in range(2, d_osc))
    x_more = tuple(f"x_{c}" for c in range(2, d_osc))
    return ("e_w", "h_x", "h_y") + h_more + ("theta", "cos", "sin") + x_more \
        + ("steps", "converged")


def _kind(name: str) -> int:
    return KINDS[name] if name in KINDS else KINDS[name[0] + "_c"]


class AttentionHeadError(ValueError):
    """Parameters or a case that this head cannot hold."""


# ---------------------------------------------------------------------------------------------
# Arithmetic helpers (expressions)

def _bits(n: int) -> int:
    """Bits of an unsigned counter holding 0 .. n."""
    return max(1, int(n).bit_length())


def bit_length(value) -> Value:
    """The bit length of an unsigned Value (0 for 0): a priority encoder."""
    value = Value.cast(value)
    result = Const(0, _bits(len(value)))
    for bit in range(len(value)):
        result = Mux(value[bit], bit + 1, result)
    return result


def shift_round(m: Module, value, amount, right_max: int, left_max: int,
                domain: str = "comb", name: str = "shift") -> Value:
    """R(value, amount) for a signed run-time amount: round half up by 2**amount when
    amount > 0, the exact left shift by -amount otherwise (the golden `_shift`). Its clamped
    amounts (`shift_amounts`) are driven in `m`'s `domain`: "sync" for an amount that holds
    (a run register), so that its compares leave the clock of the shift.

    Right shifts are clamped to `right_max`, left shifts to `left_max`, to keep the shifters
    small; the caller guarantees that this changes nothing: a right shift of an unsigned
    W-bit value by W + 1 or more, or of a signed W-bit value by W or more, gives 0 already,
    and a left shift is clamped only where the result is anyway out of range for its use.
    """
    right, left, positive = shift_amounts(m, amount, right_max, left_max, domain, name)
    return Mux(positive, round_shift_var(value, right), Value.cast(value) << left)


def shift_amounts(m: Module, amount, right_max: int, left_max: int, domain: str = "comb",
                  name: str = "shift"):
    """`shift_round`'s clamped amounts (right, left, amount > 0) of a signed `amount`, driven
    in `m`'s `domain`: "sync" takes the compares out of the clock of the shift itself
    (`shift_split`)."""
    amount = Value.cast(amount)
    assert amount.shape().signed
    right = Signal(range(right_max + 1), name=f"{name}_right")
    left = Signal(range(left_max + 1), name=f"{name}_left")
    positive = Signal(name=f"{name}_positive")
    m.d[domain] += [right.eq(Mux(amount > right_max, right_max, amount)),
                    left.eq(Mux(-amount > left_max, left_max, -amount)),
                    positive.eq(amount > 0)]
    return right, left, positive


def shift_split(value, right, left, positive) -> Value:
    """The variable shift of `shift_round` without its rounding add (amounts from
    `shift_amounts`): `round_shift_finish` of it, (s >> 1) + s[0], is R(value, amount), so
    the add can go into the next clock, or into the carry-in of an add that follows."""
    value = Value.cast(value)
    return Mux(positive, round_shift_split(value, right), (value << left) << 1)


def weight_split(m: Module, score, amount, m_bits: int) -> Value:
    """WEIGHTS's shift of an m_bits score by the signed `amount` F - e_w (held: its clamps
    are registers, `shift_amounts`), without its rounding add (`shift_split`): W = its bits
    1..17 + its bit 0 + eps (left shifts clamped to 18: W has 17 bits)."""
    amounts = shift_amounts(m, amount, m_bits + 1, W_BITS + 1, "sync", "weight")
    return shift_split(score, *amounts)


def weight_window(m: Module, score, amount, m_bits: int) -> Value:
    """`weight_split`'s W_BITS + 1 low bits in less than half its logic on iCE40: its left
    shifts (score << 1 + left, left <= 18) and right ones (score << 1 >> a, a <= bits + 1)
    are one right shift of score 2**19 by b = a + 18 clamped to 0 .. bits + 19, of which
    `window` builds only the bits kept (b is a register, as weight_split's clamps)."""
    from .lean import window            # (hdl/lean.py imports this module)
    top = m_bits + W_BITS + 2
    b = Signal(range(top + 1), name="weight_b")
    moved = amount + W_BITS + 1
    m.d.sync += b.eq(Mux(moved < 0, 0, Mux(moved > top, top, moved)))
    return window(m, Cat(Const(0, W_BITS + 2), score), b, W_BITS + 1, name="weight_window")


def adder_tree(m: Module, values, name: str) -> Value:
    """The sum of `values` (a power-of-two count) by pairwise adds, registered after every
    second level and after the last: `score_tree_stages(len(values))` clocks (none for one
    value, returned as it is)."""
    values, level = list(values), 0
    while len(values) > 1:
        values = [values[i] + values[i + 1] for i in range(0, len(values), 2)]
        level += 1
        if level % 2 == 0 or len(values) == 1:
            staged = [Signal(value.shape(), name=f"{name}_{level}_{index}")
                      for index, value in enumerate(values)]
            m.d.sync += [reg.eq(value) for reg, value in zip(staged, values)]
            values = staged
    return values[0]


def _signed(value) -> Value:
    """An unsigned Value as a signed one of one bit more (for signed arithmetic)."""
    return Cat(value, Const(0, 1)).as_signed()


def _round_const(value, shift: int) -> Value:
    """R(value, shift) for a constant shift > 0."""
    return (value + (1 << (shift - 1))) >> shift


# ---------------------------------------------------------------------------------------------
# Sub-units

class WeightExponent(wiring.Component):
    """Step 3's row exponent: the largest e in [E_MIN, E_MAX] with
    R(m_max, F - e) + eps(e) <= 2**17 - 1.

    After `start` it feeds e = E_MIN, E_MIN + 1, ..., E_MAX into a pipeline, one per clock,
    and keeps the last e that fits (the value is monotone in e, so that is the largest).
    Tested in one clock, a candidate's subtraction, variable shift, add and compare were the
    head's critical path on ECP5 (29 to 32 ns); the candidates are independent, so each of
    those gets a clock of its own:
        F - e          a register counting down beside e (F is read in the start clock)
        clamp          the shift's clamped amounts (`shift_amounts`)
        shift          the variable shift, without its rounding add (`shift_split`);
                       eps(e) from its ROM beside it
        add, compare   R + eps(e) as one 18-bit add (the rounding bit its carry-in): fits
                       is its bit 17 clear (and R < 2**17), and the result registers take e
    `done` rises the clock after the last candidate's add: E_MAX - E_MIN + 4 clocks from
    start to done, whatever the data.

    Ports
    -----
    start : In(1)                  begin a search (shift is read in this clock, m_max while
                                   busy; a start while busy drops the search in flight)
    m_max : In(unsigned(M))        the row's largest m_ij = max(raw, 0) c
    shift : In(signed(SHIFT_BITS)) F = e_q + e_k + C: m 2**-F is the score
    busy : Out(1)                  searching
    done : Out(1)                  one clock: e_w, eps, found are the result (held after)
    e_w : Out(range(E_MAX + 1))    the exponent (E_MIN when none fits)
    eps : Out(unsigned(17))        eps(e_w) = floor(1e-3 2**e_w + 1/2)
    found : Out(1)                 some e fits (0: the case is one the golden model refuses)
    """

    def __init__(self, m_bits: int):
        self.m_bits = m_bits
        super().__init__({
            "start": In(1), "m_max": In(unsigned(m_bits)), "shift": In(signed(SHIFT_BITS)),
            "busy": Out(1), "done": Out(1), "e_w": Out(range(E_MAX + 1)),
            "eps": Out(unsigned(W_BITS)), "found": Out(1),
        })

    cycles = E_MAX - E_MIN + 4      # clocks from start to done

    def elaborate(self, platform):
        m = Module()
        e = [Signal(range(E_MAX + 1), name=f"e_{stage}") for stage in (1, 2, 3)]
        valid = [Signal(name=f"valid_{stage}") for stage in (1, 2, 3)]
        amount = Signal(signed(SHIFT_BITS + 1))             # F - e
        # Left shifts past 18 only ever meet m_max = 0 in a row that fits (m << 18 > 2**17).
        amounts = shift_amounts(m, amount, self.m_bits + 1, W_BITS + 1, "sync", "exp")
        # s's bits above these are always 0 (left shifts <= 18).
        shifted = Signal(self.m_bits + W_BITS + 2)
        eps_e = Signal(unsigned(W_BITS))
        rom = Const(0, W_BITS)
        for candidate in range(E_MIN, E_MAX + 1):
            rom = Mux(e[1] == candidate, relu_eps_int(candidate), rom)
        m.d.sync += [shifted.eq(shift_split(self.m_max, *amounts)), eps_e.eq(rom),
                     e[1].eq(e[0]), e[2].eq(e[1])]
        # R = (s >> 1) + s[0] <= 2**17 - 1 - eps(e) needs s's bits above 17 all 0, and then
        # R + eps(e) < 2**18: so the compare is bit 17 of the sum.
        total = shifted[1:W_BITS + 1] + eps_e + shifted[0]
        fits = (shifted[W_BITS + 1:] == 0) & (total[W_BITS:] == 0)
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), valid[0].eq(1), valid[1].eq(0), valid[2].eq(0),
                         e[0].eq(E_MIN), amount.eq(self.shift - E_MIN), self.found.eq(0),
                         self.e_w.eq(E_MIN), self.eps.eq(relu_eps_int(E_MIN))]
        with m.Else():
            m.d.sync += [valid[1].eq(valid[0]), valid[2].eq(valid[1])]
            with m.If(valid[0]):
                with m.If(e[0] == E_MAX):
                    m.d.sync += valid[0].eq(0)
                with m.Else():
                    m.d.sync += [e[0].eq(e[0] + 1), amount.eq(amount - 1)]
            with m.If(valid[2]):
                with m.If(fits):
                    m.d.sync += [self.e_w.eq(e[2]), self.eps.eq(eps_e), self.found.eq(1)]
                with m.If(e[2] == E_MAX):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m


class Normalizer(wiring.Component):
    """Step 6, analytic: (x, y) = R(h, n) with n = bitlen(max(|h_x|, |h_y|)) - 16, so that
    max(|x|, |y|) is in [2**15, 2**16] (h = 0 gives (0, 0)).

    In one clock, the magnitudes, the peak's compare, its bit length, n's clamps, the
    variable shift and its rounding add were the head's critical path on ECP5 (29 ns); the
    unit is a pipeline of `latency` stages, one vector per clock (h travels beside):
        magnitude   |h_x|, |h_y|
        amounts     the shift's (right, left, n > 0, n) straight from the bit length of
                    |h_x| | |h_y| (= that of the peak: no compare), one priority encoder
                    whose entries are constants: n = bitlen - 16 in -16 .. H - 16 never
                    meets `shift_amounts`' clamps
        shift       the variable shift without its rounding add (`shift_split`), 19 bits
    and x, y are its rounding add, (s >> 1) + s[0] (combinational: the caller registers
    them).

    Ports
    -----
    valid : In(1)              h_x, h_y are a vector to normalize
    h_x, h_y : In(signed(H))   the drive, H = formats' "h (sum W a)" bits
    done : Out(1)              `latency` clocks after valid: x, y, shift are its result
    x, y : Out(signed(18))     the vectoring CORDIC's input
    shift : Out(signed(8))     n (0 for h = 0, as golden `normalize_shift`)
    """

    latency = 3     # clocks from valid to done

    def __init__(self, h_bits: int):
        self.h_bits = h_bits
        super().__init__({"valid": In(1), "h_x": In(signed(h_bits)),
                          "h_y": In(signed(h_bits)), "done": Out(1),
                          "x": Out(signed(DATA_BITS)), "y": Out(signed(DATA_BITS)),
                          "shift": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        bits = self.h_bits
        h = [self.h_x, self.h_y]
        h2 = [delay_line(m, h_c, 2, f"norm_{name}") for h_c, name in zip(h, "xy")]
        valid = delay_line(m, self.valid, self.latency, "norm_valid")
        m.d.comb += self.done.eq(valid)

        # c1: the magnitudes.
        size = [Signal(unsigned(bits), name=f"norm_size_{name}") for name in "xy"]
        m.d.sync += [s.eq(magnitude(h_c, bits)) for s, h_c in zip(size, h)]

        # c2: the shift amounts of bitlen(|h_x| | |h_y|), n >= -16: left <= 16, right <= H.
        layout = data.StructLayout({"right": range(bits + 1), "left": range(FRAC + 1),
                                    "positive": 1, "n": signed(8)})

        def entry(length):
            n = length - FRAC
            return layout.const({"right": max(n, 0), "left": max(-n, 0),
                                 "positive": int(n > 0), "n": n if length else 0}).as_value()
        either = size[0] | size[1]
        encoded = entry(0)
        for bit in range(bits):
            encoded = Mux(either[bit], entry(bit + 1), encoded)
        amounts = Signal(layout)
        m.d.sync += amounts.eq(encoded)

        # c3: the shift, its 19 low bits (all x's 18 bits need).
        shifted = [Signal(DATA_BITS + 1, name=f"norm_shifted_{name}") for name in "xy"]
        n = Signal(signed(8))
        m.d.sync += [s.eq(shift_split(h_c, amounts.right, amounts.left, amounts.positive))
                     for s, h_c in zip(shifted, h2)]
        m.d.sync += n.eq(amounts.n)

        for s, out in zip(shifted, (self.x, self.y)):
            m.d.comb += out.eq(s[1:] + s[0])
        m.d.comb += self.shift.eq(n)
        return m


def reciprocal_layout() -> data.StructLayout:
    """`Reciprocal` result: r (Q2.16, ~2**32 / m) and the shift L (1/S ~ r 2**-(32 + L))."""
    return data.StructLayout({"r": signed(DATA_BITS), "shift": signed(8)})


class Reciprocal(wiring.Component):
    """Step 5: (r, L) = reciprocal(S) for an unsigned S, one at a time.

    L = bitlen(S) - 17, m = min(R(S, L), 2**17 - 1) (a left shift when L < 0), r = z of the
    divide-mode CORDIC (x = m, y = 2**16, z = 0); S = 0 gives r = 0, L = 0.

    Ports
    -----
    i : In(stream(unsigned(S)))        S; taken only while no other is in flight
    o : Out(stream(reciprocal_layout()))  (r, L), 1 + L_d clocks after i was taken (L_d:
                                          the divide CORDIC's, `cordic_latencies`; o ready)

    `cordic`: a divide-mode CORDIC's port (i, o streams) that the caller instantiates (a
    compact head's `SharedCordicIterative`); None: the unit makes its own of `cordic_arch`.
    """

    def __init__(self, config: AttentionFixedConfig, sum_bits: int,
                 cordic_arch: str = "pipelined", cordic=None):
        self.config = config
        self.sum_bits = sum_bits
        self.cordic_arch = cordic_arch
        self.cordic = cordic
        super().__init__({"i": In(stream.Signature(unsigned(sum_bits))),
                          "o": Out(stream.Signature(reciprocal_layout()))})

    def elaborate(self, platform):
        m = Module()
        cordic = self.cordic
        if cordic is None:
            m.submodules.cordic = cordic = Cordic.create(self.config.divide, self.cordic_arch)
        busy, pending, zero = Signal(), Signal(), Signal()
        shift, mantissa = Signal(signed(8)), Signal(signed(DATA_BITS))
        S = self.i.payload
        L, rounded = self.normalize(m, S)
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.i.valid & ~busy):
            m.d.sync += [busy.eq(1), pending.eq(1), zero.eq(S == 0),
                         shift.eq(Mux(S == 0, 0, L)),
                         mantissa.eq(Mux(S == 0, 1 << FRAC,
                                         Mux(rounded > DATA_MAX, DATA_MAX, rounded)))]
        m.d.comb += [cordic.i.valid.eq(pending), cordic.i.payload.x.eq(mantissa),
                     cordic.i.payload.y.eq(1 << FRAC), cordic.i.payload.z.eq(0)]
        with m.If(cordic.i.valid & cordic.i.ready):
            m.d.sync += pending.eq(0)
        m.d.comb += [self.o.valid.eq(cordic.o.valid), cordic.o.ready.eq(self.o.ready),
                     self.o.payload.r.eq(Mux(zero, 0, cordic.o.payload.z)),
                     self.o.payload.shift.eq(shift)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += busy.eq(0)
        return m

    def normalize(self, m: Module, S) -> tuple[Value, Value]:
        """(L, R(S, L)) for S >= 1 (anything for S = 0): L = bitlen(S) - 17 and R(S, L),
        before its clamp to 2**17 - 1."""
        L = _signed(bit_length(S)) - (FRAC + 1)
        # L >= -16 for S >= 1; a right shift by bits(S) + 1 or more gives 0 already.
        return L, shift_round(m, S, L, self.sum_bits + 1, FRAC)


class Numerator(wiring.Component):
    """Step 9 for one (i, j): u = max(0, 2**16 + R(x . a, 16)) and g = u (p = 1), R(u u, 16)
    (p = 2), R(g2 g2, 16) with g2 = R(u u, 16) (p = 4); x . a = sum_c x_c a_c over the d_osc
    components (d_osc products side by side, summed in the clock after).

    A pipeline of `latency` register stages (products, u, g2, g), one item per clock.

    Ports
    -----
    valid : In(1)                          an item is present
    x, a : In(array of d_osc signed(18))   x_i (Q2.16: (cos, sin) at d_osc = 2) and the
                                           anchor a_j (Q2.16)
    p : In(3)                              1, 2 or 4 (held while items are in flight)
    o_valid : Out(1)                       g is an item's result (`latency` clocks later)
    g : Out(unsigned(21))
    products : Out(array of d_osc signed(36))  x_c a_c of the item given a clock before
                                           (a compact head's WEIGHTS borrows them for W a)
    """

    latency = 4

    def __init__(self, d_osc: int = 2):
        self.d_osc = d_osc
        vector = data.ArrayLayout(signed(DATA_BITS), d_osc)
        super().__init__({"valid": In(1), "x": In(vector), "a": In(vector), "p": In(3),
                          "o_valid": Out(1), "g": Out(unsigned(21)),
                          "products": Out(data.ArrayLayout(signed(2 * DATA_BITS), d_osc))})

    def elaborate(self, platform):
        m = Module()
        products = [Signal(signed(2 * DATA_BITS), name=f"product_{c}")
                    for c in range(self.d_osc)]
        u = Signal(unsigned(DATA_BITS))
        u3, g2 = Signal(unsigned(DATA_BITS)), Signal(unsigned(19))
        valid = Signal(self.latency - 1)
        m.d.sync += [product.eq(self.x[c] * self.a[c]) for c, product in enumerate(products)]
        m.d.comb += [self.products[c].eq(product) for c, product in enumerate(products)]
        m.d.sync += valid.eq(Cat(self.valid, valid[:-1]))
        cosine = (1 << FRAC) + _round_const(sum(products), FRAC)
        m.d.sync += u.eq(Mux(cosine < 0, 0, cosine))
        m.d.sync += [u3.eq(u), g2.eq(_round_const(u * u, FRAC))]
        m.d.sync += [self.o_valid.eq(valid[-1]),
                     self.g.eq(Mux(self.p == 1, u3,
                                   Mux(self.p == 2, g2, _round_const(g2 * g2, FRAC))))]
        return m


# ---------------------------------------------------------------------------------------------
# Formats, the load and output encodings

def _check_sizes(config, max_tokens, max_d_h):
    if not isinstance(config, AttentionFixedConfig):
        raise TypeError(f"config must be an AttentionFixedConfig, not {config!r}")
    for name, value, top in (("max_tokens", max_tokens, MAX_TOKENS),
                             ("max_d_h", max_d_h, MAX_D_H)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 1 <= value <= top:
            raise AttentionHeadError(f"{name} must be 1..{top}, not {value}")
    widths = formats(max_d_h, max_tokens, 4, config)
    if widths["score (raw * c)"] > 63:
        raise AttentionHeadError(f"max_d_h = {max_d_h}: the score product needs "
                                 f"{widths['score (raw * c)']} bits, more than 63")


def _widths(config: AttentionFixedConfig, max_tokens: int, max_d_h: int) -> dict:
    f = formats(max_d_h, max_tokens, 4, config)
    raw = f["raw (q.k)"]
    return {"raw": raw, "m": raw - 1 + W_BITS, "h": f["h (sum W a)"],
            "g": f["g = u**p (u)"], "sum": f["g row sum (u)"], "out_acc": f["attn . v"] + 1,
            "out": f["out"], "attn": f["attn (u, Q1.16)"]}


def _stride(max_d_h: int) -> int:
    """Words per token in the q, k, v memories: the next power of two (address = t || d)."""
    return 1 << max(0, (max_d_h - 1).bit_length())


def check_mac_lanes(mac_lanes, max_d_h: int) -> int:
    """`mac_lanes` as an int: a power of two up to max_d_h's stride (TypeError,
    AttentionHeadError otherwise). A power of two, so that component d of a token lives in
    bank d mod L at t || d div L: the host's addresses (t || d) do not depend on it."""
    if isinstance(mac_lanes, bool) or not isinstance(mac_lanes, (int, np.integer)):
        raise TypeError(f"mac_lanes must be an integer, not {mac_lanes!r}")
    stride = _stride(max_d_h)
    if not 1 <= mac_lanes <= stride or mac_lanes & (mac_lanes - 1):
        raise AttentionHeadError(f"mac_lanes must be a power of two in 1..{stride} (max_d_h = "
                                 f"{max_d_h} rounded up to a power of two), not {mac_lanes}")
    return int(mac_lanes)


def mac_groups(d_h: int, mac_lanes: int = 1) -> int:
    """Clocks per token of the SCORES and OUT passes: d_h's components, `mac_lanes` at a
    time (AttentionHeadError for lanes no head has: not a power of two)."""
    check_mac_lanes(mac_lanes, MAX_D_H)
    return -(-d_h // mac_lanes)


def score_tree_stages(mac_lanes: int = 1) -> int:
    """Register stages of the adder tree over the score lanes' products: one after every
    two levels of adds (log2 L levels), so that a stage is two adds deep."""
    return int(mac_lanes).bit_length() // 2


def _addr_bits(max_tokens: int, max_d_h: int) -> int:
    # The q, k, v words, the run registers' addresses, the engine writes' (target, index) and
    # the anchors' components at any d_osc (t || c).
    return max(1, (max_tokens * _stride(max_d_h) - 1).bit_length(),
               (len(REGISTERS) - 1).bit_length(), ENGINE_INDEX_BITS + 3,
               ((max_tokens << _osc_bits(MAX_D_OSC)) - 1).bit_length())


def load_layout(config: AttentionFixedConfig, max_tokens: int, max_d_h: int
                ) -> data.StructLayout:
    """One `load` write: data (low bits), addr, target (TARGETS)."""
    data_bits = max(config.qk_bits, 2 * DATA_BITS, SHIFT_BITS, W_BITS, config.acc_bits + 1,
                    STEP_COUNT_BITS)
    return data.StructLayout({"data": unsigned(data_bits),
                              "addr": unsigned(_addr_bits(max_tokens, max_d_h)),
                              "target": unsigned(3)})


def _value_bits(config, max_tokens, max_d_h) -> int:
    w = _widths(config, max_tokens, max_d_h)
    return max(w["h"], config.phase_bits + 1, w["out"], DATA_BITS, STEP_COUNT_BITS + 1)


def output_layout(config: AttentionFixedConfig, max_tokens: int, max_d_h: int
                  ) -> data.StructLayout:
    """One `o` item: value (signed, low bits) and kind (KINDS)."""
    return data.StructLayout({"value": signed(_value_bits(config, max_tokens, max_d_h)),
                              "kind": unsigned(4)})


def row_items(tokens: int, d_h: int, d_osc: int = 2) -> int:
    """Items per row on `o`: the header (`header_names`), T attn, d_h out."""
    return len(header_names(d_osc)) + tokens + d_h


def check_modes(modes) -> tuple:
    """modes as a tuple in MODES order, with "analytic" whenever an oscillator mode is
    named (`check_names`: AttentionHeadError for an unknown mode, TypeError for a bare
    string)."""
    modes = check_names(modes, MODES, "modes", "('analytic', 'ode-drive')", AttentionHeadError)
    oscillator = any(mode in OSCILLATOR_MODES for mode in modes)
    return tuple(mode for mode in MODES
                 if mode in modes or (mode == "analytic" and oscillator))


def validate_mechanism(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> AttentionCase:
    """The golden model's validation of a case for its mechanism: a softmax case (an
    AttentionCase of mode "softmax", golden `softmax_case`) by golden/softmax.py's front
    end, every other by `validate_fixed`."""
    if isinstance(case, AttentionCase) and case.mode == SOFTMAX:
        softmax_front_end(case, config)
        return case
    return validate_fixed(case, config)


def check_case(case, config: AttentionFixedConfig = DEFAULT_CONFIG, *, max_tokens: int,
               max_d_h: int, modes=("analytic",), d_osc: int = 2) -> AttentionCase:
    """The case, validated by the golden model (validate_fixed, front_end and, in the ODE
    modes, the engine's loader: every refusal of the specification), then refused
    (AttentionHeadError) if this head cannot run it: a mode not in `modes`, anchors of
    another d_osc than the build's, T or d_h above the build's, a score shift outside the
    register."""
    _check_sizes(config, max_tokens, max_d_h)
    modes = check_modes(modes)
    check_d_osc(d_osc, modes)
    case = validate_mechanism(case, config)
    if case.mode in OSCILLATOR_MODES and case.d_osc != d_osc:
        raise AttentionHeadError(f"anchors: d_osc = {case.d_osc}, but this head is built for "
                                 f"d_osc = {d_osc}")
    if case.mode not in modes:
        built = "built in RTL yet" if case.mode not in MODES else "in this build"
        raise AttentionHeadError(f"mode: {case.mode!r} is not {built} (this head: "
                                 f"{', '.join(map(repr, modes))})")
    if case.tokens > max_tokens or case.d_h > max_d_h:
        raise AttentionHeadError(f"q: (T, d_h) = ({case.tokens}, {case.d_h}) exceeds this "
                                 f"head's ({max_tokens}, {max_d_h})")
    if case.mode in OSCILLATOR_MODES:
        fe = front_end(case, config)      # its refusals (a row whose scores leave no eps)
    if case.mode in OSCILLATOR_MODES[1:] and case.d_osc == 2:
        engine_cases(case, fe, config)    # the loader's refusals (dt, tol; s0 + k > 62)
    _, shift = _case_constants(case, config)
    if not -(1 << (SHIFT_BITS - 1)) <= shift < (1 << (SHIFT_BITS - 1)):
        raise AttentionHeadError(f"q, k: the score shift F = {shift} does not fit the "
                                 f"{SHIFT_BITS}-bit register (q and k far from 1)")
    return case


#: The modes a compact head is built with: one of these.
COMPACT_MODES = (("analytic",), ("softmax",))


def check_compact(compact, *, cordic_arch: str, modes, d_osc: int, mac_lanes: int) -> bool:
    """`compact` as a bool, else TypeError; a compact head is the analytic head at d_osc 2 or
    the softmax head, with one MAC lane and iterative CORDICs (what the iCE40UP5K can
    hold), else AttentionHeadError."""
    if not isinstance(compact, (bool, np.bool_)):
        raise TypeError(f"compact must be True or False, not {compact!r}")
    if not compact:
        return False
    if tuple(modes) not in COMPACT_MODES:
        raise AttentionHeadError(f"a compact head (the iCE40UP5K's) is built with modes = "
                                 f"{' or '.join(map(repr, COMPACT_MODES))}, not {modes!r}")
    wanted = {"cordic_arch": ("iterative", cordic_arch), "d_osc": (2, d_osc),
              "mac_lanes": (1, mac_lanes)}
    for name, (need, given) in wanted.items():
        if given != need:
            raise AttentionHeadError(f"a compact head (the iCE40UP5K's) is built with "
                                     f"{name} = {need!r}, not {given!r}")
    return True


def head_d_osc(case: AttentionCase) -> int:
    """The d_osc of the head a validated case needs: its anchors' in an oscillator mode, 2
    (the default build) for softmax, which has no anchors."""
    return case.d_osc if case.mode in OSCILLATOR_MODES else 2


def check_d_osc(d_osc, modes) -> int:
    """d_osc as an int (2..MAX_D_OSC; above 2 only with the analytic mode among `modes`:
    d_osc is the oscillator's), else AttentionHeadError."""
    if isinstance(d_osc, bool) or not isinstance(d_osc, (int, np.integer)):
        raise TypeError(f"d_osc must be an integer, not {d_osc!r}")
    if not 2 <= d_osc <= MAX_D_OSC:
        raise AttentionHeadError(f"d_osc must be 2..{MAX_D_OSC}, not {d_osc}")
    if d_osc > 2 and "analytic" not in modes:
        raise AttentionHeadError(f"d_osc = {d_osc} without the analytic mode: d_osc is the "
                                 f"oscillator's (a softmax-only head has d_osc = 2)")
    return int(d_osc)


def _case_constants(case: AttentionCase, config: AttentionFixedConfig):
    """(c, F): the score constant and F = e_q + e_k + C (host step 0); softmax's c carries
    log2(e) (golden `softmax_constant`)."""
    _, e_q = quantize_tensor(case.q, config.qk_bits)
    _, e_k = quantize_tensor(case.k, config.qk_bits)
    constant = softmax_constant if case.mode == SOFTMAX else score_constant
    c, c_bits = constant(case.d_h)
    return c, e_q + e_k + c_bits


def head_writes(case, config: AttentionFixedConfig = DEFAULT_CONFIG, *, max_tokens: int,
                max_d_h: int, modes=None, d_osc: int = 2) -> list[np.ndarray]:
    """The `load` writes of each head of `case` (host step 0: golden `quantize_tensor`,
    `prepare_anchors`, `score_constant`): one (M, 3) int64 array of (target, addr, data) per
    head, registers last. q, k, v of token t, component d at address t * stride + d (stride
    = max_d_h rounded up to a power of two); anchor t at t, data a_x | a_y << 18 (d_osc > 2:
    component c of anchor t at t * 2**bits(d_osc - 1) + c, data a_c); signed values as two's
    complement of their width. `modes`: the head's build (default: every mode d_osc has)."""
    if modes is None:
        modes = MODES
    case = check_case(case, config, max_tokens=max_tokens, max_d_h=max_d_h, modes=modes,
                      d_osc=d_osc)
    q, _ = quantize_tensor(case.q, config.qk_bits)
    k, _ = quantize_tensor(case.k, config.qk_bits)
    v, _ = quantize_tensor(case.v)
    c, shift = _case_constants(case, config)
    stride = _stride(max_d_h)
    tokens, d_h = case.tokens, case.d_h
    addr = (np.arange(tokens)[:, None] * stride + np.arange(d_h)[None, :]).reshape(-1)
    qk_mask, data_mask = (1 << config.qk_bits) - 1, (1 << DATA_BITS) - 1
    registers = {"tokens": tokens, "d_h": d_h, "causal": int(case.causal), "p": case.p,
                 "score_c": c, "score_shift": shift & ((1 << SHIFT_BITS) - 1),
                 "mode": MODES.index(case.mode), "warm": int(case.init == "warm"),
                 "step_shift": 0}
    engine = start = None
    if case.mode in OSCILLATOR_MODES[1:] and d_osc == 2:
        engine = engine_constants(case, config)
        registers["step_shift"] = engine["s_ref"] & 63
    elif case.mode in OSCILLATOR_MODES[1:]:
        registers["flow_step"], registers["flow_tol"] = flow_constants(case)
        registers["max_steps"] = case.max_steps
        start = flow_start(case)
    heads = []
    for head in range(case.heads):
        rows = []
        for name, values, mask in (("q", q, qk_mask), ("k", k, qk_mask), ("v", v, data_mask)):
            words = values[head].reshape(-1).astype(np.int64) & mask
            rows.append(np.stack([np.full(addr.size, TARGETS[name]), addr, words], 1))
        if case.mode != SOFTMAX:            # softmax has no anchors
            a, _ = prepare_anchors(case.anchors[head:head + 1], config)
            if d_osc == 2:
                anchor = (a[0, :, 0] & data_mask) | ((a[0, :, 1] & data_mask) << DATA_BITS)
                where = np.arange(tokens)
            else:
                anchor = a[0].reshape(-1) & data_mask
                where = (np.arange(tokens)[:, None] << _osc_bits(d_osc)) \
                    + np.arange(d_osc)[None, :]
            rows.append(np.stack([np.full(anchor.size, TARGETS["anchor"]), where.reshape(-1),
                                  anchor], 1))
        if engine is not None:
            rows.append(_engine_writes(case, engine, head))
        if start is not None:               # the sphere flow's x0 ("warm": token 0's)
            count = 1 if case.init == "warm" else tokens
            where = (np.arange(count)[:, None] << _osc_bits(d_osc)) + np.arange(d_osc)
            rows.append(np.stack([np.full(where.size, TARGETS["start"]), where.reshape(-1),
                                  start[head, :count].reshape(-1) & data_mask], 1))
        rows.append(np.array([(TARGETS["reg"], REGISTERS[key], value)
                              for key, value in registers.items()]))
        heads.append(np.concatenate(rows).astype(np.int64))
    return heads


def _osc_bits(d_osc: int) -> int:
    """Address bits of an anchor's component at d_osc > 2 (address = t || c)."""
    return (d_osc - 1).bit_length()


def _engine_writes(case: AttentionCase, engine: dict, head: int) -> np.ndarray:
    """The array engine's writes of one ODE head: the start accumulators ("warm": token 0's
    only, the later tokens start where the last run ended), ode-pairwise's pinned anchors
    (at T + j, "warm" 1 + j: phi_acc and the pinned flag; the free ones' flags cleared) and
    the run registers (t and s are the head's to write)."""
    warm, tokens = case.init == "warm", case.tokens
    free = 1 if warm else tokens
    accs = [int(acc) for acc in engine["acc0"][head, :free]]
    pinned = [0] * free
    if case.mode == "ode-pairwise":
        accs += [int(acc) for acc in engine["phi_acc"][head]]
        pinned += [1] * tokens
    registers = {"n": len(accs), "drive_form": int(case.mode == "ode-drive"),
                 "pairwise_form": int(case.mode == "ode-pairwise"), "d": engine["d"],
                 "angle_shift": engine["angle_shift"], "tol_enable": 1,
                 "max_steps": case.max_steps}
    writes = [(ENGINE_TARGETS["acc"], index, acc) for index, acc in enumerate(accs)]
    writes += [(ENGINE_TARGETS["pinned"], index, flag) for index, flag in enumerate(pinned)]
    writes += [(ENGINE_TARGETS["reg"], ENGINE_REGISTERS[key], value)
               for key, value in registers.items()]
    return np.array([(TARGETS["engine"], (target << ENGINE_INDEX_BITS) | address, value)
                     for target, address, value in writes], np.int64)


def decode_items(items: np.ndarray, tokens: int, d_h: int, d_osc: int = 2) -> dict:
    """One head's `o` items ((N, 2) int64 of (value, kind)) as arrays: e_w (T,), h (T, d_osc),
    theta (T,), x (T, d_osc), attn (T, T), out (T, d_h). Raises ValueError if the kinds are
    not in the order the head gives them."""
    per_row = row_items(tokens, d_h, d_osc)
    names = header_names(d_osc)
    items = np.asarray(items, np.int64).reshape(-1, 2)
    if items.shape[0] != tokens * per_row:
        raise ValueError(f"{items.shape[0]} items for {tokens} rows of {per_row}")
    kinds = [_kind(name) for name in names] + [KINDS["attn"]] * tokens \
        + [KINDS["out"]] * d_h
    rows = items.reshape(tokens, per_row, 2)
    if not np.array_equal(rows[:, :, 1], np.tile(kinds, (tokens, 1))):
        raise ValueError("the head's items are not in row order (e_w, h, theta, x, attn, out)")
    values = rows[:, :, 0]
    header = {name: values[:, index] for index, name in enumerate(names)}
    start = len(names)
    h = [header["h_x"], header["h_y"]] + [header[f"h_{c}"] for c in range(2, d_osc)]
    x = [header["cos"], header["sin"]] + [header[f"x_{c}"] for c in range(2, d_osc)]
    return {"e_w": header["e_w"], "h": np.stack(h, -1),
            "theta": header["theta"], "x": np.stack(x, -1),
            "steps": header["steps"], "converged": header["converged"].astype(bool),
            "attn": values[:, start:start + tokens], "out": values[:, start + tokens:]}


# ---------------------------------------------------------------------------------------------
# Clocks

def cordic_latencies(config: AttentionFixedConfig = DEFAULT_CONFIG,
                     cordic_arch: str = "pipelined") -> tuple[int, int, int]:
    """(L_v, L_r, L_d): clocks from a CORDIC's input handshake to its output (vector, rotate,
    divide): the pipeline latency, or the iterative CORDIC's cycles per result."""
    if cordic_arch not in ARCHITECTURES:
        raise AttentionHeadError(f"unknown cordic_arch {cordic_arch!r}; choose one of "
                                 f"{', '.join(ARCHITECTURES)}")
    configs = (config.vector, config.rotate, config.divide)
    if cordic_arch == "pipelined":
        return tuple(c.latency_pipelined for c in configs)
    from .cordic_iterative import schedule_program
    return tuple(schedule_program(c).length + 1 for c in configs)


#: Clocks of a row besides the passes' items and the CORDICs: ROW 1, SCORES drain 4,
#: EXPONENT WeightExponent.cycles (21), WEIGHTS drain 4, NORMALIZE 1 + Normalizer.latency (4),
#: VECTOR and ROTATE 1 each (the handshake clock), READOUT drain 1 + Numerator.latency (5),
#: RECIP 2 (the Reciprocal's register and the handshake), ATTN drain 3, OUT drain 3, EMIT's
#: header 8 (steps and converged included).
ROW_OVERHEAD = 1 + 4 + WeightExponent.cycles + 4 + (1 + Normalizer.latency) + 1 + 1 \
    + (1 + Numerator.latency) + 2 + 3 + 3 + len(HEADER)


#: The softmax row's: ROW 1, SCORES drain 4, EXP drain 3 + NegExp2.latency (6), RECIP 2,
#: ATTN drain 3, OUT drain 3, EMIT's header 8.
SOFTMAX_ROW_OVERHEAD = 1 + 4 + (3 + NegExp2.latency) + 2 + 3 + 3 + len(HEADER)


def cycles_per_row(attended: int, tokens: int, d_h: int,
                   config: AttentionFixedConfig = DEFAULT_CONFIG,
                   cordic_arch: str = "pipelined", mode: str = "analytic",
                   d_osc: int = 2, mac_lanes: int = 1) -> int:
    """Clocks of one row with n = `attended` tokens (the `o` stream always ready).
    analytic: SCORES n d_h + 4, EXPONENT 21, WEIGHTS n + 4, NORMALIZE 4, VECTOR L_v + 1,
    ROTATE L_r + 1, READOUT n + 5, RECIP L_d + 2, ATTN n + 3, OUT n d_h + 3,
    EMIT 8 + T + d_h; at d_osc > 2, SPHERE (`sphere_cycles`) instead of NORMALIZE, VECTOR
    and ROTATE. softmax: SCORES n d_h + 4, EXP n + 6, RECIP L_d + 2, ATTN n + 3,
    OUT n d_h + 3, EMIT 8 + T + d_h. On a head of d_osc > 2 every row's header has
    2 d_osc + 4 items (`header_names`), not 8. With L = `mac_lanes`, SCORES and OUT take
    n G clocks (G = `mac_groups`, ceil(d_h / L)), and SCORES drains through the lanes'
    adder tree (`score_tree_stages`) besides."""
    n = attended
    latencies = cordic_latencies(config, cordic_arch)
    header = len(header_names(d_osc)) - len(HEADER)
    macs = 2 * n * mac_groups(d_h, mac_lanes) + score_tree_stages(mac_lanes)
    if mode == SOFTMAX:
        return macs + 2 * n + tokens + d_h + latencies[2] + SOFTMAX_ROW_OVERHEAD + header
    if mode != "analytic":
        raise AttentionHeadError(f"cycles_per_row: mode {mode!r} has no fixed row length "
                                 f"(the ODE modes: ode_cycles)")
    if d_osc > 2:           # SPHERE; no NORMALIZE, nor VECTOR's and ROTATE's handshakes
        l_d = latencies[2]
        return macs + 3 * n + tokens + d_h + l_d + sphere_cycles(d_osc, l_d) \
            + ROW_OVERHEAD - (1 + Normalizer.latency) - 2 + header
    return macs + 3 * n + tokens + d_h + sum(latencies) + ROW_OVERHEAD


def cycles_per_head(tokens: int, d_h: int, causal: bool,
                    config: AttentionFixedConfig = DEFAULT_CONFIG,
                    cordic_arch: str = "pipelined", mode: str = "analytic",
                    d_osc: int = 2, mac_lanes: int = 1) -> int:
    """`cycles` after a head (the `o` stream always ready): the sum of `cycles_per_row`
    over the rows (n = i + 1 when causal, else T). Closed form, analytic:
    T (T + d_h + L + 57) + (2 d_h + 3) N, N = T (T + 1) / 2 (causal) or T**2,
    L = L_v + L_r + L_d; softmax: T (T + d_h + L_d + 27) + (2 d_h + 2) N (at mac_lanes 1:
    `cycles_per_row` for more lanes)."""
    return sum(cycles_per_row(i + 1 if causal else tokens, tokens, d_h, config, cordic_arch,
                              mode, d_osc, mac_lanes) for i in range(tokens))


def flow_cycles(tokens: int, d_h: int, causal: bool, steps, d_osc: int,
                config: AttentionFixedConfig = DEFAULT_CONFIG,
                cordic_arch: str = "pipelined", mode: str = "ode-drive",
                mac_lanes: int = 1) -> int:
    """`cycles` after an ODE head at d_osc > 2 (the `o` stream always ready), given each
    row's Euler steps (T,) (0 for a zero drive, max_steps for one that never calmed): the
    analytic row's (`cycles_per_row`) without SPHERE, plus FLOW_RECIP L_d + 2, FLOW_HN and
    FLOW_LOAD d + 1 each, and per step FLOW_X d + 1, the normalizer (`sphere_cycles`) and
    FLOW_CHECK d; then ode-drive: FLOW_DOT and FLOW_V d + 1 each; ode-pairwise: PW_FETCH 1,
    for each of the row's n anchors FLOW_DOT and FLOW_V d + 1 each and PW_ACC d + 2, then
    PW_NORM d + 1."""
    l_d = cordic_latencies(config, cordic_arch)[2]
    sphere = sphere_cycles(d_osc, l_d)
    common = (d_osc + 1) + sphere + d_osc
    total = 0
    for i, count in enumerate(np.asarray(steps, np.int64)):
        n = i + 1 if causal else tokens
        if mode == "ode-drive":
            per_step = common + 2 * (d_osc + 1)
        else:
            per_step = common + 1 + n * (3 * d_osc + 4) + (d_osc + 1)
        total += cycles_per_row(n, tokens, d_h, config, cordic_arch, "analytic", d_osc,
                                mac_lanes) \
            - sphere + (l_d + 2) + 2 * (d_osc + 1) + int(count) * per_step
    return total


def ode_cycles(tokens: int, d_h: int, causal: bool, mode: str, runs, warm: bool = False,
               config: AttentionFixedConfig = DEFAULT_CONFIG,
               cordic_arch: str = "pipelined", mac_lanes: int = 1) -> int:
    """`cycles` after an ODE head (the `o` stream always ready). `runs`: (m, steps) of each
    array-engine run, in order (m oscillators, free and pinned: T or 2T, "warm" 1 or 1 + T):
    one per head, or one per token when `warm` (a zero drive runs too: CONVERGE_STEPS calm
    steps).

    Pass A, per row: ROW 1, SCORES n d_h + 4, EXPONENT 21, WEIGHTS n + 4, DRIVE_RECIP L_d + 2,
    then ode-drive: DRIVE_PRODUCT, _ROUND, _STORE, _PEAK 1 each; ode-pairwise: PW_STORE 1,
    PW_SEARCH E_PW_MAX - E_PW_MIN + PW_SEARCH_LAG.
    ode-pairwise's couplings: KN_START 1 once; per written row (c = m columns) KN_ROW,
    KN_LOAD, KN_BOUND, KN_SHIFT, KN_END 1 each and KN_COLS c + 3 (twice when warm: t',
    then the writes).
    Per run: ode-drive's ENGINE_DRIVES m + 2; ENGINE_T, ENGINE_SHIFT, ENGINE_START 1 each,
    the engine's `cycles_per_run` + 1 (ENGINE_WAIT), ENGINE_PHASES m.
    Pass C, per row: ROW_C, ROW_C_LOAD 1 each, ROTATE L_r + 1, READOUT n + 5, RECIP L_d + 2,
    ATTN n + 3, OUT n d_h + 3, EMIT len(HEADER) + T + d_h. With L = `mac_lanes` lanes,
    n d_h is n G (`mac_groups`) in SCORES and OUT, and SCORES drains `score_tree_stages`
    clocks more."""
    if mode not in MODES[1:]:
        raise AttentionHeadError(f"mode {mode!r} has no engine run (choose from "
                                 f"{', '.join(MODES[1:])})")
    _, l_r, l_d = cordic_latencies(config, cordic_arch)
    pairwise = mode == "ode-pairwise"
    engine_config = ArrayFixedConfig(capacity=max(2, 2 * tokens), phase_bits=config.phase_bits,
                                     acc_bits=config.acc_bits)
    form = "pairwise" if pairwise else "drive"
    row_extra = 1 + (E_PW_MAX - E_PW_MIN + PW_SEARCH_LAG) if pairwise else 4
    total = 1 if pairwise else 0
    groups, tree = mac_groups(d_h, mac_lanes), score_tree_stages(mac_lanes)
    for i in range(tokens):
        n = i + 1 if causal else tokens
        total += n * groups + tree + n + l_d + WeightExponent.cycles + 11 + row_extra  # A
        total += n * groups + 2 * n + tokens + d_h + l_r + l_d + 16 + len(HEADER)      # C
    for m, steps in runs:
        total += m + 4 + cycles_per_run(engine_config, m, form, steps, cordic_arch=cordic_arch)
        if not pairwise:
            total += m + 2                                          # ENGINE_DRIVES
        elif warm:
            total += 5 + 2 * (m + 3)                                # the token's row
        else:
            total += tokens * (5 + m + 3)                           # every row
    return total


def ode_engine_runs(case, result, head: int) -> list[tuple[int, int]]:
    """`ode_cycles`' runs of one head of an ODE case (an AttentionCase or a case dict): (m,
    steps) of each engine run, from a result with steps and h_int (golden-fixed's or the
    RTL's): one run per head (every non-zero row reports its steps) or one per token
    ("warm"); a zero drive's run takes CONVERGE_STEPS calm steps; NOT_CONVERGED ran
    max_steps. m: the oscillators, with ode-pairwise's T pinned anchors."""
    if not isinstance(case, AttentionCase):
        case = validate_case(case)
    zero = (np.asarray(result["h_int"][head]) == 0).all(-1)
    steps = np.asarray(result["steps"][head])
    ran = np.where(steps == NOT_CONVERGED, int(case.max_steps),
                   np.where(zero, CONVERGE_STEPS, steps))
    anchors = zero.size if case.mode == "ode-pairwise" else 0
    if case.init == "warm":
        return [(1 + anchors, int(n)) for n in ran]
    return [(zero.size + anchors,
             int(ran[~zero].max()) if (~zero).any() else CONVERGE_STEPS)]


# ---------------------------------------------------------------------------------------------
# The head

def lend_reciprocal(m: Module, sphere, recip, in_state) -> None:
    """In the current state, the sphere normalizer's N takes the head's reciprocal unit (idle
    there) and gets its (r, L); in_state["SPHERE"] selects N as the unit's input."""
    m.d.comb += [in_state["SPHERE"].eq(1), recip.i.valid.eq(sphere.root.valid),
                 sphere.root.ready.eq(recip.i.ready), sphere.inverse.valid.eq(recip.o.valid),
                 sphere.inverse.payload.eq(recip.o.payload)]


class AttentionHead(wiring.Component):
    """Paper A's head in the analytic mode, one head at a time (module docstring).

    Parameters
    ----------
    config : AttentionFixedConfig   formats (phase bits P, q/k bits B)
    max_tokens : int                T capacity (the memories and buffers; 1..2048)
    max_d_h : int                   d_h capacity (1..128; the score product fits 63 bits)
    cordic_arch : str               "pipelined" (default) or "iterative" for the three
                                    CORDICs (vector, rotate, divide), each used once a row,
                                    and the array engine's
    modes : tuple of str            MODES to build: "analytic" (always), "ode-drive" and
                                    "ode-pairwise" (one `ArrayEngine`, 1 lane, capacity
                                    max_tokens, or 2 max_tokens with pairwise's pinned
                                    anchors; `ode_cycles` lists the passes)
    d_osc : int                     the anchors' and the state's components: 2 (the phase
                                    oscillator: vector and rotation CORDICs), or 3..16 (the
                                    unit vector on the sphere, golden/attention_sphere.py:
                                    `SphereNormalizer` instead of those CORDICs; the ODE
                                    modes are the Lohe flow there, no array engine)
    mac_lanes : int                 L, products per clock in SCORES and OUT (a power of two
                                    up to max_d_h rounded up; default 1): q, k and v in L
                                    banks (component d in bank d mod L), L score products
                                    summed by a pipelined adder tree, L value accumulators
                                    and out banks; those passes take n ceil(d_h / L) clocks
                                    a row instead of n d_h, for L score and L value
                                    multipliers. The arithmetic is exact, so the result is
                                    the same bit for bit at every L.
    compact : bool                  the same head in less area, for the iCE40UP5K (only
                                    the analytic mode at d_osc 2 or the softmax mode
                                    alone, one MAC lane, iterative CORDICs):
                                    q k, g r and attn v on one multiplier, W a
                                    on the Numerator's x a multipliers (the passes never
                                    overlap), one CORDIC datapath for vectoring,
                                    rotation and the reciprocal
                                    (`SharedCordicIterative`), the weight exponent
                                    search, Normalizer, reciprocal and the W and attn
                                    shifts building only the bits they keep
                                    (hdl/lean.py), and q and k single-port (the load's
                                    address while idle), so the UP5K puts them in SPRAM.
                                    The same results and clocks.

    Ports
    -----
    start : In(1)        runs rows 0 .. T-1 of the loaded head (ignored while busy)
    busy : Out(1)        a head is running
    done : Out(1)        the last run has finished (until the next start)
    error : Out(1)       some row of the last run had no W exponent in [E_MIN, E_MAX] (a case
                         the golden model refuses; its row used E_MIN)
    cycles : Out(32)     clocks from start to done (counts while busy)
    load : In(stream)    writes (target, addr, data) while not busy (ready = not busy):
                         q, k (B-bit two's complement), v (18-bit) at address t * stride + d;
                         anchor t: a_x | a_y << 18 (Q2.16) at t (d_osc > 2: component c at
                         t * 2**bits(d_osc - 1) + c); reg (REGISTERS): tokens, d_h,
                         causal, p, score_c, score_shift. `head_writes` encodes a case.
    o : Out(stream)      per row, `row_items` items of (value, kind): e_w, h_x, h_y, theta
                         (P-bit unsigned), cos, sin (`header_names`: at d_osc > 2 every
                         component of h and x, theta 0), attn_i0 .. attn_i(T-1), out_i0 ..
                         out_i(d_h-1). The head waits while an item is not taken.
    """

    def __init__(self, config: AttentionFixedConfig = DEFAULT_CONFIG, *, max_tokens: int = 64,
                 max_d_h: int = 32, cordic_arch: str = "pipelined", modes=("analytic",),
                 d_osc: int = 2, mac_lanes: int = 1, compact: bool = False):
        try:
            _check_sizes(config, max_tokens, max_d_h)
            self.mac_lanes = check_mac_lanes(mac_lanes, max_d_h)
            cordic_latencies(config, cordic_arch)
            self.modes = check_modes(modes)
            self.d_osc = check_d_osc(d_osc, self.modes)
            self.compact = check_compact(compact, cordic_arch=cordic_arch, modes=self.modes,
                                         d_osc=self.d_osc, mac_lanes=self.mac_lanes)
        except Exception:
            self._MustUse__silence = True
            raise
        self.config = config
        self.max_tokens, self.max_d_h = int(max_tokens), int(max_d_h)
        self.cordic_arch = cordic_arch
        self.widths = _widths(config, self.max_tokens, self.max_d_h)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "cycles": Out(CYCLE_BITS),
            "load": In(stream.Signature(load_layout(config, self.max_tokens, self.max_d_h))),
            "o": Out(stream.Signature(output_layout(config, self.max_tokens, self.max_d_h))),
        })

    def _ode_datapath(self, m, *, rd, wr, row, tokens, causal, attended, h, row_e_w,
                      weight, w_tag, recip, drive_recip, call_once, sent, r,
                      theta, total, pass_c, row_steps, row_converged, busy, warm, mode,
                      step_shift):
        """The ODE modes' pieces around the head's own (golden attention_fixed's module
        docstring, steps 5-7), on one array engine: pass A's s_i and reciprocal, then
        ode-drive: hn_i = R(h r, 32 + L) and the run's drive shift k;
        ode-pairwise: W_ij kept, the row's exponent e_i (the head's e = min e_i) and, after
        the rows, kn_ij = R(W_ij r_i, 32 + L_i - e_i) written into the engine's k (row i,
        column base + j), e_i - e into its row shift, with its sum shift t (and, "warm",
        each token's shift t', now always 0);
        then the engine's run(s), and pass C's row start. Returns begin_head, begin_row
        (sync statements for the IDLE and ROW states) and states (the FSM states it adds)."""
        cfg, w, cap = self.config, self.widths, self.max_tokens
        P, A = cfg.phase_bits, cfg.acc_bits
        has_drive, has_pairwise = "ode-drive" in self.modes, "ode-pairwise" in self.modes
        h_x, h_y = h
        r_value, r_shift = r
        token_bits = max(1, (cap - 1).bit_length())
        pairwise = mode == MODES.index("ode-pairwise")
        pair = data.StructLayout({"x": signed(DATA_BITS), "y": signed(DATA_BITS)})
        info_layout = data.StructLayout({"e_w": unsigned(len(row_e_w)),
                                         "h_x": signed(w["h"]), "h_y": signed(w["h"])})
        run_layout = data.StructLayout({"steps": unsigned(STEP_COUNT_BITS), "converged": 1})
        memories = {"info": Memory(shape=info_layout, depth=cap, init=[]),
                    "theta": Memory(shape=unsigned(P), depth=cap, init=[]),
                    "run": Memory(shape=run_layout, depth=cap, init=[])}
        if has_drive:
            memories["hn"] = Memory(shape=pair, depth=cap, init=[])
        if has_pairwise:
            row_layout = data.StructLayout({"r": unsigned(W_BITS), "shift": signed(8),
                                            "zero": 1, "attended": range(cap + 1)})
            memories["w"] = Memory(shape=unsigned(W_BITS), depth=1 << (2 * token_bits),
                                   init=[])
            memories["row"] = Memory(shape=row_layout, depth=cap, init=[])
            memories["e"] = Memory(shape=range(E_PW_MAX + 1), depth=cap, init=[])   # e_i
        for name, memory in memories.items():
            m.submodules[f"mem_ode_{name}"] = memory
            rd[f"ode_{name}"], wr[f"ode_{name}"] = memory.read_port(), memory.write_port()

        oscillators = 2 * cap if has_pairwise else cap
        engine_config = ArrayFixedConfig(capacity=max(2, oscillators), phase_bits=P,
                                         acc_bits=A)
        forms = (("drive",) if has_drive else ()) + (("pairwise",) if has_pairwise else ())
        m.submodules.engine = engine = ArrayEngine(engine_config, lanes=1, forms=forms,
                                                   cordic_arch=self.cordic_arch)
        m.d.comb += engine.order.ready.eq(1)        # r(t) is not part of the head's result

        # The host's engine writes pass through while the head is idle (the engine is then
        # idle too: its load is ready); the states below drive the port themselves.
        load, eload = self.load.payload, engine.load
        m.d.comb += [
            eload.valid.eq(self.load.valid & ~busy & (load.target == TARGETS["engine"])),
            eload.payload.target.eq(load.addr[ENGINE_INDEX_BITS:ENGINE_INDEX_BITS + 3]),
            eload.payload.addr.eq(load.addr[:ENGINE_INDEX_BITS]),
            eload.payload.data.eq(load.data)]

        def engine_write(target, addr, value):
            m.d.comb += [eload.valid.eq(1), eload.payload.target.eq(ENGINE_TARGETS[target]),
                         eload.payload.addr.eq(addr), eload.payload.data.eq(value)]

        def count_fitting(value, limits):
            """#{limits l: value <= l} (limits descending: monotone): a largest shift."""
            return Mux(value == 0, 0, sum(value <= bound for bound in limits))

        # -- the run: its size, shifts and engine registers ------------------------------------
        run_base, run_n = Signal(range(cap)), Signal(range(cap + 1))     # free oscillators
        run_items = Signal(range(2 * cap + 2))                           # all oscillators
        written = Signal(range(2 * cap + 2))
        run_steps, run_converged = Signal(STEP_COUNT_BITS), Signal()
        engine_t = Signal(6)
        run_exponent = Signal(signed(8))        # drive: k; pairwise: e + t' - t
        half = 1 << (A - P - 1)

        # -- ode-drive: hn_i and the drive shift k ----------------------------------------------
        if has_drive:
            product = signed(w["h"] + DATA_BITS)
            prod_x, prod_y = Signal(product), Signal(product)
            hn_x, hn_y = Signal(signed(DATA_BITS)), Signal(signed(DATA_BITS))
            square, peak = Signal(unsigned(2 * DATA_BITS)), Signal(unsigned(2 * DATA_BITS))
            # drive_shift: k = #{j >= 1: peak 4**j <= (2**17 - 1)**2}, a register (peak is
            # final from DRIVE_PEAK on; ENGINE_DRIVES's first write is its second clock).
            k = Signal(range(18))
            m.d.sync += k.eq(count_fitting(peak, [DATA_MAX ** 2 >> (2 * j)
                                                  for j in range(1, 18)]))
            shifted = Cat((rd["ode_hn"].data.x << k)[:DATA_BITS],
                          (rd["ode_hn"].data.y << k)[:DATA_BITS])
            issued = Signal(range(cap + 1))
            write_valid, write_addr = Signal(), Signal(range(cap))

        # -- ode-pairwise: W kept, e_i, kn and its sums -----------------------------------------
        if has_pairwise:
            limit = (1 << (COUPLING_BITS - 1)) - 1
            w_max = Signal(unsigned(W_BITS))
            with m.If(w_tag.valid):
                m.d.comb += [wr["ode_w"].addr.eq(Cat(w_tag.j[:token_bits], row[:token_bits])),
                             wr["ode_w"].data.eq(weight), wr["ode_w"].en.eq(pairwise)]
                with m.If(weight > w_max):
                    m.d.sync += w_max.eq(weight)
            # e_i: the largest e in [E_PW_MIN, E_PW_MAX] with R(max_j W_ij r_i, 32 + L - e)
            # <= 2**15 - 1 (monotone in e; E_PW_MIN always fits), one e per clock into a
            # pipeline, as `WeightExponent`: c0 the shift 32 + L - e (a register counting
            # down beside e_try), c1 its clamped amounts (`shift_amounts`), c2 the variable
            # shift s (`shift_split`) and the compare: R = (s >> 1) + s[0] <= 2**15 - 1 is
            # s <= 2**16 - 2; c3 e_row takes e where it fits.
            top = Signal(unsigned(W_BITS * 2))          # max_j W_ij r_i
            e_try = Signal(range(E_PW_MAX + PW_SEARCH_LAG + 2))
            e_row, e_head = Signal(range(E_PW_MAX + 1)), Signal(range(E_PW_MAX + 1))
            pw_amount = Signal((2 * FRAC + r_shift - e_try).shape())
            pw_amounts = shift_amounts(m, pw_amount, 2 * W_BITS + 1, FRAC, "sync", "pw")
            pw_e = [Signal(range(E_PW_MAX + 1), name=f"pw_e_{stage}") for stage in (1, 2)]
            pw_valid = [Signal(name=f"pw_valid_{stage}") for stage in (1, 2)]
            pw_fits = Signal()
            m.d.sync += [pw_valid[0].eq(0), pw_valid[1].eq(pw_valid[0]),
                         pw_e[1].eq(pw_e[0]),
                         pw_fits.eq(shift_split(top, *pw_amounts) <= 2 * limit)]
            # e_row with the last candidate's result (the clock it leaves the pipeline).
            e_found = Mux(pw_valid[1] & pw_fits, pw_e[1], e_row)
            row_info = rd["ode_row"].data
            kn_row = Signal(range(cap))                 # the head's row i being written
            col = Signal(range(2 * cap + 2))            # the engine's column
            base = Mux(warm, 1, tokens)                 # column of anchor 0
            row_r, row_shift = Signal(unsigned(W_BITS)), Signal(signed(8))
            e_kn = Signal(range(E_PW_MAX + 1))          # the row's own exponent e_i
            row_zero, row_attended = Signal(), Signal(range(cap + 1))
            anchor = col - base
            writing = Signal()          # "warm" runs each row twice: find t', then write
            t_prime = Signal(range(COUPLING_BITS))
            word = Signal(range(4 * cap * cap + 1))     # engine k word of (row, column 0)
            kn_tag = data.StructLayout({"valid": 1, "last": 1, "use": 1,
                                        "col": range(2 * cap + 2)})
            t0 = Signal(kn_tag)
            t1, t3 = delay_line(m, t0, 1, "kn"), delay_line(m, t0, 3, "kn")
            kn_product = Signal(unsigned(2 * W_BITS))
            kn = Signal(unsigned(COUPLING_BITS))
            # The row's shift 32 + L_i - e_i is a register from KN_LOAD on (formed from the
            # memories' words), its clamped amounts one clock later (KN_COLS's first clock):
            # kn (its third) is the variable shift and its rounding add only.
            kn_amount = Signal((2 * FRAC + row_shift - e_kn).shape())
            kn_amounts = shift_amounts(m, kn_amount, 2 * W_BITS + 1, FRAC, "sync", "kn")
            m.d.sync += [kn_product.eq(Mux(t1.use, rd["ode_w"].data * row_r, 0)),
                         kn.eq(round_shift_finish(shift_split(kn_product, *kn_amounts)))]
            kn_value = (kn << Mux(writing & warm, t_prime, 0))[:COUPLING_BITS]
            row_sum = Signal(COUPLING_BITS + token_bits + 1)
            kn_max = Signal(COUPLING_BITS)
            # t' a register: "warm" uses it in its second pass over the row (its first write
            # 4 clocks after the first pass's last kn_max) and in KN_END.
            m.d.sync += t_prime.eq(count_fitting(kn_max, [limit >> j
                                                          for j in range(1, COUPLING_BITS)]))
            # KN_END's sum shift, in the two clocks before it (KN_BOUND, KN_SHIFT): the
            # bound v = row_sum M, then max(0, bitlen(v + (v >> 17) + 1) - 17); the row
            # shift r_i = e_i - e beside them.
            fits = SCALE_BITS - 1
            kn_bound = Signal((row_sum * pairwise_term_bound(engine_config)).shape())
            length = bit_length(kn_bound + (kn_bound >> fits) + 1)
            kn_sum_shift = Signal(Mux(length > fits, length - fits, 0).shape())
            kn_gap = Signal(Mux(warm | row_zero, 0, e_kn - e_head).shape())

        def begin_head():
            if has_drive:
                m.d.sync += peak.eq(0)
            if has_pairwise:
                m.d.sync += e_head.eq(E_PW_MAX)

        def begin_row():
            if has_drive:
                with m.If(warm):
                    m.d.sync += peak.eq(0)
            if has_pairwise:
                m.d.sync += w_max.eq(0)

        def start_readout_pass():
            m.d.sync += [row.eq(0), pass_c.eq(1)]
            m.next = "ROW_C"

        def next_row_or(state):
            """After pass A's row: the next row, or `state` after the last."""
            with m.If(row == tokens - 1):
                m.next = state
            with m.Else():
                m.d.sync += row.eq(row + 1)
                m.next = "ROW"

        def begin_kn_row(index):
            m.d.sync += kn_row.eq(index)
            m.next = "KN_ROW"

        def next_warm_token():
            """"warm", after token i's run: token i + 1. ode-drive computes its row (pass A
            goes on), ode-pairwise writes its couplings (pass A is done)."""
            following = run_base + 1

            def continue_pass_a():
                m.d.sync += row.eq(following)
                m.next = "ROW"
            if not has_pairwise:
                continue_pass_a()
                return
            with m.If(pairwise):
                begin_kn_row(following)
            if has_drive:
                with m.Else():
                    continue_pass_a()

        def states():
            with m.State("DRIVE_RECIP"):
                m.d.comb += drive_recip.eq(1)
                with m.If(call_once(recip)):
                    m.d.sync += [r_value.eq(recip.o.payload.r),
                                 r_shift.eq(recip.o.payload.shift)]
                    if has_drive:
                        m.next = "DRIVE_PRODUCT"
                    if has_pairwise:
                        with m.If(pairwise):
                            m.next = "PW_STORE"

            if has_drive:
                with m.State("DRIVE_PRODUCT"):
                    r_unsigned = r_value[:DATA_BITS - 1]
                    m.d.sync += [prod_x.eq(h_x * r_unsigned), prod_y.eq(h_y * r_unsigned)]
                    m.next = "DRIVE_ROUND"

                with m.State("DRIVE_ROUND"):
                    # hn = R(h r, 32 + L): 32 + L is in 16 .. 32 + bits(T).
                    amount = (r_shift + 2 * FRAC)[:6]
                    m.d.sync += [hn_x.eq(round_shift_var(prod_x, amount)),
                                 hn_y.eq(round_shift_var(prod_y, amount))]
                    m.next = "DRIVE_STORE"

                with m.State("DRIVE_STORE"):
                    m.d.comb += [wr["ode_hn"].addr.eq(row), wr["ode_hn"].en.eq(1),
                                 wr["ode_hn"].data.x.eq(hn_x), wr["ode_hn"].data.y.eq(hn_y)]
                    m.d.sync += square.eq(hn_x * hn_x + hn_y * hn_y)
                    store_info()
                    m.next = "DRIVE_PEAK"

                with m.State("DRIVE_PEAK"):
                    m.d.sync += [peak.eq(Mux(square > peak, square, peak)), issued.eq(0),
                                 write_valid.eq(0)]
                    with m.If(warm):
                        m.d.sync += [run_base.eq(row), run_n.eq(1), run_items.eq(1)]
                        m.next = "ENGINE_DRIVES"
                    with m.Else():
                        m.d.sync += [run_base.eq(0), run_n.eq(tokens), run_items.eq(tokens)]
                        next_row_or("ENGINE_DRIVES")

                with m.State("ENGINE_DRIVES"):
                    # hn of oscillator `issued` is read, and written shifted by k a clock later.
                    m.d.comb += rd["ode_hn"].addr.eq(run_base + issued)
                    m.d.sync += [write_valid.eq(issued < run_n), engine_t.eq(0),
                                 run_exponent.eq(k)]
                    with m.If(issued < run_n):
                        m.d.sync += [issued.eq(issued + 1), write_addr.eq(issued)]
                    with m.If(write_valid):
                        engine_write("drive", write_addr, shifted)
                    with m.Elif(issued == run_n):
                        m.next = "ENGINE_T"

            if has_pairwise:
                with m.State("PW_STORE"):
                    m.d.comb += [wr["ode_row"].addr.eq(row), wr["ode_row"].en.eq(1),
                                 wr["ode_row"].data.r.eq(r_value[:W_BITS]),
                                 wr["ode_row"].data.shift.eq(r_shift),
                                 wr["ode_row"].data.zero.eq((h_x == 0) & (h_y == 0)),
                                 wr["ode_row"].data.attended.eq(attended)]
                    m.d.sync += [top.eq(w_max * r_value[:W_BITS]), e_try.eq(E_PW_MIN + 1),
                                 pw_amount.eq(2 * FRAC + r_shift - (E_PW_MIN + 1)),
                                 e_row.eq(E_PW_MIN)]
                    store_info()
                    m.next = "PW_SEARCH"

                with m.State("PW_SEARCH"):
                    # e_try is issued (c0: e_try, pw_amount) while <= E_PW_MAX; its result
                    # leaves the pipeline PW_SEARCH_LAG clocks later.
                    m.d.sync += [e_try.eq(e_try + 1), pw_amount.eq(pw_amount - 1),
                                 pw_valid[0].eq(e_try <= E_PW_MAX), pw_e[0].eq(e_try)]
                    m.d.sync += e_row.eq(e_found)
                    with m.If(e_try == E_PW_MAX + PW_SEARCH_LAG):
                        m.d.comb += [wr["ode_e"].addr.eq(row), wr["ode_e"].data.eq(e_found),
                                     wr["ode_e"].en.eq(1)]
                        with m.If(~((h_x == 0) & (h_y == 0)) & (e_found < e_head)):
                            m.d.sync += e_head.eq(e_found)
                        next_row_or("KN_START")

                with m.State("KN_START"):
                    # After pass A: every row's couplings (warm: row 0's, the first run).
                    m.d.sync += [word.eq(0), engine_t.eq(0), row.eq(0)]
                    begin_kn_row(0)

                with m.State("KN_ROW"):
                    m.d.comb += [rd["ode_row"].addr.eq(kn_row), rd["ode_e"].addr.eq(kn_row)]
                    m.d.sync += [writing.eq(~warm), kn_max.eq(0)]
                    m.next = "KN_LOAD"

                with m.State("KN_LOAD"):
                    m.d.sync += [row_r.eq(row_info.r), row_shift.eq(row_info.shift),
                                 row_zero.eq(row_info.zero), e_kn.eq(rd["ode_e"].data),
                                 kn_amount.eq(2 * FRAC + row_info.shift - rd["ode_e"].data),
                                 row_attended.eq(row_info.attended), col.eq(0),
                                 row_sum.eq(0)]
                    m.next = "KN_COLS"

                with m.State("KN_COLS"):
                    columns = Mux(warm, tokens + 1, 2 * tokens)
                    m.d.comb += [rd["ode_w"].addr.eq(Cat(anchor[:token_bits],
                                                         kn_row[:token_bits])),
                                 t0.valid.eq(col < columns), t0.col.eq(col),
                                 t0.last.eq(col == columns - 1),
                                 t0.use.eq((col >= base) & (anchor < row_attended)
                                           & ~row_zero)]
                    with m.If(col < columns):
                        m.d.sync += col.eq(col + 1)
                    with m.If(t3.valid):
                        with m.If(writing):
                            engine_write("k", word + t3.col, kn_value)
                            m.d.sync += row_sum.eq(row_sum + kn_value)
                        with m.If(kn > kn_max):
                            m.d.sync += kn_max.eq(kn)
                    with m.If(t3.valid & t3.last):
                        with m.If(~writing):             # warm: now write with t'
                            m.d.sync += [writing.eq(1), col.eq(0), row_sum.eq(0)]
                        with m.Else():
                            m.next = "KN_BOUND"

                with m.State("KN_BOUND"):
                    # The engine's row shift r_i = e_i - e (e = e_head; a warm run's one row
                    # is its own base, as is a zero row: no couplings) and its sum shift t,
                    # the largest u_i - r_i (golden pairwise_sum_shift: u_i =
                    # max(0, bitlen(w) - 17), w = v + (v >> 17) + 1, v = sum_j kn_ij M).
                    m.d.sync += [kn_bound.eq(row_sum * pairwise_term_bound(engine_config)),
                                 kn_gap.eq(Mux(warm | row_zero, 0, e_kn - e_head))]
                    m.next = "KN_SHIFT"

                with m.State("KN_SHIFT"):
                    m.d.sync += kn_sum_shift.eq(Mux(length > fits, length - fits, 0))
                    m.next = "KN_END"

                with m.State("KN_END"):
                    gap = kn_gap
                    need = kn_sum_shift - gap
                    t_next = Mux(warm | (need > engine_t), need, engine_t)
                    engine_write("row_shift", Mux(warm, 0, kn_row), gap)
                    m.d.sync += [engine_t.eq(t_next), run_exponent.eq(
                        Mux(warm, e_kn + t_prime, e_head) - t_next)]
                    with m.If(warm):
                        m.d.sync += [run_base.eq(kn_row), run_n.eq(1),
                                     run_items.eq(tokens + 1)]
                        m.next = "ENGINE_T"
                    with m.Elif(kn_row == tokens - 1):
                        m.d.sync += [run_base.eq(0), run_n.eq(tokens),
                                     run_items.eq(2 * tokens)]
                        m.next = "ENGINE_T"
                    with m.Else():
                        m.d.sync += word.eq(word + 2 * tokens)
                        begin_kn_row(kn_row + 1)

            with m.State("ENGINE_T"):
                engine_write("reg", ENGINE_REGISTERS["t"], engine_t)
                m.next = "ENGINE_SHIFT"

            with m.State("ENGINE_SHIFT"):
                engine_write("reg", ENGINE_REGISTERS["s"], step_shift + run_exponent)
                m.next = "ENGINE_START"

            with m.State("ENGINE_START"):
                m.d.comb += engine.start.eq(1)
                m.d.sync += written.eq(0)
                m.next = "ENGINE_WAIT"

            with m.State("ENGINE_WAIT"):
                with m.If(engine.done):
                    m.next = "ENGINE_PHASES"

            with m.State("ENGINE_PHASES"):
                # theta_i = R(acc_i, A - P) mod 2**P of each free oscillator's final
                # accumulator (step 7); the pinned anchors' are read and dropped.
                m.d.comb += engine.phases.ready.eq(1)
                acc = engine.phases.payload
                m.d.comb += [wr["ode_theta"].addr.eq(run_base + written),
                             wr["ode_theta"].data.eq(((acc + half) >> (A - P))[:P]),
                             wr["ode_theta"].en.eq(engine.phases.valid & (written < run_n))]
                with m.If(engine.phases.valid):
                    m.d.sync += written.eq(written + 1)
                    with m.If(written == run_items - 1):
                        with m.If(warm):
                            m.d.comb += [wr["ode_run"].addr.eq(run_base),
                                         wr["ode_run"].en.eq(1),
                                         wr["ode_run"].data.steps.eq(engine.steps_taken),
                                         wr["ode_run"].data.converged.eq(engine.converged)]
                            with m.If(run_base == tokens - 1):
                                start_readout_pass()
                            with m.Else():
                                next_warm_token()
                        with m.Else():
                            m.d.sync += [run_steps.eq(engine.steps_taken),
                                         run_converged.eq(engine.converged)]
                            start_readout_pass()

            with m.State("ROW_C"):
                m.d.comb += [rd["ode_info"].addr.eq(row), rd["ode_theta"].addr.eq(row),
                             rd["ode_run"].addr.eq(row)]
                m.next = "ROW_C_LOAD"

            with m.State("ROW_C_LOAD"):
                info, run = rd["ode_info"].data, rd["ode_run"].data
                m.d.sync += [attended.eq(Mux(causal, row + 1, tokens)), total.eq(0),
                             sent.eq(0), h_x.eq(info.h_x), h_y.eq(info.h_y),
                             row_e_w.eq(info.e_w), theta.eq(rd["ode_theta"].data),
                             row_steps.eq(Mux(warm, run.steps, run_steps)),
                             row_converged.eq(Mux(warm, run.converged, run_converged))]
                m.next = "ROTATE"

        def store_info():
            m.d.comb += [wr["ode_info"].addr.eq(row), wr["ode_info"].en.eq(1),
                         wr["ode_info"].data.e_w.eq(row_e_w),
                         wr["ode_info"].data.h_x.eq(h_x), wr["ode_info"].data.h_y.eq(h_y)]

        return SimpleNamespace(begin_head=begin_head, begin_row=begin_row, states=states)

    def _oscillator_datapath(self, m, *, wr, issue_tag, in_state, last_j, exponent, state,
                             numer, score_shift, p, h, theta, x, anchors, score, total):
        """Paper A's passes WEIGHTS (steps 3-4) and READOUT (step 9) and the state units'
        inputs (`state`: the Normalizer and the vector and rotation CORDICs at d_osc = 2, the
        SphereNormalizer above). `anchors`: a_j's components as read. Returns WEIGHTS's
        issue tag (w0), its item of two clocks ago (w2: a compact head reads the anchor
        there) and its end (w4), W_ij (weight), the normalized drive's registers
        (norm_x, norm_y; d_osc = 2) and READOUT's end (r5)."""
        w = self.widths
        product_shape = signed(W_BITS + DATA_BITS + 1)

        # WEIGHTS (steps 3-4): c1 the shift of m, c2 W, c3 products, c4 accumulate h.
        w0 = issue_tag("WEIGHTS", 1, last_j, last_j)
        w4 = delay_line(m, w0, 4, "w")
        # (Registers of its own, named apart, so the other heads' netlists keep their names.)
        w2 = delay_line(m, w0, 2, "w_anchor") if self.compact else None
        weight = Signal(unsigned(W_BITS))
        if self.compact:
            # W a on the Numerator's x a multipliers (READOUT comes later in the row): W
            # goes in as x, and a_j is read two clocks late, at w2's j, to meet it.
            products = list(numer.products)
        else:
            anchor = [delay_line(m, a_read, 2, f"anchor_{c}")
                      for c, a_read in enumerate(anchors)]
            products = [Signal(product_shape, name=f"wa_{c}") for c in range(self.d_osc)]
            m.d.sync += [product.eq(weight * a_reg) for a_reg, product in zip(anchor, products)]
        # The shift F - e_w is the row's (e_w holds from EXPONENT's done, two clocks before
        # c1): its subtraction and clamps are registers of their own, out of c1, where the
        # score comes straight from its block RAM. R(m, F - e_w) <= 2**17 - 1 in a row that
        # fits: its left shifts are below 18.
        weight_shift = Signal(signed(SHIFT_BITS + 1))
        m.d.sync += weight_shift.eq(score_shift - exponent.e_w)
        # W is 17 bits (mod 2**17 outside a row that fits, as R + eps was): the add needs
        # only the shift's 18 low bits, the rounding bit its carry-in.
        shifted = Signal(W_BITS + 1)
        split = weight_window if self.compact else weight_split
        m.d.sync += shifted.eq(split(m, score, weight_shift, w["m"]))
        m.d.sync += weight.eq(shifted[1:] + exponent.eps + shifted[0])
        for product, h_c in zip(products, h):
            with m.If(w4.valid):
                m.d.sync += h_c.eq(h_c + product)

        # The analytic state and x_i.
        norm_x, norm_y = Signal(signed(DATA_BITS)), Signal(signed(DATA_BITS))
        if self.d_osc == 2:
            normalizer, vector, rotate = state
            # h's last sum lands with w4's final item: the normalizer reads h the clock
            # after, NORMALIZE's first.
            m.d.sync += normalizer.valid.eq(w4.valid & w4.final)
            m.d.comb += [normalizer.h_x.eq(h[0]), normalizer.h_y.eq(h[1]),
                         vector.i.payload.x.eq(norm_x), vector.i.payload.y.eq(norm_y),
                         vector.i.payload.z.eq(0),
                         rotate.i.payload.x.eq(1 << FRAC), rotate.i.payload.y.eq(0),
                         rotate.i.payload.z.eq(theta)]
        elif not set(self.modes) & set(OSCILLATOR_MODES[1:]):   # the flow muxes it
            m.d.comb += [state.h[c].eq(h_c) for c, h_c in enumerate(h)]

        # READOUT (step 9): c1 into the Numerator, c5 its g: buffer and row sum.
        r0 = issue_tag("READOUT", 1, last_j, last_j)
        r1 = delay_line(m, r0, 1, "r")
        r5 = delay_line(m, r1, Numerator.latency, "r")
        m.d.comb += [numer.valid.eq(r1.valid), numer.p.eq(p)]
        if self.compact:
            m.d.comb += [numer.x[c].eq(Mux(in_state["WEIGHTS"], weight, x_c))
                         for c, x_c in enumerate(x)]
        else:
            m.d.comb += [numer.x[c].eq(x_c) for c, x_c in enumerate(x)]
        m.d.comb += [numer.a[c].eq(a_c) for c, a_c in enumerate(anchors)]
        with m.If(r5.valid):
            m.d.comb += [wr["numer"].addr.eq(r5.j), wr["numer"].data.eq(numer.g),
                         wr["numer"].en.eq(1)]
            m.d.sync += total.eq(total + numer.g)
        return SimpleNamespace(w0=w0, w2=w2, w4=w4, weight=weight, norm_x=norm_x,
                               norm_y=norm_y, r5=r5)

    def _oscillator_states(self, m, osc, *, ode, mode, exponent, row_e_w, begin_pass,
                           in_state, issuing, advance, j, d, last_j, state, sent,
                           call_once, theta, x, recip):
        """The sequencer's states of paper A's row from EXPONENT to READOUT (inside the FSM;
        `osc` is `_oscillator_datapath`'s result)."""
        with m.State("EXPONENT"):
            with m.If(exponent.done):
                with m.If(~exponent.found):
                    m.d.sync += self.error.eq(1)
                m.d.sync += row_e_w.eq(exponent.e_w)
                begin_pass()
                m.next = "WEIGHTS"

        with m.State("WEIGHTS"):
            m.d.comb += in_state["WEIGHTS"].eq(1)
            with m.If(issuing):
                advance(j, last_j, d, 1)
            with m.If(osc.w4.valid & osc.w4.final):
                if self.d_osc > 2:
                    # h's last sum lands now: the normalizer reads h from the next clock.
                    m.d.comb += state.start.eq(mode == MODES.index("analytic"))
                    m.next = "SPHERE"
                    if set(self.modes) & set(OSCILLATOR_MODES[1:]):
                        with m.If(self._flow_mode(mode)):
                            m.next = "FLOW_RECIP"
                else:
                    m.next = "NORMALIZE"
                if ode:
                    with m.If(mode != MODES.index("analytic")):
                        m.next = "DRIVE_RECIP"

        if self.d_osc > 2:
            with m.State("SPHERE"):
                lend_reciprocal(m, state, recip, in_state)
                with m.If(state.done):
                    begin_pass()
                    m.next = "READOUT"
            self._readout_state(m, osc, in_state, issuing, advance, j, d, last_j)
            return

        normalizer, vector, rotate = state
        cos, sin = x

        with m.State("NORMALIZE"):
            with m.If(normalizer.done):
                m.d.sync += [osc.norm_x.eq(normalizer.x), osc.norm_y.eq(normalizer.y),
                             sent.eq(0)]
                m.next = "VECTOR"

        with m.State("VECTOR"):
            with m.If(call_once(vector)):
                m.d.sync += theta.eq(vector.o.payload.z)
                m.next = "ROTATE"

        with m.State("ROTATE"):
            with m.If(call_once(rotate)):
                m.d.sync += [cos.eq(rotate.o.payload.x), sin.eq(rotate.o.payload.y)]
                begin_pass()
                m.next = "READOUT"
        self._readout_state(m, osc, in_state, issuing, advance, j, d, last_j)

    def _flow_mode(self, mode) -> Value:
        """The `mode` register names one of the build's ODE modes (the Lohe flow at d_osc >
        2)."""
        built = [MODES.index(name) for name in OSCILLATOR_MODES[1:] if name in self.modes]
        return Cat(*(mode == index for index in built)).any()

    def _flow(self, m, *, rd, h, state, row, warm, flow_mode, pairwise, anchors, regs):
        """The Lohe flow at d_osc > 2 (golden attention_sphere `lohe_flow`), one row's
        oscillator at a time, in the drive form and (`pairwise`: the ode-pairwise mode is
        running; None when the build has no ode-pairwise) term by term over the row's
        `anchors` (their components as read at the sequencer's j): its registers and
        datapath. Returns a namespace of what the states (`_flow_states`) and the header
        need."""
        d = self.d_osc
        ob = _osc_bits(d)
        w = self.widths
        f = SimpleNamespace()
        f.c = Signal(range(d + 2), name="flow_c")
        f.r, f.L = Signal(signed(DATA_BITS), name="flow_r"), Signal(signed(8), name="flow_L")
        f.hn = Array(Signal(signed(DATA_BITS), name=f"hn_{c}") for c in range(d))
        f.x = Array(Signal(signed(DATA_BITS), name=f"flow_x_{c}") for c in range(d))
        f.v = Array(Signal(signed(FLOW_V_BITS), name=f"flow_v_{c}") for c in range(d))
        f.X = Array(Signal(signed(FLOW_X_BITS), name=f"flow_X_{c}") for c in range(d))
        f.dot = Signal(signed(2 * FLOW_V_BITS + 4), name="flow_dot")
        f.along = Signal(signed(FLOW_V_BITS), name="flow_along")     # c = R(x . hn, 16)
        # ode-pairwise: W_ij, V = sum_j W_ij t_j (one bit over h: |t| <= 2), C = sum_j W_ij c_j.
        f.w_j = Signal(unsigned(W_BITS), name="flow_w_j")
        f.V = Array(Signal(signed(w["h"] + 2), name=f"flow_V_{c}") for c in range(d))
        f.C = Signal(signed(w["h"] + 2), name="flow_C")
        f.weight = rd["flow_w"].data if pairwise is not None else None
        f.steps = Signal(STEP_COUNT_BITS, name="flow_steps")
        f.converged = Signal(name="flow_converged")
        f.zero = Signal(name="flow_zero")               # hn = 0: the state never moves
        f.still = Signal(name="flow_still")             # v = 0 so far (the antipode test)
        f.least, f.least_c = Signal(DATA_BITS), Signal(range(d), name="flow_least_c")
        f.moved = Signal(DATA_BITS + 1, name="flow_moved")   # max_c |x'_c - x_c| so far
        f.first = Signal(name="flow_first")             # load x0 (not warm, or row 0)
        m.d.comb += f.first.eq(~warm | (row == 0))

        # One multiplier for hn (h r, wide) and one for the step (18 x 20): an item issued
        # in clock k (`f.issue`: component f.c) has its product in clock k + 1.
        f.issue = Signal(name="flow_issue")
        f.kind = Signal(3, name="flow_kind")            # FLOW_KINDS
        f.count = Signal(range(d + 2), name="flow_count")   # items of the kind: d or d + 1
        tag = data.StructLayout({"valid": 1, "last": 1, "kind": 3, "c": range(d + 1)})
        issued = Signal(tag)
        m.d.comb += [issued.valid.eq(f.issue), issued.last.eq(f.c == f.count - 1),
                     issued.kind.eq(f.kind), issued.c.eq(f.c)]
        f.landed = landed = delay_line(m, issued, 1, "flow_tag")
        # h r for hn, V r for ode-pairwise's v: the one wide multiplier.
        hr = Signal(signed(w["h"] + 2 + DATA_BITS), name="flow_hr")
        wide = Array(h)[f.c]
        if pairwise is not None:
            wide = Mux(f.kind == FLOW_KINDS["norm"], f.V[f.c], wide)
        m.d.sync += hr.eq(wide * f.r)
        op_a, op_b = Signal(signed(FLOW_V_BITS)), Signal(signed(FLOW_V_BITS))
        product = Signal(signed(2 * FLOW_V_BITS), name="flow_product")
        m.d.sync += product.eq(op_a * op_b)
        x_c, v_c = f.x[f.c], f.v[f.c]
        antipode = f.still & (f.along < 0)
        nudged = Mux(antipode, f.c == f.least_c, v_c)
        # The drive form's hn, or ode-pairwise's anchor a_j, component by component.
        target = Array(f.hn)
        if pairwise is not None:
            target = Array(Mux(pairwise, a_c, hn_c) for a_c, hn_c in zip(anchors, f.hn))
        with m.Switch(f.kind):
            with m.Case(FLOW_KINDS["dot"]):
                m.d.comb += [op_a.eq(x_c), op_b.eq(target[f.c])]
            with m.Case(FLOW_KINDS["v"]):
                m.d.comb += [op_a.eq(f.along), op_b.eq(x_c)]
            with m.Case(FLOW_KINDS["x"]):
                m.d.comb += [op_a.eq(nudged), op_b.eq(_signed(regs["flow_step"]))]
            with m.Case(FLOW_KINDS["acc"]):
                # t_c (kept in v while the anchors pass), then c_j: d + 1 items.
                m.d.comb += [op_a.eq(Mux(f.c < d, v_c, f.along)), op_b.eq(_signed(f.w_j))]

        at = landed.c
        with m.If(landed.valid):
            with m.Switch(landed.kind):
                with m.Case(FLOW_KINDS["hn"]):
                    # 32 + L >= 16: L = bitlen(s) - 17 >= -16 for s >= 1.
                    value = round_shift_var(hr, (f.L + 2 * FRAC)[:6])[:DATA_BITS]
                    m.d.sync += [f.hn[at].eq(value), f.zero.eq(f.zero & (value == 0))]
                with m.Case(FLOW_KINDS["load"]):
                    m.d.sync += f.x[at].eq(rd["start"].data)
                with m.Case(FLOW_KINDS["dot"]):
                    m.d.sync += f.dot.eq(f.dot + product)
                with m.Case(FLOW_KINDS["v"]):
                    value = target[at] - _round_const(product, FRAC)
                    m.d.sync += [f.v[at].eq(value), f.still.eq(f.still & (value == 0))]
                with m.Case(FLOW_KINDS["x"]):
                    m.d.sync += f.X[at].eq((f.x[at] << FRAC) + product)
                if pairwise is not None:
                    with m.Case(FLOW_KINDS["acc"]):
                        with m.If(at < d):
                            m.d.sync += f.V[at].eq(f.V[at] + product)
                        with m.Else():
                            m.d.sync += f.C.eq(f.C + product)
                    with m.Case(FLOW_KINDS["norm"]):
                        value = round_shift_var(hr, (f.L + 2 * FRAC)[:6])[:FLOW_V_BITS]
                        m.d.sync += [f.v[at].eq(value), f.still.eq(f.still & (value == 0))]
        m.d.comb += rd["start"].addr.eq(Cat(f.c[:ob], row))
        m.d.comb += [state.h[c].eq(Mux(flow_mode, f.X[c], h[c])) for c in range(d)]

        # The smallest |x_c| (its first index), read while v is formed: the nudge's k.
        size = magnitude(x_c, DATA_BITS)
        with m.If(f.issue & (f.kind == FLOW_KINDS["v"]) & ((f.c == 0) | (size < f.least))):
            m.d.sync += [f.least.eq(size), f.least_c.eq(f.c)]
        # max_c |x'_c - x_c| and the new state, read while checking.
        new = Array(state.x[c] for c in range(d))[f.c]
        f.step_c = Mux(new > x_c, new - x_c, x_c - new)[:DATA_BITS + 1]
        f.new_c = new
        f.product = product
        return f

    def _flow_states(self, m, f, *, state, recip, call_once, drive_recip, in_state,
                     begin_pass, regs, pairwise, h, j, attended):
        """The states of the sphere flow (inside the FSM): after WEIGHTS, one row's
        reciprocal of s_i, hn, x0, then the Euler steps until calm or max_steps
        (`pairwise`: as `_flow`'s; the anchor pass runs on the sequencer's j up to
        `attended`)."""
        d = self.d_osc

        def components(kind, next_state, last_action=None, count=d):
            """Issue c = 0 .. count - 1 of `kind`; go to next_state when the last has
            landed."""
            m.d.comb += [f.issue.eq(f.c < count), f.kind.eq(FLOW_KINDS[kind]),
                         f.count.eq(count)]
            with m.If(f.c < count):
                m.d.sync += f.c.eq(f.c + 1)
            with m.If(f.landed.valid & f.landed.last):
                m.d.sync += f.c.eq(0)
                m.next = next_state
                if last_action is not None:     # may choose another next state
                    last_action()

        def next_step():
            m.next = "FLOW_DOT"
            if pairwise is not None:
                with m.If(pairwise):            # the anchor pass from j = 0
                    m.d.sync += j.eq(0)
                    m.next = "PW_FETCH"

        with m.State("FLOW_RECIP"):
            m.d.comb += drive_recip.eq(1)
            with m.If(call_once(recip)):
                m.d.sync += [f.r.eq(recip.o.payload.r), f.L.eq(recip.o.payload.shift),
                             f.c.eq(0), f.zero.eq(1)]
                m.next = "FLOW_HN"

        with m.State("FLOW_HN"):
            components("hn", "FLOW_LOAD")

        with m.State("FLOW_LOAD"):
            # x0 from the host ("warm": row 0 only; the others go on from the last state).
            m.d.comb += [f.issue.eq((f.c < d) & f.first), f.kind.eq(FLOW_KINDS["load"])]
            with m.If(f.c < d):
                m.d.sync += f.c.eq(f.c + 1)
            zero = f.zero
            if pairwise is not None:        # ode-pairwise: h = 0 (golden's zero drive)
                zero = Mux(pairwise, Cat(*(h_c == 0 for h_c in h)).all(), f.zero)
            with m.If(f.c == d):
                m.d.sync += [f.c.eq(0), f.steps.eq(0), f.converged.eq(1)]
                with m.If(zero):
                    begin_pass()
                    m.next = "READOUT"
                with m.Else():
                    m.d.sync += f.dot.eq(0)
                    next_step()

        if pairwise is not None:
            with m.State("PW_FETCH"):           # a_0 and W_i0 are read now
                m.d.sync += [f.V[c].eq(0) for c in range(d)]
                m.d.sync += f.C.eq(0)
                m.next = "FLOW_DOT"

        with m.State("FLOW_DOT"):
            def along():
                m.d.sync += [f.along.eq(_round_const(f.dot + f.product, FRAC)),
                             f.still.eq(1), f.dot.eq(0)]
            components("dot", "FLOW_V", along)

        with m.State("FLOW_V"):
            def tangent_done():
                if pairwise is not None:
                    with m.If(pairwise):        # W_ij is read at this j; on to the next
                        m.d.sync += [f.w_j.eq(f.weight), j.eq(j + 1)]
                        m.next = "PW_ACC"
            components("v", "FLOW_X", tangent_done)

        if pairwise is not None:
            with m.State("PW_ACC"):
                def accumulated():
                    with m.If(j == attended):
                        m.d.sync += f.still.eq(1)
                        m.next = "PW_NORM"
                components("acc", "FLOW_DOT", accumulated, count=d + 1)

            with m.State("PW_NORM"):
                def normalized():           # only C's sign is used (calm, antipode)
                    m.d.sync += f.along.eq(Mux(f.C > 0, 1, Mux(f.C < 0, -1, 0)))
                components("norm", "FLOW_X", normalized)

        with m.State("FLOW_X"):
            def start():
                m.d.comb += state.start.eq(1)
            components("x", "FLOW_SPHERE", start)

        with m.State("FLOW_SPHERE"):
            lend_reciprocal(m, state, recip, in_state)
            with m.If(state.done):
                m.d.sync += [f.c.eq(0), f.moved.eq(0)]
                m.next = "FLOW_CHECK"

        with m.State("FLOW_CHECK"):
            # One component a clock: the largest move, and x <- x'.
            moved = Mux(f.step_c > f.moved, f.step_c, f.moved)
            m.d.sync += [f.x[f.c].eq(f.new_c), f.moved.eq(moved), f.c.eq(f.c + 1)]
            with m.If(f.c == d - 1):
                calm = (moved < regs["flow_tol"]) & (f.along > 0)
                steps = f.steps + 1
                m.d.sync += [f.c.eq(0), f.steps.eq(steps), f.dot.eq(0)]
                with m.If(calm | (steps == regs["max_steps"])):
                    m.d.sync += f.converged.eq(calm)
                    begin_pass()
                    m.next = "READOUT"
                with m.Else():
                    next_step()

    @staticmethod
    def _readout_state(m, osc, in_state, issuing, advance, j, d, last_j):
        with m.State("READOUT"):
            m.d.comb += in_state["READOUT"].eq(1)
            with m.If(issuing):
                advance(j, last_j, d, 1)
            with m.If(osc.r5.valid & osc.r5.final):
                m.next = "RECIP"

    def elaborate(self, platform):
        m = Module()
        cfg, w = self.config, self.widths
        cap, dcap = self.max_tokens, self.max_d_h
        oscillator = "analytic" in self.modes
        ode = any(mode in self.modes for mode in OSCILLATOR_MODES[1:]) and self.d_osc == 2
        softmax = SOFTMAX in self.modes
        stride_bits = max(0, (dcap - 1).bit_length())
        token_bits = max(1, (cap - 1).bit_length())
        B, P = cfg.qk_bits, cfg.phase_bits
        pair = data.StructLayout({"x": signed(DATA_BITS), "y": signed(DATA_BITS)})

        # -- memories -------------------------------------------------------------------------
        lanes = self.mac_lanes
        lane_bits = lanes.bit_length() - 1
        bank_bits = stride_bits - lane_bits         # a bank's words per token: t || d div L
        # Softmax keeps the scores' sign (no relu): one bit more.
        score_shape = signed(w["m"] + 1) if softmax else unsigned(w["m"])
        no_collide = {NO_COLLISION_ATTR: 1}
        banked = {"q": signed(B), "k": signed(B), "v": signed(DATA_BITS),
                  "out": signed(w["out"])}
        bank = {name: [name if lanes == 1 else f"{name}{b}" for b in range(lanes)]
                for name in banked}
        # A compact head's q and k are single-port (`single_port`), without power-on contents
        # (every word a run reads is loaded first) and marked "huge": the UP5K puts them in
        # SPRAM (Yosys would take its block RAMs for memories this small).
        single_port = ("q", "k") if self.compact else ()
        mem = {
            # Row buffers: the scores m_ij, the numerators g_ij, attn_ij.
            "score": Memory(shape=score_shape, depth=cap, init=[], attrs=no_collide),
            "numer": Memory(shape=unsigned(w["g"]), depth=cap, init=[], attrs=no_collide),
            "attn": Memory(shape=unsigned(w["attn"]), depth=cap, init=[], attrs=no_collide),
        }
        for name, shape in banked.items():      # q, k, v; out_id, the last row buffer
            depth = -(-dcap // lanes) if name == "out" else cap << bank_bits
            # (Two words at least: a one-word memory has a 0-bit address, which Verilator
            # refuses.)
            depth = max(2, depth)
            attrs = no_collide | ({"ram_style": "huge"} if name in single_port else {})
            for bank_name in bank[name]:
                mem[bank_name] = Memory(shape=shape, depth=depth, init=[], attrs=attrs)
        sphere = oscillator and self.d_osc > 2
        flow = sphere and bool(set(self.modes) & set(OSCILLATOR_MODES[1:]))
        pairwise_flow = sphere and "ode-pairwise" in self.modes
        anchor_names = [f"anchor{c}" for c in range(self.d_osc)] if sphere else ["anchor"]
        if oscillator:
            for name in anchor_names:
                mem[name] = Memory(shape=signed(DATA_BITS) if sphere else pair, depth=cap,
                                   init=[], attrs=no_collide)
        if flow:                                # x0 of each token, component c at t || c
            mem["start"] = Memory(shape=signed(DATA_BITS), depth=cap << _osc_bits(self.d_osc),
                                  init=[], attrs=no_collide)
        if pairwise_flow:                       # the row's W_ij for its anchor passes
            mem["flow_w"] = Memory(shape=unsigned(W_BITS), depth=cap, init=[],
                                   attrs=no_collide)
        rd, wr = {}, {}
        for name, memory in mem.items():
            suffix = NO_INIT_SUFFIX if name in single_port else ""
            m.submodules[f"mem_{name}{suffix}"] = memory
            rd[name], wr[name] = memory.read_port(), memory.write_port()

        # -- run registers --------------------------------------------------------------------
        tokens = Signal(range(cap + 1))
        d_h = Signal(range(dcap + 1))
        causal = Signal()
        p = Signal(3)
        score_c = Signal(W_BITS)
        score_shift = Signal(signed(SHIFT_BITS))
        mode = Signal(range(len(MODES)))
        warm = Signal()
        step_shift = Signal(6)
        flow_regs = {"flow_step": Signal(FRAC + 1), "flow_tol": Signal(FLOW_TOL_BITS),
                     "max_steps": Signal(STEP_COUNT_BITS)}
        registers = [tokens, d_h, causal, p, score_c, score_shift, mode, warm, step_shift,
                     *flow_regs.values()]
        assert len(registers) == len(REGISTERS)

        # -- units ----------------------------------------------------------------------------
        recip_bits = w["sum"]
        if sphere:
            m.submodules.sphere = state = SphereNormalizer(
                self.d_osc, max(w["h"], FLOW_X_BITS) if flow else w["h"])
            recip_bits = max(recip_bits, state.root_bits)
        exponent_unit, normalizer_unit, reciprocal_unit = WeightExponent, Normalizer, Reciprocal
        if self.compact:    # the same units, shifting only the bits they keep
            from .lean import LeanNormalizer, LeanReciprocal, LeanWeightExponent  # (as above)
            exponent_unit, normalizer_unit = LeanWeightExponent, LeanNormalizer
            reciprocal_unit = LeanReciprocal
            # The three CORDIC operations, never at once, on one datapath (softmax: the
            # divide alone, without the other units' programs).
            m.submodules.cordics = cordics = SharedCordicIterative(
                [cfg.vector, cfg.rotate, cfg.divide] if oscillator else [cfg.divide])
            *oscillator_ports, divide = cordics.ports
            if oscillator:
                vector, rotate = oscillator_ports
        m.submodules.reciprocal = recip = reciprocal_unit(cfg, recip_bits, self.cordic_arch,
                                                          divide if self.compact else None)
        m.d.comb += recip.o.ready.eq(1)
        if oscillator:
            m.submodules.exponent = exponent = exponent_unit(w["m"])
            m.submodules.numerator = numer = Numerator(self.d_osc)
        if oscillator and not sphere:
            m.submodules.normalizer = normalizer = normalizer_unit(w["h"])
            if not self.compact:
                m.submodules.vector = vector = Cordic.create(cfg.vector, self.cordic_arch)
                m.submodules.rotate = rotate = Cordic.create(cfg.rotate, self.cordic_arch)
            m.d.comb += [vector.o.ready.eq(1), rotate.o.ready.eq(1)]
            state = (normalizer, vector, rotate)
        if softmax:
            m.submodules.exp2 = exp2 = NegExp2(EXP_FRAC)

        # -- sequencer state ------------------------------------------------------------------
        busy = Signal()
        row = Signal(range(cap))
        attended = Signal(range(cap + 1))           # n
        j = Signal(range(cap + 1))                  # token counter of a pass
        d = Signal(range(dcap + 1))                 # component counter of a pass
        issuing = Signal()
        sent = Signal()                             # a CORDIC / reciprocal input was taken
        last_j = j == attended - 1
        # SCORES and OUT count d over groups of L components (`mac_groups`).
        last_d = d == ((d_h + lanes - 1) >> lane_bits) - 1
        m.d.comb += [self.busy.eq(busy), self.load.ready.eq(~busy)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        def begin_pass():
            m.d.sync += [j.eq(0), d.eq(0), issuing.eq(1)]

        def call_once(unit):
            """Give `unit` (a CORDIC or the reciprocal) its one input of this state, and return
            the condition of its result: `sent` is cleared then, for the next call."""
            m.d.comb += unit.i.valid.eq(~sent)
            with m.If(unit.i.ready):
                m.d.sync += sent.eq(1)
            with m.If(unit.o.valid):
                m.d.sync += sent.eq(0)
            return unit.o.valid

        def advance(inner, inner_last, outer, outer_last):
            """Next (inner, outer) of a pass's nested loop; stop after the last."""
            with m.If(inner_last):
                m.d.sync += [inner.eq(0), outer.eq(outer + 1)]
                with m.If(outer_last):
                    m.d.sync += issuing.eq(0)
            with m.Else():
                m.d.sync += inner.eq(inner + 1)

        # Addresses: q of token i, k and v of token j (t || d); the row buffers at j.
        read_address = {"q": Cat(d[:bank_bits], row[:token_bits]),
                        "k": Cat(d[:bank_bits], j[:token_bits]),
                        "v": Cat(d[:bank_bits], j[:token_bits])}
        for name, address in read_address.items():
            m.d.comb += [rd[bank[name][b]].addr.eq(address) for b in range(lanes)]
        m.d.comb += [rd["score"].addr.eq(j), rd["numer"].addr.eq(j)]
        if oscillator and not self.compact:     # (compact: after WEIGHTS's datapath)
            m.d.comb += [rd[name].addr.eq(j) for name in anchor_names]

        # A pass's items carry (valid, first, last, final, j, d) down its pipeline.
        tag = data.StructLayout({"valid": 1, "first": 1, "last": 1, "final": 1,
                                 "j": range(cap + 1), "d": range(dcap + 1)})

        in_state = {name: Signal(name=f"in_{name.lower()}")
                    for name in ("SCORES", "WEIGHTS", "SPHERE", "READOUT", "EXP", "ATTN",
                                 "OUT")}

        def issue_tag(name, first, last, final):
            t = Signal(tag, name=f"{name}_tag")
            m.d.comb += [t.valid.eq(issuing & in_state[name]), t.first.eq(first),
                         t.last.eq(last), t.final.eq(final), t.j.eq(j), t.d.eq(d)]
            return t

        # SCORES (steps 1-2): c1 products, the lanes' adder tree (`score_tree_stages`), then
        # c2 accumulate, c3 scale, c4 buffer and max (c2..c4 after the tree).
        tree = score_tree_stages(lanes)
        s0 = issue_tag("SCORES", d == 0, last_d, last_d & last_j)
        s2, s4 = delay_line(m, s0, 2 + tree, "s"), delay_line(m, s0, 4 + tree, "s")
        raw = Signal(signed(w["raw"]))
        score = Signal(score_shape)
        score_max = Signal(score_shape)
        in_softmax = mode == MODES.index(SOFTMAX) if softmax else Const(0)
        if self.compact:
            # q k, g r (ATTN) and attn v (OUT) on one multiplier: each pass forms its
            # products in its own state only, so its operands are chosen by the state.
            op_a = Signal(signed(max(B, w["g"] + 1, w["attn"] + 1)))
            op_b = Signal(signed(max(B, DATA_BITS)))
            shared = Signal(signed(len(op_a) + len(op_b)))
            m.d.sync += shared.eq(op_a * op_b)
            with m.If(in_state["SCORES"]):
                m.d.comb += [op_a.eq(rd["q"].data), op_b.eq(rd["k"].data)]
            qk = [shared[:2 * B].as_signed()]
        else:
            qk = [Signal(signed(2 * B), name=f"qk_{b}") for b in range(lanes)]
            m.d.sync += [qk_b.eq(rd[bank["q"][b]].data * rd[bank["k"][b]].data)
                         for b, qk_b in enumerate(qk)]
        if lanes > 1:
            # The last group's lanes past d_h hold stale words: a product of its own lane's
            # flag (component b + L d < d_h, two clocks old: with the product) or 0.
            in_range = Signal(lanes, name="score_lanes")
            m.d.comb += in_range.eq(Cat(*(Cat(Const(b, lane_bits), d) < d_h
                                          for b in range(lanes))))
            in_range2 = delay_line(m, in_range, 2, "score_lanes")
            qk = [Mux(in_range2[b], qk_b, 0) for b, qk_b in enumerate(qk)]
        qk_sum = adder_tree(m, qk, "score_tree")
        with m.If(s2.valid):
            m.d.sync += raw.eq(Mux(s2.first, 0, raw) + qk_sum)
        relu = Mux(raw < 0, 0, raw)[:w["raw"] - 1]
        if softmax:
            m.d.sync += score.eq(Mux(in_softmax, raw, _signed(relu)) * _signed(score_c))
        else:
            m.d.sync += score.eq(relu * score_c)
        m.d.comb += [wr["score"].addr.eq(s4.j), wr["score"].data.eq(score),
                     wr["score"].en.eq(s4.valid & s4.last)]
        # The row's first score starts the max (the relu'd scores are >= 0 = its reset).
        with m.If(s4.valid & s4.last & ((score > score_max) | (s4.j == 0))):
            m.d.sync += score_max.eq(score)

        if oscillator:
            m.d.comb += [exponent.m_max.eq(score_max), exponent.shift.eq(score_shift)]

        # EXP (softmax steps 4-5): c1 M - m, c2 y, c3..c5 NegExp2, c6 g: buffer and row sum.
        total = Signal(unsigned(w["sum"]))
        if softmax:
            x0 = issue_tag("EXP", 1, last_j, last_j)
            x3 = delay_line(m, x0, 3, "x")
            x6 = delay_line(m, x3, NegExp2.latency, "x")
            gap = Signal(unsigned(w["m"] + 1))          # M_i - m_ij >= 0
            y = Signal(Y_BITS)
            m.d.sync += gap.eq(score_max - rd["score"].data)
            # F >= 16 (golden refuses less): the left shift is never taken (1: a 1-bit signal).
            # F is a run register, so the shift's clamped amounts are registers too: out of
            # the clock of the shift (with them, the head's critical path with softmax built).
            shifted = shift_round(m, gap, score_shift - Y_FRAC, w["m"] + 2, 1, "sync",
                                  "exp_shift")
            m.d.sync += y.eq(Mux(shifted > Y_MAX, Y_MAX, shifted))
            m.d.comb += [exp2.valid.eq(x3.valid), exp2.y.eq(y)]
            with m.If(x6.valid):
                m.d.sync += total.eq(total + exp2.e)

        # The oscillator state's registers: the header's items (0 in a softmax-only build).
        h = [Signal(signed(w["h"]), name=name)
             for name in ("h_x", "h_y", *(f"h_{c}" for c in range(2, self.d_osc)))]
        h_x, h_y = h[:2]
        row_e_w = Signal(range(E_MAX + 1))
        theta = Signal(P)
        cos, sin = Signal(signed(DATA_BITS)), Signal(signed(DATA_BITS))
        if flow:        # the readout's state: the flow's or the normalizer's (`_flow`)
            x = [Signal(signed(DATA_BITS), name=f"state_x_{c}") for c in range(self.d_osc)]
        else:
            x = [state.x[c] for c in range(self.d_osc)] if sphere else [cos, sin]
        w_sum = Signal(unsigned(w["sum"]))
        drive_recip = Signal()              # the reciprocal serves step 6's s_i (ode-drive)
        recip_input = Mux(drive_recip, w_sum, total)
        if sphere:
            recip_input = Mux(in_state["SPHERE"], state.root.payload, recip_input)
        m.d.comb += recip.i.payload.eq(recip_input)
        if oscillator:
            if sphere:
                anchors = [rd[name].data for name in anchor_names]
            else:
                anchors = [rd["anchor"].data.x, rd["anchor"].data.y]
            osc = self._oscillator_datapath(
                m, wr=wr, issue_tag=issue_tag, in_state=in_state, last_j=last_j,
                exponent=exponent, state=state, numer=numer, score_shift=score_shift, p=p,
                h=h, theta=theta, x=x, anchors=anchors, score=rd["score"].data, total=total)
            if self.compact:
                m.d.comb += rd["anchor"].addr.eq(Mux(in_state["WEIGHTS"], osc.w2.j, j))
        if ode or flow:             # s_i = sum_j W_ij, beside WEIGHTS (the ODE modes' drive)
            w_tag = delay_line(m, osc.w0, 3, "wsum")        # with W_ij (osc.weight)
            with m.If(w_tag.valid):
                m.d.sync += w_sum.eq(w_sum + osc.weight)
        if flow:
            flow_mode = self._flow_mode(mode)
            pairwise = mode == MODES.index("ode-pairwise") if pairwise_flow else None
            if pairwise_flow:
                with m.If(w_tag.valid):
                    m.d.comb += [wr["flow_w"].addr.eq(w_tag.j), wr["flow_w"].en.eq(1),
                                 wr["flow_w"].data.eq(osc.weight)]
                m.d.comb += rd["flow_w"].addr.eq(j)
            fl = self._flow(m, rd=rd, h=h, state=state, row=row, warm=warm,
                            flow_mode=flow_mode, pairwise=pairwise, anchors=anchors,
                            regs=flow_regs)
            m.d.comb += [x[c].eq(Mux(flow_mode, fl.x[c], state.x[c]))
                         for c in range(self.d_osc)]
        if softmax:                         # EXP's g into the numerator buffer
            with m.If(x6.valid):
                m.d.comb += [wr["numer"].addr.eq(x6.j), wr["numer"].data.eq(exp2.e),
                             wr["numer"].en.eq(1)]

        # ATTN (step 10): c1 product, c2 rounding, c3 buffer.
        a0 = issue_tag("ATTN", 1, last_j, last_j)
        a3 = delay_line(m, a0, 3, "a")
        r_value, r_shift = Signal(signed(DATA_BITS)), Signal(signed(8))
        gr = Signal(unsigned(w["g"] + DATA_BITS))
        attn = Signal(unsigned(w["attn"]))
        if self.compact:
            with m.If(in_state["ATTN"]):
                m.d.comb += [op_a.eq(rd["numer"].data), op_b.eq(r_value[:DATA_BITS - 1])]
            m.d.comb += gr.eq(shared[:len(gr)])
        else:
            m.d.sync += gr.eq(rd["numer"].data * r_value[:DATA_BITS - 1])
        # 16 + L is in 0 .. bits(S) - 1 (S >= 1; S = 0 gives L = 0).
        attn_shift = (r_shift + FRAC)[:6]
        if self.compact:    # R(gr, s) from the kept bits only
            from .lean import round_window      # (hdl/lean.py imports this module)
            m.d.sync += attn.eq(round_window(m, gr, attn_shift, len(attn), name="attn_window"))
        else:
            m.d.sync += attn.eq(round_shift_var(gr, attn_shift))
        m.d.comb += [wr["attn"].addr.eq(a3.j), wr["attn"].data.eq(attn),
                     wr["attn"].en.eq(a3.valid)]

        # OUT (step 11): c1 products, c2 accumulate, c3 rounding into the out buffer (every
        # lane, each its component of the group: a lane past d_h writes a word never read).
        o0 = issue_tag("OUT", j == 0, last_j, last_j & last_d)
        o2, o3 = delay_line(m, o0, 2, "o"), delay_line(m, o0, 3, "o")
        for b in range(lanes):
            av = Signal(signed(w["attn"] + DATA_BITS + 1), name=f"av_{b}")
            out_acc = Signal(signed(w["out_acc"]), name=f"out_acc_{b}")
            if self.compact:
                with m.If(in_state["OUT"]):
                    m.d.comb += [op_a.eq(rd["attn"].data), op_b.eq(rd["v"].data)]
                m.d.comb += av.eq(shared[:len(av)].as_signed())
            else:
                m.d.sync += av.eq(rd["attn"].data * rd[bank["v"][b]].data)
            with m.If(o2.valid):
                m.d.sync += out_acc.eq(Mux(o2.first, 0, out_acc) + av)
            port = wr[bank["out"][b]]
            m.d.comb += [port.addr.eq(o3.d), port.data.eq(_round_const(out_acc, FRAC)),
                         port.en.eq(o3.valid & o3.last)]

        # EMIT: item k of the row; the buffers are read one item ahead.
        names = header_names(self.d_osc)
        item = Signal(range(len(names) + cap + dcap + 1))
        fire = self.o.valid & self.o.ready
        next_item = item + fire
        emit_attn = item - len(names)
        in_emit = Signal()
        emit_out = next_item - len(names) - tokens
        m.d.comb += rd["attn"].addr.eq(Mux(in_emit, next_item - len(names), j))
        m.d.comb += [rd[name].addr.eq(emit_out[lane_bits:]) for name in bank["out"]]
        # The out word read for this item (one ahead), from its component's bank.
        out_data = rd[bank["out"][0]].data
        if lanes > 1:
            out_data = Array(rd[name].data for name in bank["out"])[
                (emit_attn - tokens)[:lane_bits]]
        value, kind = self.o.payload.value, self.o.payload.kind
        # The ODE readout pass (pass_c) reports its row's engine run; a zero drive never
        # moves: 0 steps, converged (as the golden model).
        pass_c = Signal()
        row_steps, row_converged = Signal(STEP_COUNT_BITS), Signal()
        zero_row = (h_x == 0) & (h_y == 0)
        header = {"e_w": row_e_w, "h_x": h_x, "h_y": h_y, "theta": theta,
                  "cos": x[0], "sin": x[1],
                  "steps": Mux(pass_c & ~zero_row, row_steps, 0),
                  "converged": Mux(pass_c & ~zero_row, row_converged, 1)}
        if flow:
            header["steps"] = Mux(flow_mode, fl.steps, 0)
            header["converged"] = Mux(flow_mode, fl.converged, 1)
        header |= {f"h_{c}": h[c] for c in range(2, self.d_osc)}
        header |= {f"x_{c}": x[c] for c in range(2, self.d_osc)}
        with m.If(item < len(names)):
            with m.Switch(item):
                for index, name in enumerate(names):
                    with m.Case(index):
                        m.d.comb += [value.eq(header[name]), kind.eq(_kind(name))]
        with m.Elif(emit_attn < tokens):
            m.d.comb += [value.eq(Mux(emit_attn < attended, rd["attn"].data, 0)),
                         kind.eq(KINDS["attn"])]
        with m.Else():
            m.d.comb += [value.eq(out_data), kind.eq(KINDS["out"])]
        last_item = item == len(names) + tokens + d_h - 1
        if ode:
            ode_states = self._ode_datapath(
                m, rd=rd, wr=wr, row=row, tokens=tokens, causal=causal,
                attended=attended, h=(h_x, h_y), row_e_w=row_e_w,
                weight=osc.weight, w_tag=w_tag,
                recip=recip, drive_recip=drive_recip, call_once=call_once, sent=sent,
                r=(r_value, r_shift), theta=theta, total=total, pass_c=pass_c,
                row_steps=row_steps, row_converged=row_converged, busy=busy, warm=warm,
                mode=mode, step_shift=step_shift)

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), self.done.eq(0), self.error.eq(0),
                                 self.cycles.eq(0), row.eq(0), pass_c.eq(0)]
                    if ode:
                        ode_states.begin_head()
                    m.next = "ROW"

            with m.State("ROW"):
                m.d.sync += [attended.eq(Mux(causal, row + 1, tokens)), score_max.eq(0),
                             total.eq(0), w_sum.eq(0)]
                m.d.sync += [h_c.eq(0) for h_c in h]
                if ode:
                    ode_states.begin_row()
                begin_pass()
                m.next = "SCORES"

            with m.State("SCORES"):
                m.d.comb += in_state["SCORES"].eq(1)
                with m.If(issuing):
                    advance(d, last_d, j, last_j)
                with m.If(s4.valid & s4.final):
                    if oscillator:
                        m.d.comb += exponent.start.eq(~in_softmax)
                        m.next = "EXPONENT"
                    if softmax:
                        with m.If(in_softmax):
                            begin_pass()
                            m.next = "EXP"

            if softmax:
                with m.State("EXP"):
                    m.d.comb += in_state["EXP"].eq(1)
                    with m.If(issuing):
                        advance(j, last_j, d, 1)
                    with m.If(x6.valid & x6.final):
                        m.next = "RECIP"

            if oscillator:
                self._oscillator_states(
                    m, osc, ode=ode, mode=mode, exponent=exponent, row_e_w=row_e_w,
                    begin_pass=begin_pass, in_state=in_state, issuing=issuing,
                    advance=advance, j=j, d=d, last_j=last_j, state=state, sent=sent,
                    call_once=call_once, theta=theta, x=x, recip=recip)
                if flow:
                    self._flow_states(m, fl, state=state, recip=recip, call_once=call_once,
                                      drive_recip=drive_recip, in_state=in_state,
                                      begin_pass=begin_pass, regs=flow_regs,
                                      pairwise=pairwise, h=h, j=j, attended=attended)

            with m.State("RECIP"):
                with m.If(call_once(recip)):
                    m.d.sync += [r_value.eq(recip.o.payload.r), r_shift.eq(recip.o.payload.shift)]
                    begin_pass()
                    m.next = "ATTN"

            with m.State("ATTN"):
                m.d.comb += in_state["ATTN"].eq(1)
                with m.If(issuing):
                    advance(j, last_j, d, 1)
                with m.If(a3.valid & a3.final):
                    begin_pass()
                    m.next = "OUT"

            with m.State("OUT"):
                m.d.comb += in_state["OUT"].eq(1)
                with m.If(issuing):
                    advance(j, last_j, d, last_d)
                with m.If(o3.valid & o3.final):
                    m.d.sync += item.eq(0)
                    m.next = "EMIT"

            with m.State("EMIT"):
                m.d.comb += [in_emit.eq(1), self.o.valid.eq(1)]
                m.d.sync += item.eq(next_item)
                with m.If(fire & last_item):
                    with m.If(row == tokens - 1):
                        m.d.sync += [busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                        m.next = "ROW"
                        if ode:
                            with m.If(pass_c):
                                m.next = "ROW_C"

            if ode:
                ode_states.states()

        # -- load port: writes while idle -------------------------------------------------------
        load = self.load.payload
        with m.If(self.load.valid & ~busy):
            with m.Switch(load.target):
                for name in ("q", "k", "v"):
                    with m.Case(TARGETS[name]):     # t || d: bank d mod L, at t || d div L
                        for b, bank_name in enumerate(bank[name]):
                            port = wr[bank_name]
                            m.d.comb += [port.addr.eq(load.addr[lane_bits:]),
                                         port.en.eq(load.addr[:lane_bits] == b),
                                         port.data.eq(load.data[:len(port.data)])]
                if oscillator and not sphere:
                    with m.Case(TARGETS["anchor"]):
                        m.d.comb += [wr["anchor"].addr.eq(load.addr), wr["anchor"].en.eq(1),
                                     wr["anchor"].data.eq(load.data[:2 * DATA_BITS])]
                if flow:
                    with m.Case(TARGETS["start"]):
                        m.d.comb += [wr["start"].addr.eq(load.addr), wr["start"].en.eq(1),
                                     wr["start"].data.eq(load.data[:DATA_BITS])]
                if sphere:
                    component_bits = _osc_bits(self.d_osc)
                    component = load.addr[:component_bits]
                    with m.Case(TARGETS["anchor"]):
                        for c, name in enumerate(anchor_names):
                            m.d.comb += [wr[name].addr.eq(load.addr[component_bits:]),
                                         wr[name].en.eq(component == c),
                                         wr[name].data.eq(load.data[:DATA_BITS])]
                with m.Case(TARGETS["reg"]):
                    with m.Switch(load.addr):
                        for register, address in zip(registers, REGISTERS.values()):
                            with m.Case(address):
                                m.d.sync += register.eq(load.data[:len(register)])
        # (After the load's writes: these addresses replace theirs.)
        for name in single_port:    # one address: the load's while idle, the passes' else
            address = Mux(busy, read_address[name], load.addr)
            m.d.comb += [rd[name].addr.eq(address), wr[name].addr.eq(address)]
        return m
