"""The attention head's memories with the NO_COLLISION_ATTR attribute (hdl/attention.py) never
use a read of the word written in the same clock: with every such read returning garbage (the
word's bits inverted, until that port's next read), as the iCE40 build lets it (boards/build.py
`ice40_coarse_script`, x_on_collision), every mode of the head stays bit-exact with the golden
models, on small heads in Amaranth's simulator, with and without backpressure on `o`. The reads
that do meet a write are counted, so the check is not empty (and with every read poisoned,
not only those, the head's results do change)."""

import numpy as np
import pytest
from amaranth.hdl import Cat, Elaboratable, Fragment, Module, Mux, Signal
from amaranth.hdl._mem import MemoryInstance
from test_attention_rtl import (CONFIG, MAX_CLOCKS, ODE_MODES, SMALL, assert_head_bit_exact,
                                assert_ode_bit_exact, collect_items, load_and_start, ode_case,
                                run)

from oscarray.golden.attention import random_case
from oscarray.golden.attention_fixed import attention_fixed, front_end, validate_fixed
from oscarray.golden.softmax import softmax_case, softmax_fixed
from oscarray.hdl.attention import (NO_COLLISION_ATTR, AttentionHead, decode_items,
                                    head_writes, row_items)


class Poisoned(Elaboratable):
    """`head` elaborated with the read ports of its NO_COLLISION_ATTR memories poisoned: a
    read (enabled) of the address a write port writes in that clock gives the word's bits
    inverted (with `always`: every read), until the port's next read. Attributes are the
    head's (the testbench drives its ports); `hits[name]` counts the poisoned reads
    (Signals read after the run)."""

    def __init__(self, head, always=False):
        self.head, self.always, self.hits, self.names = head, always, {}, []

    def __getattr__(self, name):
        return getattr(self.head, name)

    def elaborate(self, platform):
        fragment = Fragment.get(self.head, platform)
        self._poison(fragment, "")
        assert self.names, "no memory to poison"
        return fragment

    def _poison(self, fragment, path):
        for index, (sub, name, src_loc) in enumerate(fragment.subfragments):
            full = f"{path}.{name}"
            if isinstance(sub, MemoryInstance) and sub._attrs.get(NO_COLLISION_ATTR) == 1:
                # the attribute's promise (boards/build.py sets a one-bit mask): 1 R, 1 W
                assert len(sub._write_ports) == len(sub._read_ports) == 1, full
                fragment.subfragments[index] = (self._poisoned(sub, full), name, src_loc)
                self.names.append(full)
            elif not isinstance(sub, MemoryInstance):
                self._poison(sub, full)

    def _poisoned(self, memory, name):
        m = Module()
        copy = MemoryInstance(data=memory._data, attrs=memory._attrs)
        for port in memory._write_ports:
            copy.write_port(domain=port._domain, addr=port._addr, data=port._data,
                            en=port._en)
        for number, port in enumerate(memory._read_ports):
            raw = Signal(len(port._data), name=f"raw{number}")
            copy.read_port(domain=port._domain, addr=port._addr, data=raw, en=port._en,
                           transparent_for=port._transparent_for)
            collide = port._en & Cat(w._en.any() & (w._addr == port._addr)
                                     for w in memory._write_ports).any()
            if self.always:
                collide = port._en
            garbage = Signal(name=f"garbage{number}")
            hits = Signal(32, name=f"hits{number}")
            with m.If(port._en):
                m.d[port._domain] += garbage.eq(collide)
            with m.If(collide):
                m.d[port._domain] += hits.eq(hits + 1)
            m.d.comb += port._data.eq(raw ^ Mux(garbage, -1, 0))
            self.hits[f"{name}[{number}]"] = hits
        m.submodules.memory = copy
        return Fragment.get(m, None)


def run_poisoned(head, writes, items, ready_prob=1.0, seed=0, clock_limit=MAX_CLOCKS,
                 always=False):
    """test_attention_rtl's simulate_head on the poisoned head: load, start, take `items`
    from `o` (ready with probability `ready_prob`). Returns (items (N, 2), poisoned reads
    per port)."""
    dut, rng, out = Poisoned(head, always), np.random.default_rng(seed), {}

    async def bench(ctx):
        await load_and_start(ctx, dut, writes)
        out["items"] = await collect_items(ctx, dut, items, rng, ready_prob, clock_limit)
        out["hits"] = {name: ctx.get(signal) for name, signal in dut.hits.items()}
    run(dut, bench)
    return out["items"], out["hits"]


@pytest.mark.parametrize("arch,shape,causal,ready,lanes,compact", [
    ("pipelined", (1, 5, 6), True, 1.0, 1, False),
    ("iterative", (1, 8, 8), False, 0.5, 1, False),
    ("pipelined", (1, 6, 7), False, 0.7, 4, False),     # banked q, k, v and out (mac_lanes)
    ("iterative", (1, 7, 6), True, 0.6, 1, True),       # the UP5K's compact head
])
def test_analytic_head_ignores_reads_that_meet_a_write(arch, shape, causal, ready, lanes,
                                                       compact):
    H, T, d_h = shape
    case = random_case((H, T, d_h, 2), seed=T * d_h + 1, causal=np.array(causal),
                       p=np.array(2))
    gold, fe = attention_fixed(case), front_end(validate_fixed(case))
    head = AttentionHead(CONFIG, cordic_arch=arch, mac_lanes=lanes, compact=compact, **SMALL)
    items, hits = run_poisoned(head, head_writes(case, CONFIG, **SMALL)[0],
                               T * row_items(T, d_h), ready_prob=ready, seed=3)
    assert_head_bit_exact(decode_items(items, T, d_h), gold, fe, 0)
    assert sum(hits.values()) > 0, hits


@pytest.mark.parametrize("modes,shape,causal,ready,arch", [
    (("softmax",), (1, 8, 8, 2), True, 1.0, "pipelined"),
    (("softmax",), (1, 7, 5, 2), False, 0.4, "pipelined"),
    (("analytic", "softmax"), (1, 6, 3, 2), False, 1.0, "pipelined"),
    # The iCEBreaker's head: softmax alone on the iterative CORDIC (boards/top.py).
    (("softmax",), (1, 8, 7, 2), True, 0.7, "iterative"),
])
def test_softmax_head_ignores_reads_that_meet_a_write(modes, shape, causal, ready, arch):
    _, T, d_h, _ = shape
    case = softmax_case(random_case(shape, seed=T + d_h, causal=np.array(causal)))
    gold = softmax_fixed(case)
    head = AttentionHead(CONFIG, modes=modes, cordic_arch=arch, **SMALL)
    items, hits = run_poisoned(head, head_writes(case, CONFIG, modes=modes, **SMALL)[0],
                               T * row_items(T, d_h), ready_prob=ready, seed=T)
    got = decode_items(items, T, d_h)
    np.testing.assert_array_equal(got["attn"], gold["attn_int"][0])
    np.testing.assert_array_equal(got["out"], gold["out_int"][0])
    assert sum(hits.values()) > 0, hits


@pytest.mark.slow
@pytest.mark.parametrize("mode,shape,causal,init", [
    ("ode-drive", (1, 5, 4), False, "warm"),
    ("ode-pairwise", (1, 4, 3), True, "random"),
])
def test_ode_head_ignores_reads_that_meet_a_write(mode, shape, causal, init):
    H, T, d_h = shape
    case = ode_case((H, T, d_h, 2), seed=T + d_h, causal=causal, init=init, mode=mode)
    gold = attention_fixed(case)
    head = AttentionHead(CONFIG, modes=ODE_MODES, **SMALL)
    items, hits = run_poisoned(head, head_writes(case, CONFIG, **SMALL)[0],
                               T * row_items(T, d_h), clock_limit=2_000_000)
    assert_ode_bit_exact(decode_items(items, T, d_h), gold, 0)
    assert sum(hits.values()) > 0, hits


def test_the_poison_reaches_the_results():
    """The check's control: with every read of those memories poisoned, the softmax head's
    results change (so a poisoned read that mattered would be seen)."""
    T, d_h = 6, 5
    case = softmax_case(random_case((1, T, d_h, 2), seed=1, causal=np.array(True)))
    gold = softmax_fixed(case)
    head = AttentionHead(CONFIG, modes=("softmax",), **SMALL)
    items, hits = run_poisoned(head, head_writes(case, CONFIG, modes=("softmax",), **SMALL)[0],
                               T * row_items(T, d_h), always=True)
    got = decode_items(items, T, d_h)
    assert (got["attn"] != gold["attn_int"][0]).any()
    assert len(hits) == 7 and all(hits.values())       # q k v score numer attn out
