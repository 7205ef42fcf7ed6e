"""The attention head RTL (hdl/attention.py) against golden/attention_fixed.py's analytic mode.

Bit-exact means: every row's W exponent, drive h, theta, x = (cos, sin), attn and out equal
attention_fixed's integers (e_w, h_int, theta_int, x_int, attn_int, out_int), and the
head's clock count equals `cycles_per_head` when the output is always ready.

- Amaranth's simulator: the sub-units (WeightExponent, Normalizer, Reciprocal with both
  CORDIC architectures, Numerator) on random and edge vectors, and whole heads on small
  cases (both architectures, output backpressure, the error flag).
- cocotb on Verilator: one build (T <= 16, d_h <= 32) runs the subject-verb shape
  (H = 1, T = 9, d_h = 32) and a keyword-spotting-like shape (H = 2, T = 12, d_h = 16),
  causal and not, p = 1, 2, 4, plus edge cases, in one simulation (about 50 s, build included).
"""

import numpy as np
import pytest
from amaranth.sim import Simulator
from oscarray.golden.attention import random_case
from oscarray.golden.attention_fixed import (
    DEFAULT_CONFIG,
    AttentionFixedError,
    _w_exponent,
    attention_fixed,
    front_end,
    normalize_shift,
    reciprocal,
    validate_fixed,
)
from oscarray.hdl.attention import (
    E_MAX,
    E_MIN,
    REGISTERS,
    TARGETS,
    AttentionHead,
    AttentionHeadError,
    Normalizer,
    Numerator,
    Reciprocal,
    WeightExponent,
    check_case,
    cordic_latencies,
    cycles_per_head,
    cycles_per_row,
    decode_items,
    head_writes,
    ode_cycles,
    ode_engine_runs,
    relu_eps_int,
    row_items,
)
from oscarray.golden.array_fixed import CONVERGE_STEPS
from oscarray.golden.attention import NOT_CONVERGED

CONFIG = DEFAULT_CONFIG
DATA_MAX = 2 ** 17 - 1
M_BITS = 60          # the score width of a d_h = 32 build
H_BITS = 39          # the drive width of a T = 16 build


def R(v: int, s: int) -> int:
    """The specification's rounding, with Python integers: round half up by 2**s (s > 0),
    exact left shift (s <= 0)."""
    return v << -s if s <= 0 else (v + (1 << (s - 1))) >> s


async def start_and_count(ctx, dut) -> int:
    """Pulse dut.start for a clock, then wait for dut.done: the clocks from the start's."""
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    clocks = 1
    while not ctx.get(dut.done):
        await ctx.tick()
        clocks += 1
    return clocks


def run(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ---------------------------------------------------------------------------------------------
# Sub-units

def exponent_vectors(rng):
    """(m_max, F): random scores over the whole range and the boundaries of the search."""
    vectors = [(0, 54), (0, -40), (1, 0), (DATA_MAX, 0), (DATA_MAX - 1, 0), (2 ** 59, 40)]
    for _ in range(150):
        bits = int(rng.integers(0, M_BITS + 1))
        m_max = int(rng.integers(0, 2 ** bits)) if bits else 0
        vectors.append((m_max, int(rng.integers(-10, 100))))
    # R(m, F - e) + eps(e) == 2**17 - 1 exactly, and the neighbours that round across it.
    for _ in range(40):
        e = int(rng.integers(E_MIN, E_MAX + 1))
        s = int(rng.integers(1, 40))
        target = DATA_MAX - relu_eps_int(e)
        low = target << s
        for m_max in (low - (1 << (s - 1)), low + (1 << (s - 1)) - 1, low + (1 << (s - 1))):
            vectors.append((m_max, e + s))
    return vectors


def spec_exponent(m_max, F):
    """Step 3's exponent with Python integers: the largest e with R + eps <= 2**17 - 1."""
    fitting = [e for e in range(64) if R(m_max, F - e) + relu_eps_int(e) <= DATA_MAX]
    return max(fitting) if fitting else None


def test_weight_exponent_matches_the_specification():
    rng = np.random.default_rng(1)
    vectors = [v for v in exponent_vectors(rng) if v[0] < 2 ** M_BITS]
    dut = WeightExponent(M_BITS)
    got = []

    async def bench(ctx):
        for m_max, F in vectors:
            ctx.set(dut.m_max, m_max)
            ctx.set(dut.shift, F)
            clocks = await start_and_count(ctx, dut)
            got.append((ctx.get(dut.e_w), ctx.get(dut.eps), ctx.get(dut.found), clocks))
    run(dut, bench)
    found = refused = 0
    for (m_max, F), (e_w, eps, ok, clocks) in zip(vectors, got):
        assert clocks == WeightExponent.cycles
        e = spec_exponent(m_max, F)
        if e is None or e < E_MIN:          # eps(e) = 0: the golden model refuses the row
            assert not ok, (m_max, F)
            refused += 1
            continue
        assert ok and (e_w, eps) == (e, relu_eps_int(e)) == _w_exponent(m_max, F), (m_max, F)
        found += 1
    assert found > 100 and refused > 5


def normalizer_vectors(rng):
    top = 2 ** (H_BITS - 1)
    vectors = [(0, 0), (1, 0), (0, -1), (-top, 0), (top - 1, -top), (2 ** 15, 2 ** 15),
               (2 ** 16, -(2 ** 16)), (2 ** 16 + 1, 3), (-(2 ** 16) - 1, 5)]
    for _ in range(300):
        bits = int(rng.integers(0, H_BITS))
        x, y = (int(rng.integers(-(2 ** bits), 2 ** bits)) for _ in range(2))
        vectors.append((x, y))
    for shift in range(1, 20):          # exactly half an LSB after the shift, both signs
        base = (2 ** 16 - 1) << shift
        vectors += [(base + (1 << (shift - 1)), 7), (-base - (1 << (shift - 1)), -7)]
    return vectors


def test_normalizer_matches_golden():
    vectors = normalizer_vectors(np.random.default_rng(2))
    dut = Normalizer(H_BITS)
    got, done = [], []

    async def bench(ctx):
        # The first half one vector a clock, the rest every other clock (the idle clocks
        # between them: `done` must mark the results): each one's result `latency` clocks
        # after it went in.
        half = len(vectors) // 2
        feed = vectors[:half] + [v for vector in vectors[half:] for v in (vector, None)]
        for clock in range(len(feed) + Normalizer.latency):
            vector = feed[clock] if clock < len(feed) else None
            ctx.set(dut.valid, vector is not None)
            if vector is not None:
                ctx.set(dut.h_x, vector[0])
                ctx.set(dut.h_y, vector[1])
            else:                           # garbage between the vectors
                ctx.set(dut.h_x, -(clock * 7919) % 2 ** (H_BITS - 1))
                ctx.set(dut.h_y, clock * 104729 % 2 ** (H_BITS - 1))
            if ctx.get(dut.done):
                got.append((ctx.get(dut.x), ctx.get(dut.y), ctx.get(dut.shift)))
                done.append(clock)
            await ctx.tick()
    run(dut, bench)
    half = len(vectors) // 2
    fed = list(range(half)) + [half + 2 * index for index in range(len(vectors) - half)]
    assert done == [clock + Normalizer.latency for clock in fed]
    h = np.array(vectors, np.int64)
    want = np.stack(normalize_shift(h[:, 0], h[:, 1]), -1)
    np.testing.assert_array_equal(np.array(got, np.int64), want)
    peak = np.abs(want[:, :2]).max(axis=1)
    assert ((peak >= 2 ** 15) & (peak <= 2 ** 16) | (peak == 0)).all()


@pytest.mark.parametrize("arch", ["pipelined", "iterative"])
def test_reciprocal_matches_golden(arch):
    bits = 25
    rng = np.random.default_rng(3)
    sums = [0, 1, 2, 3, 2 ** 16 - 1, 2 ** 16, 2 ** 17 - 1, 2 ** 17, 2 ** 17 + 1,
            2 ** 18 - 1, 2 ** 18 - 2, 2 ** 18 - 3, 2 ** bits - 1, 2 ** 24]
    sums += [int(s) for s in rng.integers(1, 2 ** rng.integers(1, bits + 1, 40))]
    assert_reciprocal_matches_golden(Reciprocal(CONFIG, bits, arch), sums, arch)


def assert_reciprocal_matches_golden(dut, sums, arch):
    """`dut` (a Reciprocal) gives golden `reciprocal` of each of `sums`, one at a time, in
    1 + the divide CORDIC's latency."""
    got, latency = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for total in sums:
            ctx.set(dut.i.payload, total)
            ctx.set(dut.i.valid, 1)
            await ctx.tick()
            ctx.set(dut.i.valid, 0)
            clocks = 0
            while True:
                clocks += 1
                _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                if valid:
                    break
            got.append((payload.r, payload.shift))
            latency.append(clocks)
    run(dut, bench)
    r, L = reciprocal(CONFIG, np.array(sums, np.int64))
    np.testing.assert_array_equal(np.array(got, np.int64), np.stack([r, L], -1))
    assert set(latency) == {1 + cordic_latencies(CONFIG, arch)[2]}


def spec_numerator(cos, sin, a_x, a_y, p):
    u = max(0, 2 ** 16 + R(cos * a_x + sin * a_y, 16))
    g2 = R(u * u, 16)
    return {1: u, 2: g2, 4: R(g2 * g2, 16)}[p]


@pytest.mark.parametrize("p", [1, 2, 4])
def test_numerator_matches_golden(p):
    # x_i and the anchors of a real case, g against golden's g_int; and the extremes
    # (aligned, antipodal: u = 0, the largest cosines) against the specification's text.
    gold = attention_fixed(random_case((1, 12, 4, 2), seed=4, p=np.array(p),
                                       causal=np.array(False)))
    x, a = gold["x_int"][0], gold["anchor_int"][0]
    items = [(int(x[i, 0]), int(x[i, 1]), int(a[j, 0]), int(a[j, 1]))
             for i in range(12) for j in range(12)]
    one = 2 ** 16
    extremes = [(one, 0, one, 0), (one, 0, -one, 0), (0, -one, 0, one), (one, 1, -one, 0),
                (one + 3, 2, one, 5), (-one, 0, -one, 0), (46341, 46341, 46341, 46341)]
    dut = Numerator()
    got = []

    async def bench(ctx):
        ctx.set(dut.p, p)
        for values in items + extremes + [None] * Numerator.latency:
            ctx.set(dut.valid, values is not None)
            if values is not None:
                for port, value in zip((dut.x[0], dut.x[1], dut.a[0], dut.a[1]), values):
                    ctx.set(port, value)
            _, _, valid, g = await ctx.tick().sample(dut.o_valid, dut.g)
            if valid:
                got.append(g)
    run(dut, bench)
    # The first result leaves `latency` clocks after its item: sampled after the edges.
    assert len(got) == len(items) + len(extremes)
    np.testing.assert_array_equal(got[:len(items)], gold["g_int"][0].reshape(-1))
    assert got[len(items):] == [spec_numerator(*e, p) for e in extremes]
    assert got[len(items) + 1] == 0 and got[len(items)] == {1: 2, 2: 4, 4: 16}[p] * one


# ---------------------------------------------------------------------------------------------
# Whole heads in Amaranth's simulator

SMALL = dict(max_tokens=8, max_d_h=8)
MAX_CLOCKS = 50_000      # a head that stops giving items fails instead of hanging


async def load_and_start(ctx, dut, writes):
    """Every (target, addr, data) of `writes` through `load`, one a clock, then a start pulse."""
    for target, addr, value in writes:
        ctx.set(dut.load.payload, {"target": int(target), "addr": int(addr),
                                   "data": int(value)})
        ctx.set(dut.load.valid, 1)
        await ctx.tick()
    ctx.set(dut.load.valid, 0)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)


async def collect_items(ctx, dut, items, rng, ready_prob=1.0, clock_limit=MAX_CLOCKS):
    """Take `items` (value, kind) from `o`, ready with probability `ready_prob` a clock;
    returns them as an (N, 2) array."""
    got, clocks = [], 0
    while len(got) < items:
        clocks += 1
        assert clocks < clock_limit, f"{len(got)} of {items} items after {clocks} clocks"
        ready = int(rng.random() < ready_prob)
        ctx.set(dut.o.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
        if valid and ready:
            got.append((payload.value, payload.kind))
    return np.array(got, np.int64)


def simulate_head(dut, writes, items, ready_prob=1.0, seed=0, clock_limit=MAX_CLOCKS):
    """Load `writes`, start, collect `items` from `o`; returns (items (N, 2), cycles, error)."""
    rng = np.random.default_rng(seed)
    out = {}

    async def bench(ctx):
        await load_and_start(ctx, dut, writes)
        got = await collect_items(ctx, dut, items, rng, ready_prob, clock_limit)
        ctx.set(dut.o.ready, 0)
        for _ in range(3):
            await ctx.tick()
        assert ctx.get(dut.done) and not ctx.get(dut.busy)
        assert not ctx.get(dut.o.valid)
        out.update(items=got, cycles=ctx.get(dut.cycles), error=ctx.get(dut.error))
    run(dut, bench)
    return out


def assert_head_bit_exact(rtl: dict, gold: dict, fe, head: int):
    np.testing.assert_array_equal(rtl["e_w"], fe.e_w[head])
    np.testing.assert_array_equal(rtl["h"], gold["h_int"][head])
    np.testing.assert_array_equal(rtl["theta"], gold["theta_int"][head])
    np.testing.assert_array_equal(rtl["x"], gold["x_int"][head])
    np.testing.assert_array_equal(rtl["attn"], gold["attn_int"][head])
    np.testing.assert_array_equal(rtl["out"], gold["out_int"][head])


@pytest.mark.parametrize("arch,shape,causal,p,ready", [
    ("pipelined", (1, 5, 6), True, 2, 1.0),
    ("pipelined", (1, 8, 8), False, 4, 0.5),
    ("iterative", (1, 4, 3), True, 1, 1.0),
    ("iterative", (1, 6, 8), False, 2, 0.7),
])
def test_head_bit_exact_in_amaranth(arch, shape, causal, p, ready):
    H, T, d_h = shape
    case = random_case((H, T, d_h, 2), seed=T * d_h, causal=np.array(causal), p=np.array(p))
    gold = attention_fixed(case)
    fe = front_end(validate_fixed(case))
    dut = AttentionHead(CONFIG, cordic_arch=arch, **SMALL)
    writes = head_writes(case, CONFIG, **SMALL)[0]
    result = simulate_head(dut, writes, T * row_items(T, d_h), ready_prob=ready, seed=p)
    assert_head_bit_exact(decode_items(result["items"], T, d_h), gold, fe, 0)
    assert not result["error"]
    formula = cycles_per_head(T, d_h, causal, CONFIG, arch)
    if ready == 1:
        assert result["cycles"] == formula
    else:
        assert result["cycles"] > formula       # the head waited for the output


def test_smallest_build_runs_one_token():
    # Capacity 1 x 1: the load address must still reach every run register.
    case = random_case((1, 1, 1, 2), seed=6, causal=np.array(False), p=np.array(4))
    build = {"max_tokens": 1, "max_d_h": 1}
    result = simulate_head(AttentionHead(CONFIG, **build), head_writes(case, CONFIG, **build)[0],
                           row_items(1, 1))
    assert_head_bit_exact(decode_items(result["items"], 1, 1), attention_fixed(case),
                          front_end(validate_fixed(case)), 0)
    assert result["cycles"] == cycles_per_head(1, 1, False, CONFIG)


def test_head_error_flag_and_the_next_run():
    # The score shift register made 20 bits too small: scores 2**20 too large, so no row
    # has an exponent (the golden model refuses such scores); a correct load clears it.
    case = random_case((1, 3, 4, 2), seed=5, causal=np.array(False))
    writes = head_writes(case, CONFIG, **SMALL)[0]
    bad = writes.copy()
    row = np.flatnonzero((bad[:, 0] == TARGETS["reg"]) & (bad[:, 1] == REGISTERS["score_shift"]))
    bad[row, 2] = (bad[row, 2] - 20) % 2 ** 12
    dut = AttentionHead(CONFIG, **SMALL)
    items = 3 * row_items(3, 4)
    gold = attention_fixed(case)
    got = {}

    async def bench(ctx):
        for name, rows in (("bad", bad), ("good", writes)):
            await load_and_start(ctx, dut, rows)
            ctx.set(dut.o.ready, 1)
            collected = []
            for _ in range(MAX_CLOCKS):
                if len(collected) == items:
                    break
                _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                if valid:
                    collected.append((payload.value, payload.kind))
            await ctx.tick()
            got[name] = (ctx.get(dut.error), decode_items(np.array(collected), 3, 4))
    run(dut, bench)
    assert got["bad"][0] == 1
    np.testing.assert_array_equal(got["bad"][1]["e_w"], [E_MIN] * 3)
    assert got["good"][0] == 0
    np.testing.assert_array_equal(got["good"][1]["attn"], gold["attn_int"][0])


def spec_front_end(case_ints, F, c, causal):
    """Steps 1-4 with Python integers: (e_w, W, h) of each row."""
    q, k, a = case_ints
    T = len(q)
    rows = []
    for i in range(T):
        attended = range(i + 1) if causal else range(T)
        m = {j: max(sum(x * y for x, y in zip(q[i], k[j])), 0) * c for j in attended}
        e = spec_exponent(max(m.values()), F)
        eps = relu_eps_int(e)
        W = {j: R(m[j], F - e) + eps for j in attended}
        h = [sum(W[j] * a[j][comp] for j in attended) for comp in (0, 1)]
        rows.append((e, W, h))
    return rows


def test_tiny_q_k_follow_the_specification_where_golden_shift_overflows():
    # q, k ~ 2**-18.5: F = e_q + e_k + C = 90, every row's e_w = 26, so W = R(m, 64) + eps.
    # The specification gives R(m, 64) = 0 (m < 2**62). golden `_shift` used to compute its
    # half as 1 << 63, which wraps in int64, and returned -1 (W one less); it now clamps
    # right shifts to 63. Golden, the RTL and the specification's text agree.
    case = random_case((1, 4, 8, 2), seed=0, causal=np.array(False))
    case["q"], case["k"] = case["q"] * 2.0 ** -18.5, case["k"] * 2.0 ** -18.5
    fe = front_end(validate_fixed(case))
    F = fe.e_q + fe.e_k + fe.score_bits
    assert F == 90 and (fe.e_w == 26).all()
    spec = spec_front_end((fe.q[0].tolist(), fe.k[0].tolist(), fe.a[0].tolist()),
                          F, fe.score_c, False)
    writes = head_writes(case, CONFIG, **SMALL)[0]
    result = simulate_head(AttentionHead(CONFIG, **SMALL), writes, 4 * row_items(4, 8))
    rtl = decode_items(result["items"], 4, 8)
    gold = attention_fixed(case)
    want_w = [[row[1][j] for j in range(4)] for row in spec]
    np.testing.assert_array_equal(fe.w[0], want_w)
    np.testing.assert_array_equal(fe.w[0], relu_eps_int(26))       # R(m, 64) = 0
    np.testing.assert_array_equal(rtl["e_w"], [row[0] for row in spec])
    np.testing.assert_array_equal(fe.e_w[0], [row[0] for row in spec])
    np.testing.assert_array_equal(rtl["h"], [row[2] for row in spec])
    np.testing.assert_array_equal(gold["h_int"][0], [row[2] for row in spec])
    assert_head_bit_exact(rtl, gold, fe, 0)


def test_check_case_and_construction_refusals():
    case = random_case((1, 9, 32, 2), seed=1)
    check_case(case, CONFIG, max_tokens=16, max_d_h=32)
    with pytest.raises(AttentionHeadError, match="exceeds"):
        check_case(case, CONFIG, max_tokens=8, max_d_h=32)
    with pytest.raises(AttentionHeadError, match="exceeds"):
        check_case(case, CONFIG, max_tokens=16, max_d_h=16)
    with pytest.raises(AttentionHeadError, match="analytic"):
        check_case(dict(case, mode="ode-drive"), CONFIG, max_tokens=16, max_d_h=32)
    with pytest.raises(AttentionFixedError, match="sigma"):
        check_case(dict(case, sigma="softplus"), CONFIG, max_tokens=16, max_d_h=32)
    big = random_case((1, 6, 16, 2), seed=2, causal=np.array(False))
    big["q"], big["k"] = big["q"] * 12, big["k"] * 12        # a score above ~256
    with pytest.raises(AttentionFixedError, match="relu_eps"):
        check_case(big, CONFIG, max_tokens=16, max_d_h=32)
    with pytest.raises(AttentionHeadError, match="max_tokens"):
        AttentionHead(CONFIG, max_tokens=0)
    with pytest.raises(AttentionHeadError, match="max_d_h"):
        AttentionHead(CONFIG, max_d_h=129)
    with pytest.raises(AttentionHeadError, match="cordic_arch"):
        AttentionHead(CONFIG, cordic_arch="bit-serial")
    with pytest.raises(TypeError):
        AttentionHead(CONFIG, max_tokens=4.0)


def test_cycle_formula_closed_form():
    L = sum(cordic_latencies(CONFIG))
    assert L == 33 + 32 + 20
    for T, d_h, causal in ((9, 32, True), (9, 32, False), (12, 16, True), (1, 1, False)):
        N = T * (T + 1) // 2 if causal else T * T
        closed = T * (T + d_h + L + 57) + (2 * d_h + 3) * N
        assert cycles_per_head(T, d_h, causal) == closed
    # the two MAC passes are the work: 2 n d_h clocks of a row
    assert cycles_per_row(9, 9, 32) - cycles_per_row(8, 9, 32) == 2 * 32 + 3


# ---------------------------------------------------------------------------------------------
# cocotb on Verilator: one build, every case

BUILD = dict(max_tokens=16, max_d_h=32)


def verilator_cases():
    cases, ready = {}, {}
    for shape, name in (((1, 9, 32, 2), "sva"), ((2, 12, 16, 2), "kws")):
        for causal in (True, False):
            for p in (1, 2, 4):
                key = f"{name}-{'causal' if causal else 'full'}-p{p}"
                seed = 10 * p + causal + (100 if name == "kws" else 0)
                cases[key] = random_case(shape, seed=seed, causal=np.array(causal),
                                         p=np.array(p))
                ready[key] = 0.6 if (name == "kws" and p == 2) else 1.0
    # Zero drives: q = 0 gives every W = eps(26); alternating anchors +-e_1 cancel (h = 0
    # in every row when not causal, in odd rows when causal): theta = 0.
    for causal in (True, False):
        zero = random_case((1, 4, 8, 2), seed=7, causal=np.array(causal), p=np.array(2))
        zero["q"] = np.zeros_like(zero["q"])
        zero["anchors"] = np.array([[[1.0, 0.0], [-1.0, 0.0]] * 2])
        cases[f"zero-drive-{'causal' if causal else 'full'}"] = zero
    # Scores near the largest the format holds (e_w = E_MIN in some rows).
    large = random_case((1, 6, 16, 2), seed=2, causal=np.array(False), p=np.array(4))
    large["q"], large["k"] = large["q"] * 11, large["k"] * 11
    cases["large-scores"] = large
    # d_h neither a power of two nor of four (c is not a shift); the full capacity; T = 1.
    cases["d12"] = random_case((1, 5, 12, 2), seed=8, causal=np.array(True), p=np.array(1))
    cases["full-capacity"] = random_case((1, 16, 32, 2), seed=9, causal=np.array(True),
                                         p=np.array(4))
    cases["one-token"] = random_case((1, 1, 1, 2), seed=10, causal=np.array(False))
    for key in cases:
        ready.setdefault(key, 1.0)
    return cases, ready


CASES, READY = verilator_cases()


def test_rtl_bit_exact_on_verilator(attention_build_root):
    # One test (not one per case): under pytest-xdist a single worker builds the model (in
    # the folder tests/test_attention_cli.py's rtl runs share, tests/conftest.py).
    from oscarray.sim.attention import run_attention_rtl_batch
    names = list(CASES)
    results = run_attention_rtl_batch([CASES[k] for k in names], CONFIG,
                                      build_root=attention_build_root,
                                      ready_prob=[READY[k] for k in names], seed=3, **BUILD)
    fe = {}
    for name, rtl in zip(names, results):
        case = CASES[name]
        gold = attention_fixed(case)
        fe[name] = front_end(validate_fixed(case))
        assert rtl["sim"] == "verilator"
        for key in ("attn_int", "out_int", "theta_int", "x_int", "h_int"):
            np.testing.assert_array_equal(rtl[key], gold[key], err_msg=f"{name}: {key}")
        np.testing.assert_array_equal(rtl["e_w"], fe[name].e_w, err_msg=f"{name}: e_w")
        assert not rtl["error"].any(), name
        T, d_h = case["q"].shape[1:]
        formula = cycles_per_head(T, d_h, bool(case["causal"]), CONFIG)
        if READY[name] == 1:
            assert (rtl["cycles"] == formula).all(), name
        else:
            assert (rtl["cycles"] > formula).all(), name     # it waited for the output
    # The edge cases reach what they are for.
    assert fe["large-scores"].e_w.min() == E_MIN
    assert fe["zero-drive-full"].zero.all()
    assert fe["zero-drive-causal"].zero[0].tolist() == [False, True, False, True]
    np.testing.assert_array_equal(results[names.index("zero-drive-full")]["theta_int"], 0)
    assert any((f.e_w == E_MAX).any() for f in fe.values())    # a row with no positive score
    assert fe["full-capacity"].w.shape[1:] == (BUILD["max_tokens"],) * 2


# ---------------------------------------------------------------------------------------------
# ode-drive: the head with its array engine

ODE = dict(dt=np.array(1.0), max_steps=np.array(3000))
ODE_MODES = ("analytic", "ode-drive", "ode-pairwise")


def ode_case(shape, seed, causal, init="random", p=2, mode="ode-drive"):
    return dict(random_case(shape, seed=seed, causal=np.array(causal), p=np.array(p)),
                **dict(ODE, tol=np.array(6e-5)), init=np.array(init), mode=np.array(mode))


def ode_clocks(case, gold, head, arch="pipelined", mac_lanes=1):
    T, d_h = case["q"].shape[1:]
    return ode_cycles(T, d_h, bool(case["causal"]), str(case["mode"]),
                      ode_engine_runs(case, gold, head), str(case["init"]) == "warm", CONFIG,
                      arch, mac_lanes)


def assert_ode_bit_exact(rtl: dict, gold: dict, head: int, name=""):
    for key, golden in (("theta", "theta_int"), ("x", "x_int"), ("attn", "attn_int"),
                        ("out", "out_int"), ("h", "h_int")):
        np.testing.assert_array_equal(rtl[key], gold[golden][head], err_msg=f"{name} {key}")
    steps = np.where(rtl["converged"], rtl["steps"], NOT_CONVERGED)
    np.testing.assert_array_equal(steps, gold["steps"][head], err_msg=f"{name} steps")
    np.testing.assert_array_equal(rtl["converged"], gold["converged"][head])


@pytest.mark.parametrize("mode,arch,shape,causal,init", [
    ("ode-drive", "pipelined", (1, 5, 6), True, "random"),
    ("ode-drive", "pipelined", (1, 6, 4), False, "warm"),
    ("ode-drive", "iterative", (1, 4, 3), True, "zero"),
    ("ode-pairwise", "pipelined", (1, 5, 6), True, "random"),
    ("ode-pairwise", "pipelined", (1, 5, 4), False, "warm"),
    ("ode-pairwise", "iterative", (1, 3, 3), False, "zero"),
])
def test_ode_bit_exact_in_amaranth(mode, arch, shape, causal, init):
    H, T, d_h = shape
    case = ode_case((H, T, d_h, 2), seed=T + d_h, causal=causal, init=init, mode=mode)
    gold = attention_fixed(case)
    dut = AttentionHead(CONFIG, cordic_arch=arch, modes=ODE_MODES, **SMALL)
    writes = head_writes(case, CONFIG, **SMALL)[0]
    result = simulate_head(dut, writes, T * row_items(T, d_h), clock_limit=2_000_000)
    rtl = decode_items(result["items"], T, d_h)
    assert_ode_bit_exact(rtl, gold, 0)
    assert gold["converged"].all() and (gold["steps"] > CONVERGE_STEPS).any()
    assert result["cycles"] == ode_clocks(case, gold, 0, arch)


def test_ode_drive_build_still_runs_analytic_cases():
    case = random_case((1, 4, 5, 2), seed=4, causal=np.array(True), p=np.array(1))
    gold = attention_fixed(case)
    dut = AttentionHead(CONFIG, modes=ODE_MODES, **SMALL)
    result = simulate_head(dut, head_writes(case, CONFIG, **SMALL)[0], 4 * row_items(4, 5))
    rtl = decode_items(result["items"], 4, 5)
    assert_head_bit_exact(rtl, gold, front_end(validate_fixed(case)), 0)
    assert (rtl["steps"] == 0).all() and rtl["converged"].all()
    assert result["cycles"] == cycles_per_head(4, 5, True, CONFIG)


def test_ode_modes_refused_where_not_built():
    case = ode_case((1, 4, 5, 2), seed=1, causal=True)
    with pytest.raises(AttentionHeadError, match="not in this build"):
        check_case(case, CONFIG, **SMALL)
    pairwise = dict(case, mode=np.array("ode-pairwise"))
    with pytest.raises(AttentionHeadError, match="not in this build"):
        check_case(pairwise, CONFIG, modes=("analytic", "ode-drive"), **SMALL)
    with pytest.raises(AttentionHeadError, match="modes"):
        AttentionHead(CONFIG, modes=("analytic", "ode-lohe"), **SMALL)
    with pytest.raises(TypeError, match="modes"):
        AttentionHead(CONFIG, modes="ode-drive", **SMALL)


ODE_BUILD = dict(max_tokens=64, max_d_h=32)


def ode_verilator_cases():
    """The issue's shapes in both ODE modes: keyword spotting (H = 2, T = 49, d_h = 16) and
    subject-verb (H = 1, T = 9, d_h = 32), causal and not; warm and zero starts; a head that
    stops at max_steps."""
    cases = {}
    for mode in ("ode-drive", "ode-pairwise"):
        for shape, name in (((2, 49, 16, 2), "kws"), ((1, 9, 32, 2), "sva")):
            for causal in (True, False):
                key = f"{mode}-{name}-{'causal' if causal else 'full'}"
                cases[key] = ode_case(shape, seed=20 + causal, causal=causal,
                                      p=1 + 3 * causal, mode=mode)
        cases[f"{mode}-sva-warm"] = ode_case((1, 9, 32, 2), seed=5, causal=True, init="warm",
                                             mode=mode)
        cases[f"{mode}-zero"] = ode_case((1, 20, 16, 2), seed=6, causal=False, init="zero",
                                         p=2, mode=mode)
        cases[f"{mode}-max-steps"] = dict(ode_case((1, 7, 8, 2), seed=7, causal=True,
                                                   mode=mode), max_steps=np.array(6))
        # Rows 1 and 3 have h = 0 beside driven rows 0 and 2: calm by the angle test too.
        zero_rows = ode_case((1, 4, 8, 2), seed=7, causal=True, mode=mode)
        zero_rows["q"] = np.zeros_like(zero_rows["q"])
        zero_rows["anchors"] = np.array([[[1.0, 0.0], [-1.0, 0.0]] * 2])
        cases[f"{mode}-zero-rows"] = zero_rows
    return cases


# One test per mode (the pairwise cases are 95 % of the 11 million clocks: T + T engine
# oscillators, 4 T^2 clocks a step with one lane): pytest-xdist runs them side by side on
# one shared build.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ode-drive", "ode-pairwise"])
def test_ode_bit_exact_on_verilator(attention_build_root, mode):
    from oscarray.sim.attention import run_attention_rtl_batch
    cases = {name: case for name, case in ode_verilator_cases().items()
             if name.startswith(mode + "-")}
    names = list(cases)
    results = run_attention_rtl_batch([cases[k] for k in names], CONFIG,
                                      build_root=attention_build_root, modes=ODE_MODES,
                                      **ODE_BUILD)
    for name, rtl in zip(names, results):
        case = cases[name]
        gold = attention_fixed(case)
        assert rtl["sim"] == "verilator"
        for key in ("attn_int", "out_int", "theta_int", "x_int", "h_int", "steps",
                    "converged"):
            np.testing.assert_array_equal(rtl[key], gold[key], err_msg=f"{name}: {key}")
        for head in range(case["q"].shape[0]):
            assert rtl["cycles"][head] == ode_clocks(case, gold, head), name
    # the stop at max_steps is exercised, and the run with zero rows settles
    assert not attention_fixed(cases[f"{mode}-max-steps"])["converged"].any()
    assert results[names.index(f"{mode}-zero-rows")]["converged"].all()
