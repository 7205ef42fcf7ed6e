"""Measurement harness: puts a wide-ported core on a board with only a clock and one LED.

The cores we measure have ports far wider than a board's pins (a stream of 3 x 18 bits in
and out).  Synthesis prunes every bit nobody observes and treats every undriven input as a
constant, so a core placed on a board naively would shrink to nothing.  The harness keeps
every bit alive at a small, known cost:

* every bit that flows **into** the core (`i.payload`, `i.valid`, `o.ready`, ...) comes from
  a register of a small cellular automaton (rule 90/150, see `_ca_rules`) running on the
  board clock, so each input changes over time and none is a constant;
* every bit that flows **out of** the core (`o.payload`, `o.valid`, `i.ready`, ...) is XORed
  into its own stage of a multiple-input signature register (MISR), a shift register whose
  last stage drives an LED.

Both sides are registered and each register is fed by one 2- or 3-input XOR, i.e. one LUT
level, so the harness does not limit the core's Fmax: the critical path is the core's.

Why not a plain LFSR/shift register on the input side: in a shift register, stage k+1 and a
core register loading input bit k would have the same D input; Yosys's `opt_merge` may merge
them and the core's register count would silently drop.  Each automaton cell computes an XOR
of its neighbours, so no harness register's D input is another register's Q.
Why a MISR and not an XOR tree on the output side: XOR-folding two outputs that carry the
same value cancels them (x ^ x = 0) and synthesis would then prune the logic behind them.
Each MISR stage takes one output bit, so nothing cancels.

The harness makes its own `sync` domain: the board clock pin, and a registered reset pulse
of a few cycles shortly after configuration.  The platforms' default domain would add, on
iCE40, a 15 us power-on counter whose compare logic (about 95 MHz on UP5K) would be the
critical path of small cores.  The price: iCE40 block RAMs, which read as zero for about
3 us after configuration, are not waited for; that does not matter for a measurement
bitstream.

The harness costs about one LUT and one flip-flop per port bit (on iCE40 one logic cell:
the LUT and FF pack together).  `build.build` measures it with `IdentityCore` and subtracts.
"""

from amaranth import Cat, ClockDomain, ClockSignal, Const, Module, ResetSignal, Signal
from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable
from amaranth.hdl import Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import Flow

__all__ = ["Harness", "IdentityCore", "port_bits", "port_shape_key"]

# Cycles the sync reset is held after configuration.
_RESET_CYCLES = 4

# Fewest cells of the input automaton: a 1- or 2-cell automaton has a period of 1 or 2,
# which would make a tiny core's inputs nearly constant.
_MIN_CA_CELLS = 8


def port_bits(component):
    """Split the ports of `component` into the bits driven into it and those it drives.

    Arguments:
        component: an `amaranth.lib.wiring.Component` (any signature, streams or not).

    Returns `(inputs, outputs)`: two lists of `(path, value)` pairs, in signature order,
    where `path` is the member path joined with "." (e.g. "i.payload", "o.ready") and
    `value` is the port's signal.  `inputs` are the bits whose flow is In for the component
    (they include `o.ready` of an Out stream), `outputs` those whose flow is Out.
    """
    inputs, outputs = [], []
    for path, member, value in component.signature.flatten(component):
        # Struct payloads come back as data.View; the harness works on their raw bits.
        entry = (".".join(str(p) for p in path), Value.cast(value))
        # flatten() already resolves flips: `member.flow` is the flow seen by the component.
        (inputs if member.flow == Flow.In else outputs).append(entry)
    return inputs, outputs


def port_shape_key(component):
    """A short string naming the port shape of `component`: path, direction and width.

    Two components with the same key get the same harness (same size), so it serves as the
    cache key of the harness-only (identity core) measurement.
    """
    inputs, outputs = port_bits(component)
    parts = [f"in:{p}:{len(v)}" for p, v in inputs] + [f"out:{p}:{len(v)}" for p, v in outputs]
    return ",".join(parts)


def _ca_rules(n):
    """Rule vector of an `n`-cell null-boundary rule 90/150 cellular automaton.

    Cell k's next value is `s[k-1] ^ s[k+1]` (rule 90), XORed with `s[k]` too if
    `rules[k]` (rule 150).  The automaton is a linear map over GF(2) with a tridiagonal
    matrix; its determinant obeys d_k = rules[k]*d_{k-1} + d_{k-2}.  We use rule 150
    everywhere except where needed to keep d_n = 1: an invertible map never sends a
    nonzero state to the all-zero state, so the inputs never freeze.
    """
    rules = [True] * n
    d_prev2, d_prev = 0, 1  # d_{-1}, d_0
    for k in range(n):
        if k == n - 1 and d_prev2 == 1 and d_prev == 1:
            rules[k] = False  # then d_n = d_{n-2} = 1
        d_prev2, d_prev = d_prev, (int(rules[k]) * d_prev + d_prev2) % 2
    assert d_prev == 1
    return rules


def _ca_seed(n):
    """A fixed nonzero, irregular initial state for the `n`-cell automaton."""
    state, x = 0, 0x9E3779B9
    for k in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        state |= ((x >> 16) & 1) << k
    return state or 1


class IdentityCore(wiring.Component):
    """A core with no logic and the same ports as another: each output bit is an input bit.

    Arguments:
        signature: the `wiring.Signature` to copy (usually `core.signature`).

    Output bit k (outputs flattened in signature order) is input bit `k mod n_in`, so
    every output is driven by a harness register and no MISR stage has a constant input.
    Built inside `Harness` it measures the harness alone.
    """

    def __init__(self, signature):
        super().__init__(signature)

    def elaborate(self, platform):
        m = Module()
        inputs, outputs = port_bits(self)
        in_bits = Cat(*(v for _, v in inputs))
        out_bits = Cat(*(v for _, v in outputs))
        if len(in_bits) == 0:
            return m  # nothing to forward; outputs stay at their reset values
        m.d.comb += [out_bits[k].eq(in_bits[k % len(in_bits)]) for k in range(len(out_bits))]
        return m


class Harness(Elaboratable):
    """Top level for a board build: drives every input of `core`, observes every output.

    Arguments:
        core: the `wiring.Component` to measure; it runs in the `sync` domain, which the
            harness drives from the board's default clock (see the module docstring).
        led: name of the platform resource to drive with the observation bit; `None` picks
            the first of "led", "rgb_led" (its red pin) that the board has.

    Attributes `n_in` and `n_out` give the number of port bits on each side.  Without a
    platform (simulation) the harness uses the simulator's `sync` domain and no LED.
    """

    def __init__(self, core, led=None):
        self.core = core
        self.led = led
        inputs, outputs = port_bits(core)
        self.n_in = sum(len(v) for _, v in inputs)
        self.n_out = sum(len(v) for _, v in outputs)
        if self.n_out == 0:
            self._MustUse__silence = True  # no "created but never used" warning on top
            raise ValueError(f"{type(core).__name__} has no output port: nothing would be "
                             f"observable and synthesis would remove the whole core")

    def _led_buffer(self, m, platform):
        """An output buffer on the LED pin; drive its `o` with the observation bit."""
        names = [self.led] if self.led is not None else ["led", "rgb_led"]
        for name in names:
            try:
                port = platform.request(name, 0, dir="-")
            except ResourceError:  # this board has no such resource
                continue
            port = port.r if name == "rgb_led" else port  # a record of r, g, b pins
            m.submodules.led_buf = led_buf = io.Buffer("o", port)
            return led_buf
        raise ValueError(f"board {type(platform).__name__} has none of the LED resources "
                         f"{names}")

    def _clock_domain(self, m, platform):
        """Define domain `sync` on the board's default clock, with a short reset pulse."""
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        clk_io = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        m.d.comb += [ClockSignal("sync").eq(clk_buf.i), ClockSignal("por").eq(clk_buf.i)]
        # The reset comes straight from a flip-flop that is 0 at configuration, rises one
        # cycle later and falls _RESET_CYCLES cycles after that.  Not "1 at configuration":
        # iCE40 flip-flops power up as 0, Yosys makes an initial 1 with a LUT inverter on
        # the output, and that LUT on the reset net limited the harness to ~106 MHz on UP5K.
        warm = Signal(_RESET_CYCLES + 1)  # fills with ones from bit 0
        rst = Signal()
        m.d.por += [warm.eq(Cat(Const(1, 1), warm[:-1])), rst.eq(warm[0] & ~warm[-1])]
        m.d.comb += ResetSignal("sync").eq(rst)

    def elaborate(self, platform):
        m = Module()
        if platform is not None:
            self._clock_domain(m, platform)
        m.submodules.core = core = self.core
        inputs, outputs = port_bits(core)

        # Input side: one automaton cell per input bit (at least _MIN_CA_CELLS).
        n_ca = max(self.n_in, _MIN_CA_CELLS)
        ca = Signal(n_ca, init=_ca_seed(n_ca))
        padded = Cat(Const(0, 1), ca, Const(0, 1))  # null boundaries
        rules = _ca_rules(n_ca)
        m.d.sync += [ca[k].eq(padded[k] ^ padded[k + 2] ^ (ca[k] if rules[k] else 0))
                     for k in range(n_ca)]
        m.d.comb += Cat(*(v for _, v in inputs)).eq(ca[:self.n_in])

        # Output side: MISR, one stage per output bit; stage k-1 shifts into stage k.
        out_bits = Cat(*(v for _, v in outputs))
        misr = Signal(self.n_out)
        m.d.sync += misr.eq(Cat(Const(0, 1), misr[:-1]) ^ out_bits)

        if platform is not None:
            m.d.comb += self._led_buffer(m, platform).o.eq(misr[-1])
        return m
