"""Property harnesses for the formal proofs (issue 7): Elaboratables that wrap a DUT, drive its
inputs with free values (`AnySeq`, `AnyConst`) and check it with `Assert` / `Assume`.

`sim/formal.py` runs them with SymbiYosys. Each harness states two kinds of assertions:

- the *specification* (end-to-end properties, on the DUT's ports and a few counters of the
  harness): these are what a proof is about, and what a broken DUT must violate;
- *invariants* (`invariants=True`): relations between the harness's counters and the DUT's
  internal registers that make the specification inductive, so that k-induction (sby `prove`)
  closes at a small depth. They are found in the elaborated DUT by name (`internal_signals`);
  the array response proof's are tabulated from simulations of the DUT (`_response_table`)
  and checked by the proof like any other.
  The broken variants are checked with `invariants=False` (bounded, from reset), so that what
  fails is the specification itself and not a proof aid.

Broken DUTs for the tests are wrappers with the same ports that add one realistic bug each
(`BrokenStream`, `broken_array_engine`, `BrokenLink`), or the cores with one of their fixes
turned off (`unguarded_cordic_iterative`, the array engine's `load_at_start`): the defects
these proofs found, kept as regression checks.
"""

from __future__ import annotations

from amaranth.hdl import (
    Array,
    Assert,
    Assume,
    Cat,
    ClockDomain,
    Const,
    Elaboratable,
    Fragment,
    Module,
    Mux,
    Shape,
    Signal,
    Value,
)
from amaranth.hdl._ast import (  # also in amaranth.asserts (deprecated)
    AnyConst,
    AnySeq,
)
from amaranth.lib import wiring

from ..golden.cordic import CordicConfig
from ..hdl.cordic import Cordic, CordicPipelined

__all__ = [
    "ARRAY_BUGS",
    "LINK_BUGS",
    "STREAM_BUGS",
    "ArraySpec",
    "BrokenLink",
    "BrokenStream",
    "CordicStreamSpec",
    "LinkSpec",
    "broken_array_engine",
    "formal_array_config",
    "formal_cordic_config",
    "formal_link",
    "internal_signals",
    "unguarded_cordic_iterative",
]


def formal_cordic_config(mode: str = "rotate") -> CordicConfig:
    """The small CORDIC of the proofs: 8-bit data and angles, 4 micro-rotations.

    The handshake logic does not depend on the widths; the iteration count sets the pipeline
    depth (13 stages for rotate) and the iterative core's program length (24 words).
    """
    return CordicConfig(mode=mode, data_width=8, phase_bits=8, iterations=4, target_lsb=1000)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _walk(fragment, path=()):
    yield path, fragment
    for sub, name, _ in fragment.subfragments:
        yield from _walk(sub, path + (name,))


def internal_signals(fragment) -> dict:
    """Every signal driven by a statement in `fragment` (recursively), by name, plus the read
    ports' data of its memories as `<path>.port<k>.data` (path: submodule names joined by .)."""
    found = {}
    for path, frag in _walk(fragment):
        for statements in frag.statements.values():
            for statement in statements:
                for signal in statement._lhs_signals():
                    found.setdefault(signal.name, signal)
        for index, port in enumerate(getattr(frag, "_read_ports", ())):
            found[".".join(path + (f"port{index}",)) + ".data"] = port._data
    return found


def _port_data(signals: dict, path: str):
    """The memory read port data at `path`, or at `<wrapper path>.<path>`."""
    for name, signal in signals.items():
        if name == path or name.endswith("." + path):
            return signal
    raise KeyError(path)


def _generated(fragment, name: str):
    """An object a fragment (or one below it) generated under `name` (an FSM)."""
    for _, frag in _walk(fragment):
        if name in frag.generated:
            return frag.generated[name]
    raise KeyError(name)


def _popcount(bits) -> Value:
    total = Const(0, 1)
    for bit in bits:
        total = total + bit
    return total


class _Elaborated(Elaboratable):
    """An already elaborated fragment as a submodule (so its internal signals are known)."""

    def __init__(self, fragment):
        self.fragment = fragment

    def elaborate(self, platform):
        return self.fragment


# ---------------------------------------------------------------------------------------------
# Broken stream DUTs
# ---------------------------------------------------------------------------------------------

#: Bugs `BrokenStream` can add to a stream component.
#:   drop_on_stall      the core advances while the output stalls (o.ready ignored): results lost
#:   late               a register slice after the core: a correct stream, one clock late
#:   duplicate          o.valid held one more clock after each handshake: a result twice
#:   accept_while_busy  i.ready = not o.valid: inputs offered while the core computes are lost
#:   corrupt            the lowest bit of x inverted on the way out (a data bug)
#:   lose_first         the first result is taken from the core but never offered
STREAM_BUGS = ("drop_on_stall", "late", "duplicate", "accept_while_busy", "corrupt",
               "lose_first")


class BrokenStream(wiring.Component):
    """`inner` (a stream component with ports `i`, `o`) with one bug of `STREAM_BUGS` added."""

    def __init__(self, inner, bug: str):
        if bug not in STREAM_BUGS:
            raise ValueError(f"unknown bug {bug!r}; choose one of {STREAM_BUGS}")
        self.inner, self.bug = inner, bug
        self.config = getattr(inner, "config", None)
        super().__init__(inner.signature)

    @property
    def latency(self):
        return getattr(self.inner, "latency", None)

    @property
    def cycles_per_result(self):
        return getattr(self.inner, "cycles_per_result", None)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        bug = self.bug
        m.d.comb += [inner.i.payload.eq(self.i.payload), inner.i.valid.eq(self.i.valid),
                     self.i.ready.eq(inner.i.ready)]
        if bug == "late":
            valid = Signal()
            payload = Signal.like(inner.o.payload)
            advance = ~valid | self.o.ready
            m.d.comb += [inner.o.ready.eq(advance), self.o.valid.eq(valid),
                         self.o.payload.eq(payload)]
            with m.If(advance):
                m.d.sync += [valid.eq(inner.o.valid), payload.eq(inner.o.payload)]
            return m
        m.d.comb += [self.o.payload.eq(inner.o.payload), self.o.valid.eq(inner.o.valid),
                     inner.o.ready.eq(self.o.ready)]
        if bug == "drop_on_stall":
            m.d.comb += inner.o.ready.eq(1)
        elif bug == "duplicate":
            again = Signal()
            m.d.sync += again.eq(self.o.valid & self.o.ready & ~again)
            m.d.comb += self.o.valid.eq(inner.o.valid | again)
        elif bug == "accept_while_busy":
            m.d.comb += self.i.ready.eq(~inner.o.valid)
        elif bug == "corrupt":
            m.d.comb += self.o.payload.x.eq(inner.o.payload.x ^ 1)
        elif bug == "lose_first":
            seen = Signal()
            with m.If(inner.o.valid):
                m.d.sync += seen.eq(1)
            m.d.comb += [self.o.valid.eq(inner.o.valid & seen),
                         inner.o.ready.eq(self.o.ready | ~seen)]
        return m


# ---------------------------------------------------------------------------------------------
# 1. The CORDIC stream contract
# ---------------------------------------------------------------------------------------------

class CordicStreamSpec(Elaboratable):
    """Under arbitrary valid/ready behaviour (both free every clock, payload free): every
    accepted input produces exactly one output, in order, nothing is emitted without an input,
    and the latency is constant.

    Specification (assertions on the ports and the harness's counters):

    - `pending` = accepted - emitted: o.valid only when pending > 0 (nothing without an input)
      and pending <= capacity (`latency` for the pipelined core, 1 for the iterative one: no
      input is swallowed without a result, since results then could not all come out).
    - One accepted transaction, chosen freely (`AnySeq` picks the clock), is tracked: `ahead`
      counts the results still owed before it. It must come out exactly when `ahead` reaches
      0, i.e. at its own index (in order, exactly once), and with `track_data` its payload
      must be f(P), f the composition of the core's stage functions applied to the captured
      input P (the same stage functions `hdl/cordic.py` builds both architectures from).
    - Latency: if the output never stalled (o.valid and not o.ready) while it was inside, the
      tracked result is valid at the output exactly `latency` clocks after its input was
      accepted; with stalls, never earlier.

    Invariants (pipelined: pending = number of valid stages; the tracked transaction sits in
    the stage with `ahead` valid stages after it, holding exactly the partial composition of
    P, `age` = stage index + 1 unless stalled. Iterative: pending = busy + done, pc and the
    microcode word agree with the program while busy, age = pc while busy).

    Nothing is assumed about the power-up state beyond the DUT's resets: the iterative core's
    microcode word register has no reset and starts arbitrary (RTLIL INIT_VALUE x), and the
    proof covers every such start (`unguarded_cordic_iterative` shows what it catches).
    """

    def __init__(self, dut, *, invariants: bool = True, track_data: bool | None = None):
        self.dut = dut
        core = getattr(dut, "inner", dut)
        self.pipelined = isinstance(core, CordicPipelined)
        if self.pipelined and core.split_stages:
            raise ValueError("the proof harness covers the default pipeline (split_stages=False)")
        self.config = core.config
        self.latency = core.latency if self.pipelined else core.cycles_per_result
        self.capacity = core.latency if self.pipelined else 1
        self.invariants = invariants
        self.track_data = self.pipelined if track_data is None else track_data
        self.core = core

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        fragment = Fragment.get(dut, platform)
        m.submodules.dut = _Elaborated(fragment)

        # Free inputs, every clock.
        width = dut.i.payload.as_value().shape().width
        m.d.comb += [dut.i.valid.eq(AnySeq(1)), dut.i.payload.eq(AnySeq(width)),
                     dut.o.ready.eq(AnySeq(1))]
        accept = dut.i.valid & dut.i.ready
        emit = dut.o.valid & dut.o.ready

        cap, lat = self.capacity, self.latency
        pending = Signal(range(cap + 2))          # one more than the capacity: saturates there
        with m.If(accept & ~emit & (pending <= cap)):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(emit & ~accept & (pending > 0)):
            m.d.sync += pending.eq(pending - 1)
        m.d.comb += [Assert(~dut.o.valid | (pending > 0), "output without an input"),
                     Assert(pending <= cap, "more pending than the core holds")]

        # The tracked transaction.
        choose = AnySeq(1)
        tracking, tracked = Signal(), Signal()        # inside; was tracked (once per run)
        ahead = Signal(range(cap + 1))
        age = Signal(range(lat + 2))                  # saturates at lat + 1
        stalled = Signal()
        # The tracked input's payload is a constant of the whole trace (AnyConst): the solver
        # then sees one f(P) instead of a copy per clock.
        captured = Signal.like(dut.i.payload)
        m.d.comb += captured.eq(AnyConst(width))
        start = accept & choose & ~tracking & ~tracked & \
            (dut.i.payload.as_value() == captured.as_value())
        with m.If(start):
            m.d.sync += [tracking.eq(1), tracked.eq(1),
                         ahead.eq(pending - emit), age.eq(1), stalled.eq(0)]
        with m.Elif(tracking):
            with m.If(age <= lat):
                m.d.sync += age.eq(age + 1)
            with m.If(dut.o.valid & ~dut.o.ready):
                m.d.sync += stalled.eq(1)
            with m.If(emit):
                with m.If(ahead == 0):
                    m.d.sync += tracking.eq(0)
                with m.Else():
                    m.d.sync += ahead.eq(ahead - 1)
        is_ours = tracking & (ahead == 0)
        m.d.comb += [
            Assert(~tracking | (ahead < pending), "tracked result owed"),
            Assert(~(is_ours & dut.o.valid) | (age >= lat), "result earlier than the latency"),
            Assert(~(is_ours & ~stalled & (age == lat)) | dut.o.valid,
                   "result not out after exactly the latency"),
            Assert(~tracking | stalled | (age <= lat), "result later than the latency"),
        ]
        # Stream rule: a result offered and not taken stays offered, unchanged.
        was_stalled = Signal()
        offered = Signal.like(dut.o.payload)
        m.d.sync += [was_stalled.eq(dut.o.valid & ~dut.o.ready), offered.eq(dut.o.payload)]
        m.d.comb += Assert(~was_stalled | (dut.o.valid & (dut.o.payload.as_value() ==
                                                          offered.as_value())),
                           "offered result withdrawn or changed")
        # f(P): the stage functions composed on the captured input, registers' widths kept.
        partials = self._partials(m, captured)
        if self.track_data:
            final = partials[-1]
            for name in ("x", "y", "z"):
                field = getattr(dut.o.payload, name)
                m.d.comb += Assert(~(is_ours & dut.o.valid) | (field == final[name]),
                                   f"result {name} is not f(its input)")

        if self.invariants:
            if self.pipelined:
                self._pipeline_invariants(m, fragment, pending, tracking, ahead, age, stalled,
                                          partials)
            else:
                self._iterative_invariants(m, fragment, pending, tracking, age)
        return m

    def _partials(self, m, captured):
        """[state after stage 0, after stage 1, ...] as comb signals of the stage shapes."""
        core = CordicPipelined(self.config)
        core._MustUse__silence = True
        state = {"x": captured.x, "y": captured.y, "z": captured.z}
        result = []
        for index, (stage, declared) in enumerate(core._stages()):
            values = stage(state)
            state = {}
            for name, value in values.items():
                value = Value.cast(value)
                shape = Shape.cast(declared.get(name, value.shape()))
                state[name] = Signal(shape, name=f"f{index}_{name}")
                m.d.comb += state[name].eq(value)
            result.append(state)
        return result

    def _pipeline_invariants(self, m, fragment, pending, tracking, ahead, age, stalled,
                             partials):
        sigs = internal_signals(fragment)
        n = len(partials)
        valids = [sigs[f"s{index}_valid"] for index in range(n)]
        m.d.comb += Assert(pending == _popcount(valids), "inv: pending = valid stages")
        for index in range(n):
            after = _popcount(valids[index + 1:]) if index + 1 < n else Const(0, 1)
            here = tracking & valids[index] & (after == ahead)
            if self.track_data:
                same = Const(1, 1)
                for name, value in partials[index].items():
                    same = same & (sigs[f"s{index}_{name}"] == value)
                m.d.comb += Assert(~here | same, f"inv: stage {index} holds f_{index}(P)")
            m.d.comb += [
                Assert(~here | (age >= index + 1), f"inv: stage {index} age"),
                Assert(~here | stalled | (age == index + 1), f"inv: stage {index} exact age"),
            ]

    def _rom_table(self):
        """The iterative core's microcode ROM contents, as an Array indexed by {pc, cond}."""
        rom, _ = self.core._rom()
        rom._MustUse__silence = True
        return Array(Value.cast(rom.shape.const(rom.init[k])) for k in range(rom.depth))

    def _iterative_invariants(self, m, fragment, pending, tracking, age):
        core = self.core
        sigs = internal_signals(fragment)
        busy, done, pc = sigs["busy"], sigs["done"], sigs["pc"]
        word = _port_data(sigs, "rom.port0.data")
        length = core.program.length
        m.d.comb += [
            Assert(pending == busy + done, "inv: pending = busy + done"),
            Assert(~(busy & done), "inv: not busy and done"),
            Assert(~busy | ((pc >= 1) & (pc <= length)), "inv: pc in the program while busy"),
            Assert(busy | (pc == 0), "inv: pc idle"),
            Assert(~(tracking & busy) | (age == pc), "inv: age = pc"),
        ]
        # While busy the microcode word is the ROM's word at {cond, pc} for one of the two cond
        # bits. (While idle it is the idle word, except in the first clock: the register has
        # no reset, and the core ignores it then.)
        table = self._rom_table()
        m.d.comb += Assert(~busy | (word == table[Cat(Const(0, 1), pc)]) |
                           (word == table[Cat(Const(1, 1), pc)]),
                           "inv: microcode word = ROM[pc]")


def unguarded_cordic_iterative(config: CordicConfig):
    """The iterative CORDIC without its power-up guard (`CordicIterative.power_up_guard`):
    the defect the proofs found, an arbitrary microcode word in the first clock that raises
    done (a result without an input) or runs the program while idle."""
    from ..hdl.cordic_iterative import CordicIterative

    class UnguardedCordicIterative(CordicIterative):
        power_up_guard = False

    return UnguardedCordicIterative(config)




# ---------------------------------------------------------------------------------------------
# 2. The oscillator array controller
# ---------------------------------------------------------------------------------------------

def _small_cordic_config_class():
    from dataclasses import dataclass

    from ..golden.array_fixed import ArrayFixedConfig

    @dataclass(frozen=True)
    class FormalArrayConfig(ArrayFixedConfig):
        """An array format whose CORDIC has 4 micro-rotations (latency 18 instead of 33).

        The controller takes the CORDIC's latency as a parameter (delay lines, counters): the
        proofs run it at a shorter one, so that a step fits a shallower bounded proof.
        """

        @property
        def cordic(self) -> CordicConfig:
            return CordicConfig("rotate", data_width=18, phase_bits=self.phase_bits,
                                iterations=4, guard_bits=2, angle_guard_bits=2,
                                target_lsb=1e9)

    return FormalArrayConfig


def formal_array_config(small_cordic: bool = True):
    """The small array format of the proofs: 3 oscillators, 8-bit phases, 10-bit accumulators
    (and a 4-iteration CORDIC, latency 18, with `small_cordic`).

    Capacity 3, not the format's minimum of 2: its memories are not a power of two deep (a
    load at address 3 fits the 2-bit memory address but is beyond capacity), which capacity 2
    would not show.
    """
    from ..golden.array_fixed import ArrayFixedConfig
    cls = _small_cordic_config_class() if small_cordic else ArrayFixedConfig
    return cls(capacity=3, phase_bits=8, acc_bits=10)


class ArraySpec(Elaboratable):
    """The array engine's controller under arbitrary loads, starts and stream consumers.

    Free every clock: start, the load port (valid and payload, any target and address, also
    in the clock of a start), order.ready, phases.ready. Assumed (the documented contract of
    the load port, and a small run): n is loaded with 1..capacity, max_steps with at most
    `max_steps_limit` (None: any 32-bit value).

    `properties` selects what is checked (each is one proof in `oscarray.formal_flow`):

    - "response" (bounded liveness): while busy, the engine hands over an `order` item (one
      per state: each step ends with one) or finishes within `step_bound` clocks (by default
      `cycles_per_step` of the largest n, the slowest form), not counting clocks in which an
      offered order item is not taken (the consumer's stalls). With steps_taken <= max_steps
      ("counters"), a run ends within (max_steps + 1) * step_bound such clocks: it always
      returns to done. When busy falls, done is set. With `invariants`, what makes it
      inductive: the controller is deterministic between two order items, so every control
      register (valid bits, flags, counters, indices, FSM state: `_response_registers`) is a
      function of the key of `_response_key` (n, the form registers, final, the run's first
      pass or not, and the watchdog count itself; or, while not busy, the state) wherever
      the consumer's stalls and the previous run's leftovers do not reach. The harness
      simulates a fresh copy of the engine (`_response_table`: every form, n, pass and
      consumer wait, starts soon after reset and after other runs) and asserts each
      register's bits that took one value at a key in every simulated clock, that every key
      is one the simulations reached (so the watchdog count is bounded per key), and that
      each small register only takes values it took there. The simulations are only a guess
      of the invariant: the proof checks it (base case from reset and the induction step),
      so a guess too strong fails the proof (a bit the simulations happened not to vary),
      never passes it.
    - "counters": steps_taken <= max_steps while busy (so it never wraps: it stops at the
      32-bit max_steps), also when max_steps is loaded in the clock of the start; cycles =
      the busy clocks since the start, exactly (+1 per busy clock, 0 at the start,
      saturating at 2**48 - 1). With `invariants`, the FSM facts that make this inductive
      (busy = not IDLE or DONE; not final in COUPLING and STEP_END; steps < max_steps while
      busy and not final; the shadow of max_steps is the register).
    - "pinned": pinned oscillators never move. One oscillator, chosen freely (AnyConst), is
      shadowed from the load port and from the engine's own writes (the `update` port):
      every write to it during a run, while its shadow is pinned, carries its own value;
      writes only happen while busy, at indices below capacity.

    `cut_datapath`: the CORDICs' result payloads and every multiplier are cut points (free
    values, `cutpoint`): that only adds behaviours, and the control and the pinned path do
    not depend on the numbers, so what holds on the cut model holds on the engine. The small
    memories are mapped to flip-flops (`memory_map`), which the solver handles faster here.
    """

    def __init__(self, engine, *, properties=("response", "counters", "pinned"),
                 max_steps_limit: int = 1, step_bound: int | None = None,
                 cut_datapath: bool = True, invariants: bool = True):
        from ..hdl.array import cycles_per_step
        self.engine = engine
        core = getattr(engine, "inner", engine)
        self.core = core
        self.config = core.config
        self.properties = tuple(properties)
        self.max_steps_limit = max_steps_limit
        self.invariants = invariants
        if step_bound is None:
            cap = self.config.capacity
            step_bound = max(cycles_per_step(self.config, n, form, lanes=core.lanes,
                                             cordic_arch=core.cordic_arch)
                             for n in range(1, cap + 1) for form in core.forms)
        self.step_bound = step_bound
        self.sby_script = ((
            "cutpoint top.harness.dut.cordic/w:o__payload",
            "cutpoint top.harness.dut.lane_cordic*/w:o__payload",
            "cutpoint t:$mul",
        ) if cut_datapath else ()) + ("memory_map", "opt -fast")

    def elaborate(self, platform):
        from ..hdl.array import REGISTERS, TARGETS
        m = Module()
        dut = self.engine
        cap = self.config.capacity
        fragment = Fragment.get(dut, platform)
        m.submodules.dut = _Elaborated(fragment)

        load = dut.load
        m.d.comb += [dut.start.eq(AnySeq(1)), load.valid.eq(AnySeq(1)),
                     load.payload.eq(AnySeq(load.payload.as_value().shape().width)),
                     dut.order.ready.eq(AnySeq(1)), dut.phases.ready.eq(AnySeq(1))]
        item = load.payload
        fire = load.valid & load.ready
        is_reg = fire & (item.target == TARGETS["reg"])
        with m.If(is_reg & (item.addr == REGISTERS["n"])):
            m.d.comb += Assume((item.data >= 1) & (item.data <= cap), "n in 1..capacity")
        if self.max_steps_limit is not None:
            with m.If(is_reg & (item.addr == REGISTERS["max_steps"])):
                m.d.comb += Assume(item.data <= self.max_steps_limit, "a short run")

        ctx = dict(m=m, dut=dut, item=item, fire=fire, is_reg=is_reg, busy=dut.busy,
                   started=dut.start & ~dut.busy, fragment=fragment)
        for name in self.properties:
            getattr(self, f"_{name}")(**ctx)
        return m

    def _response(self, m, dut, busy, started, fragment, **_):
        was_busy = Signal()
        m.d.sync += was_busy.eq(busy)
        m.d.comb += Assert(~(was_busy & ~busy) | dut.done, "a run ends in done")
        bound = self.step_bound
        since, first = _watchdog(m, dut, bound)
        m.d.comb += Assert(~busy | (since <= bound), "busy longer than a step without progress")
        if not self.invariants:
            return
        table, values = _response_table(self.core, bound)
        registers = _response_registers(fragment)
        key = Signal(len(_response_key(fragment, dut, since, first)))
        m.d.comb += key.eq(_response_key(fragment, dut, since, first))
        # The table by slice (the key without `since`), then by `since`: in each slice, each
        # register's clocks grouped by their (value, care) (few groups: compact logic).
        low = len(since)
        slices = {}
        for k, word in table.items():
            slices.setdefault(k >> low, {})[k & ((1 << low) - 1)] = word
        offsets, offset = [], 0
        for _, signal in registers:
            offsets.append(offset)
            offset += len(signal)
        expect = [Signal(len(signal), name=f"expect{index}")
                  for index, (_, signal) in enumerate(registers)]
        care = [Signal(len(signal), name=f"care{index}")
                for index, (_, signal) in enumerate(registers)]
        unseen = "inv: a state the simulations never reached"
        with m.Switch(key[low:]):
            for part, rows in sorted(slices.items()):
                with m.Case(part):
                    with m.Switch(since):
                        with m.Case(*sorted(rows)):
                            pass
                        with m.Default():
                            m.d.comb += Assert(0, unseen)
                    for index, (_, signal) in enumerate(registers):
                        bits = (1 << len(signal)) - 1
                        groups = {}
                        for at, (value, mask) in rows.items():
                            cared = (mask >> offsets[index]) & bits
                            if cared:
                                word = ((value >> offsets[index]) & bits & cared, cared)
                                groups.setdefault(word, []).append(at)
                        if not groups:
                            continue
                        with m.Switch(since):
                            for (value, cared), ats in groups.items():
                                with m.Case(*sorted(ats)):
                                    m.d.comb += [expect[index].eq(value),
                                                 care[index].eq(cared)]
            with m.Default():
                m.d.comb += Assert(0, unseen)
        for index, (path, signal) in enumerate(registers):
            name = f"{path}.{signal.name}" if path else signal.name
            m.d.comb += Assert(((signal ^ expect[index]) & care[index]) == 0,
                               f"inv: {name} (register {index}) as simulated")
            if values[index] is not None and len(values[index]) < 2 ** len(signal):
                m.d.comb += Assert(Cat(signal == v for v in sorted(values[index])).any(),
                                   f"inv: {name} (register {index}) takes simulated values")

    def _counters(self, m, dut, item, is_reg, busy, started, fragment, **_):
        from ..hdl.array import REGISTERS
        max_steps = Signal(len(dut.steps_taken))          # the register's reset value: 0
        with m.If(is_reg & (item.addr == REGISTERS["max_steps"])):
            m.d.sync += max_steps.eq(item.data[:len(max_steps)])
        m.d.comb += Assert(~busy | (dut.steps_taken <= max_steps), "steps beyond max_steps")
        busy_clocks = Signal(len(dut.cycles))
        with m.If(started):
            m.d.sync += busy_clocks.eq(0)
        with m.Elif(busy & ~busy_clocks.all()):           # saturates, as the engine's
            m.d.sync += busy_clocks.eq(busy_clocks + 1)
        m.d.comb += Assert(dut.cycles == busy_clocks, "cycles is not the busy clocks of the run")
        if not self.invariants:
            return
        sigs = internal_signals(fragment)
        fsm = _generated(fragment, "sequencer")
        state, code = fsm.state, fsm.encoding
        final = sigs["final"]
        in_state = {name: state == value for name, value in code.items()}
        m.d.comb += [
            Assert(busy == ~(in_state["IDLE"] | in_state["DONE"]), "inv: busy = not idle/done"),
            Assert(state < len(code), "inv: a valid state"),
            Assert(~(in_state["COUPLING"] | in_state["STEP_END"]) | ~final,
                   "inv: not final while stepping"),
            Assert(~busy | final | (dut.steps_taken < max_steps), "inv: steps < max_steps"),
            Assert(max_steps == sigs["max_steps"], "inv: max_steps shadow"),
        ]

    def _pinned(self, m, dut, item, busy, fire, **_):
        from ..hdl.array import TARGETS
        cap, a = self.config.capacity, self.config.acc_bits
        # One oscillator, chosen freely (AnyConst), is shadowed: its pinned flag and its
        # accumulator, from the load port and from the engine's own writes.
        chosen = Signal(range(cap))
        m.d.comb += [chosen.eq(AnyConst(len(chosen))), Assume(chosen < cap)]
        pinned, acc = Signal(), Signal(a)
        with m.If(fire & (item.addr == chosen)):
            with m.If(item.target == TARGETS["pinned"]):
                m.d.sync += pinned.eq(item.data[0])
            with m.If(item.target == TARGETS["acc"]):
                m.d.sync += acc.eq(item.data[:a])
        update = dut.update
        with m.If(update.valid):
            m.d.comb += [Assert(busy, "accumulator written while not busy"),
                         Assert(update.index < cap, "accumulator index beyond capacity")]
            with m.If(update.index == chosen):
                m.d.comb += Assert(~pinned | (update.acc == acc), "a pinned oscillator moved")
                m.d.sync += acc.eq(update.acc)


# -- the response proof's invariants: the controller's registers as a function of the watchdog --

#: Registers the response invariants leave free: the run's counters and run registers (any
#: value in a long run or after any load), and data (phases, angles, the CORDIC stages' z, the
#: update unit's operands, the drain's row-shift prefetch (its amounts and read addresses
#: choose data only); names below, and in `_response_registers`): a data value the
#: simulations happen not to vary may still vary in the proof (the datapath is cut there).
_RESPONSE_FREE = frozenset({"cycles", "steps_taken", "max_steps", "calm", "noisy", "inc", "t",
                            "d", "s", "tol", "tol_enable", "p2_theta", "rot_z", "readout",
                            "readout_primed", "readout_ahead", "readout_left", "readout_more",
                            "row_t_c", "row_t_z", "row_t_after", "row_ahead", "row_ahead_after",
                            "noisy_late"})
_RESPONSE_DATA_PREFIXES = ("next_theta", "row_theta", "angle", "lane_word", "sys_addr")
_RESPONSE_DATA_SUFFIXES = ("_z", "_flip")
#: Consumer waits the response table's simulations try each of (the walk's pipelines, up to the
#: lane flags' delay line, drain within them).
_RESPONSE_WAITS = 32
#: Wider registers are data (CORDIC stages, sums, products, payloads): left free as well.
_RESPONSE_MAX_WIDTH = 12


def _registers(fragment) -> list:
    """[(path, signal)] of every register (driven in `sync`) of `fragment` and below, in
    elaboration order (the same order for every elaboration of the same design)."""
    found = []
    for path, frag in _walk(fragment):
        seen = {}
        for domain, statements in frag.statements.items():
            if domain != "sync":
                continue
            for statement in statements:
                for signal in statement._lhs_signals():
                    seen.setdefault(id(signal), signal)
        found.extend((".".join(path), signal) for signal in seen.values())
    return found


def _response_registers(fragment) -> list:
    """The registers the response invariants tie to the table: the controller's (valid bits,
    flags, counters, indices, FSM states) among `_registers`, at most _RESPONSE_MAX_WIDTH bits,
    without _RESPONSE_FREE and data; in the update unit only its valid bits."""
    chosen = []
    for path, signal in _registers(fragment):
        name = signal.name
        if (len(signal) > _RESPONSE_MAX_WIDTH or name in _RESPONSE_FREE
                or name.startswith(_RESPONSE_DATA_PREFIXES)
                or name.endswith(_RESPONSE_DATA_SUFFIXES)
                or (path == "update" and not name.startswith(("valid", "done")))):
            continue
        chosen.append((path, signal))
    return chosen


def _flag_vector(path: str, signal) -> bool:
    """Whether a register is a pipeline's flags with its valid bit as bit 0 (the walk's flags
    on their way to the lanes, a MAC lane's flag stages): its other bits mean something only
    with valid set."""
    return (signal.name.startswith(("sys_flags", "lane_flags"))
            or (path.startswith("mac") and len(signal) == 3))


def _a1_group(fragment) -> list:
    """[a1_valid, its fields...]: the walk's first stage, the registers the sequencer assigns
    together from `walking` (valid) and the column, row base and k word (its fields); [] if
    not found."""
    from amaranth.hdl._ast import Assign
    statements = [statement for statement in fragment.statements.get("sync", ())
                  if isinstance(statement, Assign)]
    for index, statement in enumerate(statements):
        rhs = statement.rhs
        if isinstance(rhs, Signal) and rhs.name == "walking":
            group = [statement.lhs]
            for later in statements[index + 1:]:
                names = {signal.name for signal in later._lhs_signals()}
                group.extend(later._lhs_signals())
                if "a1_rows" in names:
                    return group if all(isinstance(s, Signal) for s in group) else []
            return []
    return []


def _watchdog(m, dut, bound):
    """The response property's counter: `since` = busy clocks since the start or the last
    order item, not counting the consumer's stalls (saturates at bound + 1); `first`: no
    order item taken since the start (the run's first phase pass)."""
    busy = dut.busy
    started = dut.start & ~busy
    handed = dut.order.valid & dut.order.ready
    waiting = dut.order.valid & ~dut.order.ready
    since = Signal(range(bound + 2))
    first = Signal()
    with m.If(started | handed):
        m.d.sync += since.eq(0)
    with m.Elif(busy & ~waiting & (since <= bound)):
        m.d.sync += since.eq(since + 1)
    with m.If(started):
        m.d.sync += first.eq(1)
    with m.Elif(handed):
        m.d.sync += first.eq(0)
    return since, first


def _response_key(fragment, dut, since, first) -> Value:
    """What the controller's state is a function of: while busy, the run registers n,
    drive_form, pairwise_form, `final`, `first` and the watchdog `since`; while not busy, the
    sequencer state (IDLE or DONE) and whether n is still 0 (never loaded: no run so far had
    a row)."""
    top = {signal.name: signal for path, signal in _registers(fragment) if path == ""}
    state = _generated(fragment, "sequencer").state
    busy = dut.busy
    run = Cat(since, first, top["final"], _slice_signals(fragment))
    return Cat(Mux(busy, run, 0), Mux(busy, 0, Cat(state, top["n"] == 0)), busy)


def _slice_signals(fragment) -> Value:
    """The run registers of `_response_key`: n, drive_form, pairwise_form."""
    top = {signal.name: signal for path, signal in _registers(fragment) if path == ""}
    return Cat(top["n"], top["drive_form"], top["pairwise_form"])


def _pack(registers) -> Value:
    return Cat(*(signal for _, signal in registers))


_RESPONSE_TABLES = {}


def _response_table(core, bound: int, runs: int = 16, seed: int = 7) -> tuple:
    """(table, values) of the packed `_response_registers` of `core`'s design, from
    simulations of a fresh copy (about 30 s for the proofs' engine): every form, n (0 too)
    and final/not final pass `runs` times each in a random order, starts soon after reset,
    every consumer wait up to _RESPONSE_WAITS clocks in matvec (whose early walk runs on
    during a wait) and random ones elsewhere, random data and loads (in the clock of the
    start too). table: {key (`_response_key`): (value, care)}, `care` the bits that took one
    value at that key in every simulated clock (after the pooling below), keys every key the
    simulations reached; values: per register, the set of values it took (registers of at most
    4 bits; None for wider ones). `seed` fixes the simulations (16 runs pass the proof for
    seeds 7 and 11; 8 runs leave bits the simulations happen not to vary, and the induction
    fails)."""
    import random

    from amaranth.sim import Simulator

    from ..hdl.array import REGISTERS, TARGETS
    cache_key = (type(core), core.config, core.lanes, core.forms, core.cordic_arch, bound,
                 runs, seed)
    if cache_key in _RESPONSE_TABLES:
        return _RESPONSE_TABLES[cache_key]
    engine = type(core)(core.config, core.case, lanes=core.lanes, forms=core.forms,
                        cordic_arch=core.cordic_arch)
    fragment = Fragment.get(engine, None)
    m = Module()
    m.domains.sync = domain = ClockDomain("sync")
    m.submodules.dut = _Elaborated(fragment)
    since, first = _watchdog(m, engine, bound)
    key = Signal(len(_response_key(fragment, engine, since, first)))
    packed = Signal(len(_pack(_response_registers(fragment))))
    m.d.comb += [key.eq(_response_key(fragment, engine, since, first)),
                 packed.eq(_pack(_response_registers(fragment)))]
    cap, a = core.config.capacity, core.config.acc_bits
    rng = random.Random(seed)
    table, states = {}, set()
    load = engine.load

    def any_values():
        return {"n": rng.randrange(1, cap + 1), "drive_form": rng.randrange(2),
                "pairwise_form": rng.randrange(2), "max_steps": rng.randrange(3),
                "t": rng.randrange(8), "d": rng.getrandbits(16), "s": rng.randrange(20),
                "tol": rng.getrandbits(a), "tol_enable": rng.randrange(2)}

    def bench(episode, fresh):
        async def run(ctx):
            # Each episode starts from reset (every register the reset reaches at its
            # initial value, as in the proof; the lanes' data registers, which the reset does
            # not reach, and the memories keep their contents: the table reads neither).
            ctx.set(domain.rst, 1)
            await ctx.tick()
            ctx.set(domain.rst, 0)

            def observe():
                k, v = ctx.get(key), ctx.get(packed)
                states.add(v)
                if k in table:
                    value, varies = table[k]
                    table[k] = (value, varies | (value ^ v))
                else:
                    table[k] = (v, 0)

            async def clock():
                observe()
                await ctx.tick()

            async def write(target, addr, data, start=0):
                ctx.set(load.valid, 1)
                ctx.set(load.payload.target, TARGETS[target])
                ctx.set(load.payload.addr, addr)
                ctx.set(load.payload.data, data)
                ctx.set(engine.start, start)
                await clock()
                ctx.set(load.valid, 0)
                ctx.set(engine.start, 0)

            async def idle(clocks, n_too=True):
                # Idle clocks, each with a register load or none.
                for _ in range(clocks):
                    name, value = rng.choice(list(any_values().items()))
                    if rng.random() < 0.7 and (n_too or name != "n"):
                        await write("reg", REGISTERS[name], value)
                    else:
                        await clock()

            for drive, pairwise, n, steps, gap, *wait in episode:
                ctx.set(engine.phases.ready, rng.random() < 0.5)
                await idle(gap, n_too=n != 0)
                if rng.random() < 0.5:
                    for target in ("acc", "w", "pinned", "row_shift", "drive"):
                        for addr in range(cap):
                            if rng.random() < 0.7:
                                await write(target, addr, rng.getrandbits(36))
                values = any_values()
                values.update(n=n, drive_form=drive, pairwise_form=pairwise, max_steps=steps)
                if n == 0:
                    del values["n"]
                names = list(values)
                rng.shuffle(names)
                if fresh:
                    # Any few loads (none: a start in the first clock after reset).
                    names = names[:rng.choice([0, 1, 1, 2, 4, len(names)])]
                else:
                    names = names[:rng.choice([1, 4, len(names)])]
                    for name in ("n", "drive_form", "pairwise_form", "max_steps"):
                        if name in values and name not in names:
                            names.insert(0, name)
                at_start = rng.random() < 0.5
                for index, name in enumerate(names):
                    last = index == len(names) - 1
                    await write("reg", REGISTERS[name], values[name], start=last and at_start)
                if not at_start:
                    ctx.set(engine.start, 1)
                    await clock()
                    ctx.set(engine.start, 0)
                while ctx.get(engine.busy):
                    if ctx.get(engine.order.valid):
                        # The consumer takes the item at once or after up to 40 clocks (the
                        # pipelines are drained after about 25).
                        ctx.set(engine.order.ready, 0)
                        for _ in range(wait[0] if wait else
                                       rng.choice([0, rng.randrange(8), rng.randrange(41)])):
                            await clock()
                    ctx.set(engine.order.ready, rng.random() < 0.7)
                    ctx.set(engine.phases.ready, rng.random() < 0.5)
                    await clock()
                ctx.set(engine.order.ready, 0)
            for _ in range(8):
                ctx.set(engine.phases.ready, rng.random() < 0.5)
                await clock()
        return run

    def gap():
        return rng.choice([0, 0, 1, 2, 3, rng.randrange(24), rng.randrange(24)])

    # Episodes from reset: runs with n = 0 (its reset value: reachable until n is loaded) and
    # starts soon after reset (the pipelines hold their reset values), then one long episode
    # of every case `runs` times, in a random order.
    episodes = []
    for _ in range(16 * runs):
        zero = rng.random() < 0.5
        count = rng.choice([1, 1, 2, 3])
        episode = []
        for index in range(count):
            drive, pairwise = rng.randrange(2), rng.randrange(2)
            n = 0 if zero else rng.randrange(1, cap + 1)
            episode.append((drive, pairwise, n, rng.choice([0, 1, 2]),
                            rng.choice([0, 0, 1, 2, 3, rng.randrange(24)]) if index == 0
                            else gap()))
        episodes.append(episode)
    cases = [(drive, pairwise, n, steps, gap()) for drive in (0, 1) for pairwise in (0, 1)
             for n in range(1, cap + 1) for steps in (0, 2)] * runs
    rng.shuffle(cases)
    zero = [(drive, pairwise, 0, steps, gap()) for drive in (0, 1) for pairwise in (0, 1)
            for steps in (0, 2)] * runs
    rng.shuffle(zero)
    # Every wait of the consumer up to the pipelines' depth, in the forms with an early walk.
    waits = [(0, 0, n, 2, gap(), wait) for n in range(1, cap + 1)
             for wait in range(_RESPONSE_WAITS)]
    rng.shuffle(waits)
    forced = [zero, cases, waits]
    episodes += forced

    async def all_episodes(ctx):
        for episode in episodes:
            await bench(episode, fresh=not any(episode is e for e in forced))(ctx)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(all_episodes)
    sim.run()
    # The simulations check the property themselves: a violation here is a real one.
    for k in table:
        if (k >> (len(key) - 1)) & 1 and k & ((1 << len(since)) - 1) > bound:
            raise AssertionError(f"the engine's simulation was busy {bound + 1} clocks "
                                 "without an order item")
    # Pooling: a bit other than a valid bit that varies at some key is left free at the keys
    # that differ from it only in `final` and in n (among n >= 1), at the same point of the
    # pass: there it is a leftover of the previous run (or of reset) when a start soon
    # follows, or of the consumer's stalls, not a function of the key; the pooling spares the
    # simulations every combination. Valid bits are not pooled, nor are the forms or n = 0
    # (no run since reset had a row): those differ in which pipelines run.
    width = len(packed)
    low = len(since) + 1                       # the bit of `final` in the key
    n_bits = len(_slice_signals(fragment)) - 2
    n_mask = ((1 << n_bits) - 1) << (low + 1)
    # A valid bit: a flag vector's bit 0, or a 1-bit register low whenever the engine is idle.
    idle = [k for k in table if not (k >> (len(key) - 1)) & 1]
    valid_bits, offset = 0, 0
    for path, signal in _response_registers(fragment):
        low_when_idle = all(not (table[k][1] >> offset) & 1 and not (table[k][0] >> offset) & 1
                            for k in idle)
        if _flag_vector(path, signal) or (len(signal) == 1 and low_when_idle):
            valid_bits |= 1 << offset
        offset += len(signal)

    def pool(k):
        return (k & ~(1 << low) & ~n_mask) | (n_mask if k & n_mask else 0)

    pooled = {}
    for k, (value, varies) in table.items():
        pooled[pool(k)] = pooled.get(pool(k), 0) | (varies & ~valid_bits)
    result = {k: (value, ~(pooled[pool(k)] | varies) & ((1 << width) - 1))
              for k, (value, varies) in table.items()}
    # The walk's first stage (a1): its flags and indices are fields of a1_valid.
    group = _a1_group(fragment)
    if group:
        positions, offset = {}, 0
        for path, signal in _response_registers(fragment):
            positions[id(signal)] = (offset, len(signal))
            offset += len(signal)
        valid_at = positions[id(group[0])][0]
        fields = 0
        for signal in group[1:]:
            if id(signal) in positions:
                at, size = positions[id(signal)]
                fields |= ((1 << size) - 1) << at
        for k, (value, care) in result.items():
            if not (care >> valid_at) & (value >> valid_at) & 1:
                result[k] = (value, care & ~fields)
    # A flag vector's fields are tied only where its valid bit is tied to 1: with valid low
    # they are leftovers (of the last walk, or of reset) that nothing reads.
    offset = 0
    for path, signal in _response_registers(fragment):
        if _flag_vector(path, signal):
            fields = ((1 << len(signal)) - 2) << offset
            for k, (value, care) in result.items():
                if not (care >> offset) & (value >> offset) & 1:
                    result[k] = (value, care & ~fields)
        offset += len(signal)
    # Each register's values in every simulated clock (of at most 4 bits: counters, indices,
    # states; a pipeline's valid bit pattern as a whole is in the table).
    values, offset = [], 0
    for path, signal in _response_registers(fragment):
        bits = (1 << len(signal)) - 1
        values.append(frozenset((state >> offset) & bits for state in states)
                      if len(signal) <= 4 else None)
        offset += len(signal)
    _RESPONSE_TABLES[cache_key] = result, values
    return result, values


# ---------------------------------------------------------------------------------------------
# Broken array engines
# ---------------------------------------------------------------------------------------------

#: Bugs `broken_array_engine` can build into the array engine:
#:   pinned_ignored  the step update ignores the pinned flag (pinned oscillators move)
#:   lose_result     the main CORDIC loses its first result (the phase pass waits forever)
#:   cycles_narrow   the cycles output is 4 bits wide: a counter that wraps silently
#:   load_at_start   the engine without its `start_sees_load` fix (the defect the proofs
#:                   found): a max_steps load in the clock of a start is missed by the start
#:                   and used by the run, so a 0 loaded then lets steps_taken pass it
ARRAY_BUGS = ("pinned_ignored", "lose_result", "cycles_narrow", "load_at_start")


def _pinned_ignored_update():
    from ..hdl.array import StepUpdate

    class PinnedIgnored(StepUpdate):
        def elaborate(self, platform):
            m = Module()
            m.submodules.inner = inner = StepUpdate(self.acc_bits, self.dsp16)
            for name in ("valid", "x", "y", "acc", "w", "d", "s", "tol"):
                m.d.comb += getattr(inner, name).eq(getattr(self, name))
            m.d.comb += [inner.pinned.eq(0), self.done.eq(inner.done),
                         self.new_acc.eq(inner.new_acc), self.noisy.eq(inner.noisy)]
            return m
    return PinnedIgnored


def _losing_cordic():
    created = []

    class LosingCordic:
        @staticmethod
        def create(config, arch="pipelined", **kwargs):
            core = Cordic.create(config, arch, **kwargs)
            created.append(core)
            return BrokenStream(core, "lose_first") if len(created) == 1 else core
    return LosingCordic


def broken_array_engine(bug: str, config, **kwargs):
    """An `ArrayEngine(config, **kwargs)` with one bug of ARRAY_BUGS."""
    from ..hdl import array as array_module
    if bug not in ARRAY_BUGS:
        raise ValueError(f"unknown bug {bug!r}; choose one of {ARRAY_BUGS}")
    if bug == "cycles_narrow":
        return _NarrowCycles(array_module.ArrayEngine(config, **kwargs))
    if bug == "load_at_start":
        class StartMissesLoad(array_module.ArrayEngine):
            start_sees_load = False
        return StartMissesLoad(config, **kwargs)

    class Patched(array_module.ArrayEngine):
        """The engine, elaborated with a broken unit in place of a good one."""

        def elaborate(self, platform):
            name, broken = (("StepUpdate", _pinned_ignored_update()) if bug == "pinned_ignored"
                            else ("Cordic", _losing_cordic()))
            saved = getattr(array_module, name)
            setattr(array_module, name, broken)
            try:
                return super().elaborate(platform)
            finally:
                setattr(array_module, name, saved)
    return Patched(config, **kwargs)


class _NarrowCycles(wiring.Component):
    """An engine whose `cycles` output keeps only 4 bits."""

    def __init__(self, inner):
        self.inner = inner
        super().__init__(inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        wiring.connect(m, wiring.flipped(self.load), inner.load)
        wiring.connect(m, inner.order, wiring.flipped(self.order))
        wiring.connect(m, inner.phases, wiring.flipped(self.phases))
        m.d.comb += [inner.start.eq(self.start), self.busy.eq(inner.busy),
                     self.done.eq(inner.done), self.steps_taken.eq(inner.steps_taken),
                     self.converged.eq(inner.converged), self.cycles.eq(inner.cycles[:4]),
                     self.update.valid.eq(inner.update.valid),
                     self.update.index.eq(inner.update.index),
                     self.update.acc.eq(inner.update.acc)]
        return m


# ---------------------------------------------------------------------------------------------
# 3. The host link parser
# ---------------------------------------------------------------------------------------------

def formal_link(**overrides):
    """The small host link of the proofs: 2-bit targets and addresses, 8-bit data and values,
    8-bit cycles, the smallest buffer the format allows (19 bytes: the PING answer), and
    timeouts of 3 clocks."""
    from amaranth.lib import data as _data

    from ..hdl.link import HostLink
    load = _data.StructLayout({"target": 2, "addr": 2, "data": 8})
    out = _data.StructLayout({"value": 8, "kind": 1})
    options = dict(max_payload=19, byte_timeout=3, watchdog_cycles=3, cycle_bits=8)
    options.update(overrides)
    return HostLink(load, out, **options)


class LinkSpec(Elaboratable):
    """The host link under any byte sequence and any engine and host behaviour.

    Free every clock: rx (valid, byte), tx.ready, and the engine side (load.ready, o.valid,
    o.payload, busy, done, error, cycles).

    `properties`:

    - "state": the parser's FSM is always in one of its states.
    - "rejected": a frame that is answered with a rejection (BAD_CRC, BAD_LENGTH, UNKNOWN_CMD,
      TIMEOUT, BUSY, BAD_PAYLOAD) reached nothing: no load offered to the engine, no start
      and no engine reset since the link last took a byte; and no load is offered while the
      link takes bytes (a frame acts only once it is whole and checked). With `invariants`,
      the facts that make it inductive (the status register is OK or WATCHDOG once the
      command acted; nothing acted while parsing or checking).
    - "answers": every time the link stops taking bytes (a frame is whole, or abandoned), it
      answers (tx.valid) before it takes bytes again, and it never goes `answer_bound`
      clocks without taking a byte, offering one, or having one taken: the only waits
      without a limit are for the host (an incoming byte, or taking an answer byte). The
      default bound: a WRITE of max_writes writes (2 clocks a byte read back, up to
      watchdog_cycles for the engine to take it), or a READ of max_items items, or the
      longest EMIT, plus a few clocks. With an answer of at most max_payload + 6 bytes,
      that bounds the time to the next byte taken.
    """

    def __init__(self, link, *, properties=("state", "rejected", "answers"),
                 answer_bound: int | None = None, invariants: bool = True):
        self.link = link
        core = getattr(link, "inner", link)
        self.format = core.format
        self.properties = tuple(properties)
        self.invariants = invariants
        if answer_bound is None:
            fmt = self.format
            write = fmt.max_writes * (2 * fmt.write_bytes + fmt.watchdog_cycles) + 2
            read = fmt.max_items * (fmt.item_bytes + 1) + 1
            emit = max(len(fmt.capabilities()), fmt.status_bytes)
            answer_bound = max(write, read, emit) + 4
        self.answer_bound = answer_bound
        self.sby_script = ("memory_map", "opt -fast")

    def elaborate(self, platform):
        from ..golden.link import Status
        m = Module()
        link = self.link
        fragment = Fragment.get(link, platform)
        m.submodules.dut = _Elaborated(fragment)
        eng = link.engine
        m.d.comb += [
            link.rx.valid.eq(AnySeq(1)), link.rx.payload.eq(AnySeq(8)),
            link.tx.ready.eq(AnySeq(1)),
            eng.load.ready.eq(AnySeq(1)), eng.o.valid.eq(AnySeq(1)),
            eng.o.payload.eq(AnySeq(eng.o.payload.as_value().shape().width)),
            eng.busy.eq(AnySeq(1)), eng.done.eq(AnySeq(1)), eng.error.eq(AnySeq(1)),
            eng.cycles.eq(AnySeq(len(eng.cycles))),
        ]
        fsm = _generated(fragment, "link")
        taking = link.rx.ready
        sent = link.tx.valid & link.tx.ready

        if "state" in self.properties:
            m.d.comb += Assert(fsm.state < len(fsm.encoding), "the parser left its states")

        # Bytes of the current answer sent so far (the status is byte 1).
        tx_index = Signal(range(self.format.max_payload + 8))
        with m.If(taking):
            m.d.sync += tx_index.eq(0)
        with m.Elif(sent & (tx_index < self.format.max_payload + 7)):
            m.d.sync += tx_index.eq(tx_index + 1)

        if "rejected" in self.properties:
            acted = Signal()
            action = eng.load.valid | eng.start | link.engine_reset
            with m.If(taking):
                m.d.sync += acted.eq(0)
            with m.Elif(action):
                m.d.sync += acted.eq(1)
            accepted = (link.tx.payload == Status.OK) | (link.tx.payload == Status.WATCHDOG)
            m.d.comb += [
                Assert(~(sent & (tx_index == 1) & (acted | action)) | accepted,
                       "a rejected frame reached the engine"),
                Assert(~(taking & eng.load.valid), "a load offered while taking bytes"),
            ]
            if self.invariants:
                sigs = internal_signals(fragment)
                status = sigs["status"]
                code = fsm.encoding
                parsing = Cat(fsm.state == code[name]
                              for name in ("CMD", "LEN0", "LEN1", "PAYLOAD", "CRC0",
                                           "CRC1", "CHECK")).any()
                ok = (status == Status.OK) | (status == Status.WATCHDOG)
                in_tx = Cat(fsm.state == value for name, value in code.items()
                            if name.startswith("TX_")).any()
                commanding = Cat(fsm.state == code[name]
                                 for name in ("W_FETCH", "W_BYTE", "W_LOAD", "START", "ABORT",
                                              "EMIT", "R_TAKE")).any()
                m.d.comb += [
                    Assert(~acted | ok, "inv: acted only with an OK status"),
                    Assert(~commanding | ok, "inv: commands run with an OK status"),
                    Assert(~acted | ~parsing, "inv: nothing acted while parsing"),
                    Assert(~(fsm.state == code["TX_STATUS"]) | (tx_index == 1),
                           "inv: TX_STATUS at byte 1"),
                    Assert(~(fsm.state == code["TX_SYNC"]) | (tx_index == 0),
                           "inv: TX_SYNC at byte 0"),
                    Assert(~in_tx | (fsm.state == code["TX_SYNC"]) |
                           (fsm.state == code["TX_STATUS"]) | (tx_index >= 2),
                           "inv: the rest of the answer after byte 1"),
                    Assert(in_tx | (fsm.state == code["HUNT"]) | (tx_index == 0),
                           "inv: no answer byte before TX"),
                ]

        if "answers" in self.properties:
            bound = self.answer_bound
            since = Signal(range(bound + 2))
            answered = Signal()
            moved = taking | link.tx.valid
            with m.If(moved):
                m.d.sync += since.eq(0)
            with m.Elif(since <= bound):
                m.d.sync += since.eq(since + 1)
            with m.If(taking):
                m.d.sync += answered.eq(0)
            with m.Elif(link.tx.valid):
                m.d.sync += answered.eq(1)
            was_taking = Signal(init=1)
            m.d.sync += was_taking.eq(taking)
            m.d.comb += [
                Assert(since <= bound, "no byte taken or offered within the bound"),
                Assert(~(taking & ~was_taking) | answered, "took bytes again without answering"),
            ]
        return m


#: Bugs `BrokenLink` can add to the host link:
#:   start_before_check  the engine's start pulse also leaves in CHECK, before (and whatever)
#:                       the checks say (a strobe decoded one state early)
#:   silent_timeout      the answer of an abandoned frame (TIMEOUT) is swallowed, not sent
LINK_BUGS = ("start_before_check", "silent_timeout")


class BrokenLink(wiring.Component):
    """`inner` (a HostLink) with one bug of LINK_BUGS; the same ports."""

    def __init__(self, inner, bug: str):
        if bug not in LINK_BUGS:
            raise ValueError(f"unknown bug {bug!r}; choose one of {LINK_BUGS}")
        self.inner, self.bug = inner, bug
        self.format = inner.format
        super().__init__(inner.signature)

    def elaborate(self, platform):
        from ..golden.link import Status
        m = Module()
        fragment = Fragment.get(self.inner, platform)
        m.submodules.inner = _Elaborated(fragment)
        inner = self.inner
        sigs = internal_signals(fragment)
        fsm = _generated(fragment, "link")
        wiring.connect(m, wiring.flipped(self.rx), inner.rx)
        wiring.connect(m, inner.tx, wiring.flipped(self.tx))
        ie, oe = inner.engine, self.engine
        wiring.connect(m, ie.load, wiring.flipped(oe.load))
        wiring.connect(m, wiring.flipped(oe.o), ie.o)
        m.d.comb += [ie.busy.eq(oe.busy), ie.done.eq(oe.done), ie.error.eq(oe.error),
                     ie.cycles.eq(oe.cycles), oe.start.eq(ie.start),
                     self.engine_reset.eq(inner.engine_reset), self.watchdog.eq(inner.watchdog)]
        if self.bug == "start_before_check":
            m.d.comb += oe.start.eq(ie.start | (fsm.state == fsm.encoding["CHECK"]))
        else:
            swallowed = sigs["status"] == Status.TIMEOUT
            m.d.comb += [self.tx.valid.eq(inner.tx.valid & ~swallowed),
                         inner.tx.ready.eq(self.tx.ready | swallowed)]
        return m
