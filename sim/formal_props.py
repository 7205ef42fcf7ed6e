"""Property harnesses for the formal proofs (issue 7): Elaboratables that wrap a DUT, drive its
inputs with free values (`AnySeq`, `AnyConst`) and check it with `Assert` / `Assume`.

`sim/formal.py` runs them with SymbiYosys. Each harness states two kinds of assertions:

- the *specification* (end-to-end properties, on the DUT's ports and a few counters of the
  harness): these are what a proof is about, and what a broken DUT must violate;
- *invariants* (`invariants=True`): relations between the harness's counters and the DUT's
  internal registers that make the specification inductive, so that k-induction (sby `prove`)
  closes at a small depth. They are found in the elaborated DUT by name (`internal_signals`).
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
    Const,
    Elaboratable,
    Fragment,
    Module,
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
    `max_steps_limit`.

    `properties` selects what is checked (each is one proof in `oscarray.formal_flow`):

    - "response" (bounded liveness): while busy, the engine hands over an `order` item (one
      per state: each step ends with one) or finishes within `step_bound` clocks (by default
      `cycles_per_step` of the largest n, the slowest form), not counting clocks in which an
      offered order item is not taken (the consumer's stalls). With steps_taken <= max_steps
      ("counters"), a run ends within (max_steps + 1) * step_bound such clocks: it always
      returns to done. When busy falls, done is set.
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
        with m.If(is_reg & (item.addr == REGISTERS["max_steps"])):
            m.d.comb += Assume(item.data <= self.max_steps_limit, "a short run")

        ctx = dict(m=m, dut=dut, item=item, fire=fire, is_reg=is_reg, busy=dut.busy,
                   started=dut.start & ~dut.busy, fragment=fragment)
        for name in self.properties:
            getattr(self, f"_{name}")(**ctx)
        return m

    def _response(self, m, dut, busy, started, **_):
        was_busy = Signal()
        m.d.sync += was_busy.eq(busy)
        m.d.comb += Assert(~(was_busy & ~busy) | dut.done, "a run ends in done")
        bound = self.step_bound
        since = Signal(range(bound + 2))
        handed = dut.order.valid & dut.order.ready
        waiting = dut.order.valid & ~dut.order.ready
        with m.If(started | handed):
            m.d.sync += since.eq(0)
        with m.Elif(busy & ~waiting & (since <= bound)):
            m.d.sync += since.eq(since + 1)
        m.d.comb += Assert(~busy | (since <= bound), "busy longer than a step without progress")

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
