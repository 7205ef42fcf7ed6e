"""Paper B's Kuramoto attention on the torus in hardware: one layer, `TorusLayer`.

The arithmetic is specified bit for bit by `oscarray.golden.torus_fixed` (read its module
docstring: the steps below carry its numbers). The host does step 0 (`torus_writes`: the
A-bit phases theta and omega, g and eta with their power-of-two scales, the softmax constant
K and shift S, the update shift U) and writes it through the `load` stream; `start` runs the
layer, and the `o` stream gives each row's attn and theta_next.

The passes, in order (simple and correct first: one rotation CORDIC, one reciprocal, every
pass issues one item per clock into a fixed-latency pipeline and ends when its last item
leaves; n = t + 1 attended tokens when causal, else T):

    ROTATE    once: for k < D, t < T, both of psi_tk = theta_tk - t w_k (the drift added token
              by token) and theta_tk: the CORDIC rotation of (2**16, 0) by R(angle, A - P)
              (step 1) into the psi and theta vector memories (cp, sp) and (ct, st). Issued
              with the CORDIC's handshake (either architecture), 2 T D items.
    then per row t:
    ROW       1 clock: n, the accumulators.
    SCORE     for u < n, k < D: s_tu = sum_k g_k R(cp_t cp_u + sp_t sp_u, 16) (step 2) into
              the score buffer; the row's max.
    EXP       for u < n: y = min(R((max - s_tu) K, S), Y_MAX), e = NegExp2(y) (step 3) into
              the e buffer; Z = sum e.
    RECIP     (r, L) = Reciprocal(Z) (hdl/attention.py's unit, golden attention_fixed's
              reciprocal: one divide-mode CORDIC).
    ATTN      for u < n: attn_tu = R(e r, 16 + L) (step 4) into the attn buffer.
    UPDATE    for k < D, u < n: C, S += attn_tu (ct_uk, st_uk); at u = n - 1:
              q = R(ct_tk R(S, 16) - st_tk R(C, 16), 16), delta = R(eta_k q, U) mod 2**A,
              theta_next_tk = theta_tk + delta (step 5) into the next buffer.
    PRE_EMIT  1 clock (the buffers' first read).
    EMIT      T + D items on `o`: attn_t0 .. attn_t(T-1) (0 where not attended), then
              theta_next_t0 .. theta_next_t(D-1) (A-bit binary angles).

Clocks (`torus_cycles`, checked clock for clock against the RTL with `o` always ready):
    ROTATE 2 T D + L_r + 1 (pipelined CORDIC), then per row
    1 + (n D + 5) + (n + 7) + (L_d + 2) + (n + 3) + (n D + 8) + 1 + (T + D)
with L_r, L_d the rotate and divide CORDICs' latencies (hdl/attention.cordic_latencies).
The two MAC passes (2 n D) are the work; the rest is per-row overhead that a later version
can overlap with the next row (and the SCORE and UPDATE passes of adjacent rows).

Multipliers (each used in its own pass): cp cp, sp sp (18 x 18), g cs (17 x 18), (max - s) K
(score + 1 x 18), e r (21 x 17), attn ct, attn st (17 x 18), ct Sr, st Cr (18 x 19),
eta q (18 x 19), and NegExp2's table product.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.exp2 import Y_BITS, Y_MAX
from ..golden.torus import TorusCase
from ..golden.torus_fixed import (
    DATA_BITS,
    DEFAULT_CONFIG,
    EXP_FRAC,
    FRAC,
    G_BITS,
    MAX_D,
    MAX_TOKENS,
    UPDATE_SHIFT_MAX,
    TorusFixedConfig,
    formats,
    host_constants,
    validate_fixed,
)
from .array import delay_line, round_shift_var
from .attention import Reciprocal, shift_round
from .cordic import ARCHITECTURES, Cordic
from .exp2 import NegExp2

__all__ = ["TARGETS", "REGISTERS", "KINDS", "CYCLE_BITS", "TorusLayer", "TorusLayerError",
           "check_case", "decode_items", "load_layout", "output_layout", "row_items",
           "torus_cycles", "torus_writes", "torus_build_design"]

TARGETS = {"theta": 0, "g": 1, "omega": 2, "eta": 3, "reg": 4}
REGISTERS = {"tokens": 0, "d": 1, "causal": 2, "soft_k": 3, "soft_shift": 4, "update_shift": 5}
KINDS = {"attn": 0, "theta": 1}
CYCLE_BITS = 32
SOFT_K_BITS = 18                 # K <= 2**17
SOFT_SHIFT_BITS = 6              # S in 0 .. 63
UPDATE_SHIFT_BITS = 8            # U in [-A, 40], signed


class TorusLayerError(ValueError):
    """Parameters or a case that this layer cannot hold."""


def _bits(n: int) -> int:
    """Bits of an address of n entries (at least 1)."""
    return max(1, (int(n) - 1).bit_length())


def _check_sizes(config, max_tokens, max_d, cordic_arch="pipelined"):
    if not isinstance(config, TorusFixedConfig):
        raise TypeError(f"config must be a TorusFixedConfig, not {config!r}")
    for name, value, top in (("max_tokens", max_tokens, MAX_TOKENS), ("max_d", max_d, MAX_D)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 1 <= value <= top:
            raise TorusLayerError(f"{name} must be 1..{top}, not {value}")
    if cordic_arch not in ARCHITECTURES:
        raise TorusLayerError(f"unknown cordic_arch {cordic_arch!r}; choose one of "
                              f"{', '.join(ARCHITECTURES)}")


def _stride(max_d: int) -> int:
    """Words per token in the (T, D) memories: max_d rounded up to a power of two
    (address = t || k)."""
    return 1 << max(0, (max_d - 1).bit_length())


def _addr_bits(max_tokens: int, max_d: int) -> int:
    return max(3, (max_tokens * _stride(max_d) - 1).bit_length())


def load_layout(config: TorusFixedConfig, max_tokens: int, max_d: int) -> data.StructLayout:
    """One `load` write: data (low bits), addr, target (TARGETS)."""
    return data.StructLayout({"data": unsigned(max(config.acc_bits, DATA_BITS)),
                              "addr": unsigned(_addr_bits(max_tokens, max_d)),
                              "target": unsigned(3)})


def output_layout(config: TorusFixedConfig) -> data.StructLayout:
    """One `o` item: value (unsigned, low bits) and kind (KINDS)."""
    return data.StructLayout({"value": unsigned(max(config.acc_bits, FRAC + 1)),
                              "kind": unsigned(1)})


def row_items(tokens: int, d: int) -> int:
    """Items per row on `o`: T attn, then D theta_next."""
    return tokens + d


def check_case(case, config: TorusFixedConfig = DEFAULT_CONFIG, *, max_tokens: int,
               max_d: int) -> TorusCase:
    """The case validated by the golden model (validate_fixed: every refusal of the
    specification), then refused (TorusLayerError) if this build cannot hold it."""
    _check_sizes(config, max_tokens, max_d)
    case = validate_fixed(case, config)
    if case.tokens > max_tokens or case.d > max_d:
        raise TorusLayerError(f"theta: (T, D) = ({case.tokens}, {case.d}) exceeds this "
                              f"layer's capacity ({max_tokens}, {max_d})")
    return case


def torus_writes(case, config: TorusFixedConfig = DEFAULT_CONFIG, *, max_tokens: int,
                 max_d: int) -> np.ndarray:
    """The `load` writes of a case (host step 0, golden `host_constants`): an (M, 3) int64
    array of (target, addr, data), registers last. theta_tk at address t * stride + k
    (stride = max_d rounded up to a power of two); g, omega (w), eta at k; signed values as
    two's complement of their width."""
    case = check_case(case, config, max_tokens=max_tokens, max_d=max_d)
    host = host_constants(case, config)
    stride = _stride(max_d)
    T, D = case.tokens, case.d
    addr = (np.arange(T)[:, None] * stride + np.arange(D)[None, :]).reshape(-1)
    rows = [np.stack([np.full(addr.size, TARGETS["theta"]), addr,
                      host.theta_acc.reshape(-1)], 1)]
    k = np.arange(D)
    rows.append(np.stack([np.full(D, TARGETS["g"]), k, host.g_int], 1))
    rows.append(np.stack([np.full(D, TARGETS["omega"]), k, host.w], 1))
    rows.append(np.stack([np.full(D, TARGETS["eta"]), k,
                          host.eta_int & ((1 << DATA_BITS) - 1)], 1))
    registers = {"tokens": T, "d": D, "causal": int(case.causal), "soft_k": host.soft_k,
                 "soft_shift": host.soft_shift,
                 "update_shift": host.update_shift & ((1 << UPDATE_SHIFT_BITS) - 1)}
    rows.append(np.array([(TARGETS["reg"], REGISTERS[key], value)
                          for key, value in registers.items()]))
    return np.concatenate(rows).astype(np.int64)


def decode_items(items, tokens: int, d: int) -> dict:
    """The `o` items of a run ((N, 2) int64 of (value, kind)) as attn_int (T, T) and
    theta_next_acc (T, D). Raises ValueError if the kinds are not in row order."""
    per_row = row_items(tokens, d)
    items = np.asarray(items, np.int64).reshape(-1, 2)
    if items.shape[0] != tokens * per_row:
        raise ValueError(f"{items.shape[0]} items for {tokens} rows of {per_row}")
    rows = items.reshape(tokens, per_row, 2)
    kinds = [KINDS["attn"]] * tokens + [KINDS["theta"]] * d
    if not np.array_equal(rows[:, :, 1], np.tile(kinds, (tokens, 1))):
        raise ValueError("the layer's items are not in row order (attn, then theta_next)")
    return {"attn_int": rows[:, :tokens, 0], "theta_next_acc": rows[:, tokens:, 0]}


# ---------------------------------------------------------------------------------------------
# Clocks

#: Per-row clocks besides the items and the divide CORDIC: ROW 1, SCORE drain 5, EXP drain 7,
#: RECIP 2, ATTN drain 3, UPDATE drain 8, PRE_EMIT 1.
ROW_OVERHEAD = 1 + 5 + 7 + 2 + 3 + 8 + 1
#: ROTATE besides its 2 T D items and the rotate CORDIC's latency: the issue stage.
ROTATE_OVERHEAD = 1


def torus_cycles(tokens: int, d: int, causal: bool = True,
                 config: TorusFixedConfig = DEFAULT_CONFIG,
                 cordic_arch: str = "pipelined") -> int:
    """`cycles` after a run of T tokens and D coordinates (the `o` stream always ready;
    pipelined CORDICs): ROTATE 2 T D + L_r + 1, and per row (n attended)
    2 n D + 2 n + T + D + L_d + 27. Closed form: 2 T D + L_r + 1 + T (T + D + L_d + 27)
    + (2 D + 2) N, N = T (T + 1) / 2 (causal) or T**2."""
    if cordic_arch != "pipelined":
        raise TorusLayerError("torus_cycles counts the pipelined CORDICs only (the iterative "
                              "CORDIC's ROTATE pass depends on its handshake)")
    l_r, l_d = config.rotate.latency_pipelined, config.reciprocal.divide.latency_pipelined
    total = 2 * tokens * d + l_r + ROTATE_OVERHEAD
    for t in range(tokens):
        n = t + 1 if causal else tokens
        total += 2 * n * d + 2 * n + tokens + d + l_d + ROW_OVERHEAD
    return total


# ---------------------------------------------------------------------------------------------
# The layer

class TorusLayer(wiring.Component):
    """One Kuramoto-attention layer on the torus (module docstring; golden/torus_fixed.py is
    the specification).

    Parameters
    ----------
    config : TorusFixedConfig   formats (phase bits P of the CORDIC, accumulator bits A)
    max_tokens : int            T capacity (memories and row buffers; 1..1024)
    max_d : int                 D capacity (1..64)
    cordic_arch : str           "pipelined" (default) or "iterative": the rotation CORDIC and
                                the reciprocal's divide CORDIC

    Ports
    -----
    start : In(1)        runs the loaded case (ignored while busy)
    busy : Out(1)        a run is in progress
    done : Out(1)        the last run has finished (until the next start)
    cycles : Out(32)     clocks from start to done (counts while busy)
    load : In(stream)    writes (target, addr, data) while not busy (ready = not busy):
                         theta (A-bit binary angle) at t * stride + k; g (17-bit), omega
                         (A-bit), eta (18-bit two's complement) at k; reg (REGISTERS): tokens,
                         d, causal, soft_k, soft_shift, update_shift (8-bit two's complement).
                         `torus_writes` encodes a case.
    o : Out(stream)      per row t, `row_items` items of (value, kind): attn_t0 ..
                         attn_t(T-1) (Q1.16), then theta_next_t0 .. theta_next_t(D-1) (A-bit).
                         The layer waits while an item is not taken.
    """

    def __init__(self, config: TorusFixedConfig = DEFAULT_CONFIG, *, max_tokens: int = 16,
                 max_d: int = 16, cordic_arch: str = "pipelined"):
        try:
            _check_sizes(config, max_tokens, max_d, cordic_arch)
        except Exception:
            self._MustUse__silence = True
            raise
        self.config = config
        self.max_tokens, self.max_d = int(max_tokens), int(max_d)
        self.cordic_arch = cordic_arch
        self.widths = formats(self.max_tokens, self.max_d, config)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "cycles": Out(CYCLE_BITS),
            "load": In(stream.Signature(load_layout(config, self.max_tokens, self.max_d))),
            "o": Out(stream.Signature(output_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, wd = self.config, self.widths
        cap, dcap = self.max_tokens, self.max_d
        A, P = cfg.acc_bits, cfg.phase_bits
        stride_bits = max(0, (dcap - 1).bit_length())
        token_bits = _bits(cap)
        pair = data.StructLayout({"x": signed(DATA_BITS), "y": signed(DATA_BITS)})
        score_bits = wd["score"]
        sum_bits = wd["Z (u)"]
        cs_bits = wd["C, S"] + 1

        # -- memories -------------------------------------------------------------------------
        depth = cap << stride_bits
        mem = {
            "theta": Memory(shape=unsigned(A), depth=depth, init=[]),
            "vp": Memory(shape=pair, depth=depth, init=[]),          # (cp, sp) of psi
            "vt": Memory(shape=pair, depth=depth, init=[]),          # (ct, st) of theta
            "g": Memory(shape=unsigned(G_BITS), depth=dcap, init=[]),
            "w": Memory(shape=unsigned(A), depth=dcap, init=[]),
            "eta": Memory(shape=signed(DATA_BITS), depth=dcap, init=[]),
            "score": Memory(shape=signed(score_bits), depth=cap, init=[]),
            "e": Memory(shape=unsigned(EXP_FRAC + 1), depth=cap, init=[]),
            "attn": Memory(shape=unsigned(FRAC + 1), depth=cap, init=[]),
            "next": Memory(shape=unsigned(A), depth=dcap, init=[]),
        }
        for name, memory in mem.items():
            m.submodules[f"mem_{name}"] = memory
        wr = {name: memory.write_port() for name, memory in mem.items()}
        rd = {name: memory.read_port() for name, memory in mem.items()}
        rd_vp_row = mem["vp"].read_port()           # psi of the row t (SCORE)
        rd_vt_row = mem["vt"].read_port()           # theta's vector of the row t (UPDATE)

        # -- run registers --------------------------------------------------------------------
        tokens = Signal(range(cap + 1))
        d = Signal(range(dcap + 1))
        causal = Signal()
        soft_k = Signal(SOFT_K_BITS)
        soft_shift = Signal(SOFT_SHIFT_BITS)
        update_shift = Signal(signed(UPDATE_SHIFT_BITS))
        registers = [tokens, d, causal, soft_k, soft_shift, update_shift]
        assert len(registers) == len(REGISTERS)

        # -- units ----------------------------------------------------------------------------
        m.submodules.rotate = rotate = Cordic.create(cfg.rotate, self.cordic_arch)
        m.submodules.reciprocal = recip = Reciprocal(cfg.reciprocal, sum_bits, self.cordic_arch)
        m.submodules.exp2 = exp2 = NegExp2(EXP_FRAC)
        m.d.comb += [rotate.o.ready.eq(1), recip.o.ready.eq(1)]

        # -- sequencer state ------------------------------------------------------------------
        busy = Signal()
        row = Signal(range(cap))
        attended = Signal(range(cap + 1))           # n
        j = Signal(range(cap + 1))                  # token counter of a pass
        kk = Signal(range(dcap + 1))                # coordinate counter of a pass
        issuing = Signal()
        sent = Signal()
        last_j = j == attended - 1
        last_k = kk == d - 1
        m.d.comb += [self.busy.eq(busy), self.load.ready.eq(~busy)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        def begin_pass():
            m.d.sync += [j.eq(0), kk.eq(0), issuing.eq(1)]

        def advance(inner, inner_last, outer, outer_last):
            with m.If(inner_last):
                m.d.sync += [inner.eq(0), outer.eq(outer + 1)]
                with m.If(outer_last):
                    m.d.sync += issuing.eq(0)
            with m.Else():
                m.d.sync += inner.eq(inner + 1)

        def address(t, k):
            return Cat(k[:stride_bits], t[:token_bits])

        tag = data.StructLayout({"valid": 1, "first": 1, "last": 1, "final": 1,
                                 "j": range(cap + 1), "k": range(dcap + 1)})
        in_state = {name: Signal(name=f"in_{name.lower()}")
                    for name in ("SCORE", "EXP", "ATTN", "UPDATE")}

        def issue_tag(name, first, last, final):
            t = Signal(tag, name=f"{name}_tag")
            m.d.comb += [t.valid.eq(issuing & in_state[name]), t.first.eq(first),
                         t.last.eq(last), t.final.eq(final), t.j.eq(j), t.k.eq(kk)]
            return t

        # ROTATE (step 1): k outer, t inner, psi then theta; the CORDIC's handshake.
        rot_k, rot_t, rot_ph = Signal(range(dcap + 1)), Signal(range(cap + 1)), Signal()
        rot_issuing = Signal()
        drift = Signal(A)
        v1 = Signal()
        tag1 = Signal(data.StructLayout({"ph": 1, "drift": unsigned(A)}))
        load1 = ~v1 | rotate.i.ready
        in_rotate = Signal()
        m.d.comb += [rd["w"].addr.eq(rot_k)]
        with m.If(in_rotate & load1):
            m.d.sync += [v1.eq(rot_issuing), tag1.ph.eq(rot_ph), tag1.drift.eq(drift)]
            with m.If(rot_issuing):
                m.d.sync += rot_ph.eq(~rot_ph)
                with m.If(rot_ph):
                    with m.If(rot_t == tokens - 1):
                        m.d.sync += [rot_t.eq(0), rot_k.eq(rot_k + 1), drift.eq(0)]
                        with m.If(rot_k == d - 1):
                            m.d.sync += rot_issuing.eq(0)
                    with m.Else():
                        m.d.sync += [rot_t.eq(rot_t + 1), drift.eq(drift + rd["w"].data)]
        angle = Mux(tag1.ph, rd["theta"].data, rd["theta"].data - tag1.drift)[:A]
        cordic_z = ((angle + (1 << (A - P - 1))) >> (A - P))[:P]
        m.d.comb += [rotate.i.valid.eq(v1 & in_rotate), rotate.i.payload.x.eq(1 << FRAC),
                     rotate.i.payload.y.eq(0), rotate.i.payload.z.eq(cordic_z)]
        # Outputs in order: (k, t, ph) counters into the vector memories.
        out_k, out_t, out_ph = Signal(range(dcap + 1)), Signal(range(cap + 1)), Signal()
        out_last = (out_ph == 1) & (out_t == tokens - 1) & (out_k == d - 1)
        out_addr = address(out_t, out_k)
        result = Cat(rotate.o.payload.x, rotate.o.payload.y)
        rot_out = in_rotate & rotate.o.valid
        m.d.comb += [wr["vp"].addr.eq(out_addr), wr["vp"].data.eq(result),
                     wr["vp"].en.eq(rot_out & ~out_ph),
                     wr["vt"].addr.eq(out_addr), wr["vt"].data.eq(result),
                     wr["vt"].en.eq(rot_out & out_ph)]
        with m.If(rot_out):
            m.d.sync += out_ph.eq(~out_ph)
            with m.If(out_ph):
                with m.If(out_t == tokens - 1):
                    m.d.sync += [out_t.eq(0), out_k.eq(out_k + 1)]
                with m.Else():
                    m.d.sync += out_t.eq(out_t + 1)

        # SCORE (step 2): u outer (j), k inner. c1 products, c2 dot, c3 g dot, c4 sum,
        # c5 buffer and max.
        s0 = issue_tag("SCORE", kk == 0, last_k, last_k & last_j)
        s4, s5 = delay_line(m, s0, 4, "s"), delay_line(m, s0, 5, "s")
        pc, ps = Signal(signed(2 * DATA_BITS)), Signal(signed(2 * DATA_BITS))
        dot = Signal(signed(DATA_BITS + 1))
        g2, g3 = Signal(G_BITS), Signal(G_BITS)
        gd = Signal(signed(G_BITS + DATA_BITS + 1))
        score_acc = Signal(signed(score_bits))
        score_max = Signal(signed(score_bits))
        row_vp, col_vp = rd_vp_row.data, rd["vp"].data
        m.d.sync += [pc.eq(row_vp.x * col_vp.x), ps.eq(row_vp.y * col_vp.y),
                     g2.eq(rd["g"].data), g3.eq(g2),
                     dot.eq((pc + ps + (1 << (FRAC - 1))) >> FRAC),
                     gd.eq(g3 * dot)]
        with m.If(s4.valid):
            m.d.sync += score_acc.eq(Mux(s4.first, 0, score_acc) + gd)
        m.d.comb += [wr["score"].addr.eq(s5.j), wr["score"].data.eq(score_acc),
                     wr["score"].en.eq(s5.valid & s5.last)]
        with m.If(s5.valid & s5.last & (score_acc > score_max)):
            m.d.sync += score_max.eq(score_acc)

        # EXP (step 3): c1 difference, c2 times K, c3 y, c4 .. c7 NegExp2, c7 buffer and sum.
        x0 = issue_tag("EXP", 1, last_j, last_j)
        x4 = delay_line(m, x0, 4, "x")
        x7 = delay_line(m, x4, NegExp2.latency, "x")
        diff = Signal(unsigned(score_bits + 1))
        dk = Signal(unsigned(score_bits + 1 + SOFT_K_BITS))
        y = Signal(unsigned(Y_BITS))
        total = Signal(unsigned(sum_bits))
        y_full = round_shift_var(dk, soft_shift)
        m.d.sync += [diff.eq(score_max - rd["score"].data), dk.eq(diff * soft_k),
                     y.eq(Mux(y_full > Y_MAX, Y_MAX, y_full))]
        m.d.comb += [exp2.valid.eq(x4.valid), exp2.y.eq(y)]
        m.d.comb += [wr["e"].addr.eq(x7.j), wr["e"].data.eq(exp2.e), wr["e"].en.eq(x7.valid)]
        with m.If(x7.valid):
            m.d.sync += total.eq(total + exp2.e)
        m.d.comb += recip.i.payload.eq(total)

        # ATTN (step 4): c1 e r, c2 rounding, c3 buffer.
        a0 = issue_tag("ATTN", 1, last_j, last_j)
        a3 = delay_line(m, a0, 3, "a")
        r_value, r_shift = Signal(signed(DATA_BITS)), Signal(signed(8))
        er = Signal(unsigned(EXP_FRAC + 1 + DATA_BITS - 1))
        attn = Signal(unsigned(FRAC + 1))
        m.d.sync += [er.eq(rd["e"].data * r_value[:DATA_BITS - 1]),
                     attn.eq(round_shift_var(er, (r_shift + FRAC)[:6]))]
        m.d.comb += [wr["attn"].addr.eq(a3.j), wr["attn"].data.eq(attn),
                     wr["attn"].en.eq(a3.valid)]

        # UPDATE (step 5): k outer, u inner (j). c1 products, c2 sums, c3 Cr, Sr, c4 the cross
        # products, c5 q, c6 eta q, c7 delta, c8 theta_next into the next buffer.
        u0 = issue_tag("UPDATE", j == 0, last_j, last_j & last_k)
        u2, u8 = delay_line(m, u0, 2, "u"), delay_line(m, u0, 8, "u")
        pa_c, pa_s = Signal(signed(FRAC + 2 + DATA_BITS)), Signal(signed(FRAC + 2 + DATA_BITS))
        acc_c, acc_s = Signal(signed(cs_bits)), Signal(signed(cs_bits))
        # |Cr|, |Sr| <= sum_u attn_tu (2**16 + 3) / 2**16 <= 2**16 (1 + rho) + n / 2 + 4 < 2**17:
        # sum_u attn_tu <= Z r 2**-(16 + L) + n / 2. Likewise |q| <= |v_t| |(Cr, Sr)| < 2**17.
        cr, sr = Signal(signed(DATA_BITS + 1)), Signal(signed(DATA_BITS + 1))
        qa, qb = Signal(signed(2 * DATA_BITS + 1)), Signal(signed(2 * DATA_BITS + 1))
        q = Signal(signed(DATA_BITS + 1))
        prod = Signal(signed(2 * DATA_BITS + 1))
        delta = Signal(A)
        attn_s = Cat(rd["attn"].data, Const(0, 1)).as_signed()
        m.d.sync += [pa_c.eq(attn_s * rd["vt"].data.x), pa_s.eq(attn_s * rd["vt"].data.y)]
        with m.If(u2.valid):
            m.d.sync += [acc_c.eq(Mux(u2.first, 0, acc_c) + pa_c),
                         acc_s.eq(Mux(u2.first, 0, acc_s) + pa_s)]
        row_vt1 = Signal(pair)
        m.d.comb += row_vt1.eq(rd_vt_row.data)
        row_vt4 = delay_line(m, row_vt1, 3, "vt_row")
        eta6 = delay_line(m, rd["eta"].data, 5, "eta")
        theta8 = delay_line(m, rd["theta"].data, 7, "theta")
        m.d.sync += [cr.eq((acc_c + (1 << (FRAC - 1))) >> FRAC),
                     sr.eq((acc_s + (1 << (FRAC - 1))) >> FRAC),
                     qa.eq(row_vt4.x * sr), qb.eq(row_vt4.y * cr),
                     q.eq((qa - qb + (1 << (FRAC - 1))) >> FRAC),
                     prod.eq(eta6 * q),
                     delta.eq(shift_round(m, prod, update_shift, UPDATE_SHIFT_MAX, A)[:A])]
        m.d.comb += [wr["next"].addr.eq(u8.k), wr["next"].data.eq((theta8 + delta)[:A]),
                     wr["next"].en.eq(u8.valid & u8.last)]

        # Read addresses by pass.
        in_emit = Signal()
        item = Signal(range(cap + dcap + 1))
        fire = self.o.valid & self.o.ready
        next_item = item + fire
        m.d.comb += [
            rd["theta"].addr.eq(Mux(in_rotate, address(rot_t, rot_k), address(row, kk))),
            rd["theta"].en.eq(~in_rotate | load1),
            rd_vp_row.addr.eq(address(row, kk)), rd["vp"].addr.eq(address(j, kk)),
            rd["g"].addr.eq(kk), rd["score"].addr.eq(j), rd["e"].addr.eq(j),
            rd["attn"].addr.eq(Mux(in_emit, next_item, j)),
            rd["vt"].addr.eq(address(j, kk)), rd_vt_row.addr.eq(address(row, kk)),
            rd["eta"].addr.eq(kk),
            rd["next"].addr.eq(next_item - tokens),
        ]

        # EMIT
        value, kind = self.o.payload.value, self.o.payload.kind
        with m.If(item < tokens):
            m.d.comb += [value.eq(Mux(item < attended, rd["attn"].data, 0)),
                         kind.eq(KINDS["attn"])]
        with m.Else():
            m.d.comb += [value.eq(rd["next"].data), kind.eq(KINDS["theta"])]
        last_item = item == tokens + d - 1

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), self.done.eq(0), self.cycles.eq(0), row.eq(0),
                                 rot_k.eq(0), rot_t.eq(0), rot_ph.eq(0), rot_issuing.eq(1),
                                 drift.eq(0), v1.eq(0), out_k.eq(0), out_t.eq(0),
                                 out_ph.eq(0)]
                    m.next = "ROTATE"

            with m.State("ROTATE"):
                m.d.comb += in_rotate.eq(1)
                with m.If(rotate.o.valid & out_last):
                    m.next = "ROW"

            with m.State("ROW"):
                m.d.sync += [attended.eq(Mux(causal, row + 1, tokens)),
                             score_max.eq(-(1 << (score_bits - 1))), total.eq(0)]
                begin_pass()
                m.next = "SCORE"

            with m.State("SCORE"):
                m.d.comb += in_state["SCORE"].eq(1)
                with m.If(issuing):
                    advance(kk, last_k, j, last_j)
                with m.If(s5.valid & s5.final):
                    begin_pass()
                    m.next = "EXP"

            with m.State("EXP"):
                m.d.comb += in_state["EXP"].eq(1)
                with m.If(issuing):
                    advance(j, last_j, kk, 1)
                with m.If(x7.valid & x7.final):
                    m.d.sync += sent.eq(0)
                    m.next = "RECIP"

            with m.State("RECIP"):
                m.d.comb += recip.i.valid.eq(~sent)
                with m.If(recip.i.ready):
                    m.d.sync += sent.eq(1)
                with m.If(recip.o.valid):
                    m.d.sync += [sent.eq(0), r_value.eq(recip.o.payload.r),
                                 r_shift.eq(recip.o.payload.shift)]
                    begin_pass()
                    m.next = "ATTN"

            with m.State("ATTN"):
                m.d.comb += in_state["ATTN"].eq(1)
                with m.If(issuing):
                    advance(j, last_j, kk, 1)
                with m.If(a3.valid & a3.final):
                    begin_pass()
                    m.next = "UPDATE"

            with m.State("UPDATE"):
                m.d.comb += in_state["UPDATE"].eq(1)
                with m.If(issuing):
                    advance(j, last_j, kk, last_k)
                with m.If(u8.valid & u8.final):
                    m.d.sync += item.eq(0)
                    m.next = "PRE_EMIT"

            with m.State("PRE_EMIT"):
                m.d.comb += in_emit.eq(1)
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

        # -- load port: writes while idle -------------------------------------------------------
        load = self.load.payload
        with m.If(self.load.valid & ~busy):
            with m.Switch(load.target):
                for name in ("theta", "g", "eta"):
                    with m.Case(TARGETS[name]):
                        port = wr[name]
                        m.d.comb += [port.addr.eq(load.addr), port.en.eq(1),
                                     port.data.eq(load.data[:len(port.data)])]
                with m.Case(TARGETS["omega"]):
                    m.d.comb += [wr["w"].addr.eq(load.addr), wr["w"].en.eq(1),
                                 wr["w"].data.eq(load.data[:A])]
                with m.Case(TARGETS["reg"]):
                    with m.Switch(load.addr):
                        for register, addr in zip(registers, REGISTERS.values()):
                            with m.Case(addr):
                                m.d.sync += register.eq(load.data[:len(register)])
        return m


def torus_build_design(max_tokens: int, max_d: int, config: TorusFixedConfig = DEFAULT_CONFIG,
                       cordic_arch: str = "pipelined") -> TorusLayer:
    """The layer for a synthesis build (the bench's): a TorusLayer of capacity
    (max_tokens, max_d); its ports are the `load` and `o` streams, start/busy/done, cycles."""
    return TorusLayer(config, max_tokens=max_tokens, max_d=max_d, cordic_arch=cordic_arch)
