"""CORDIC units: circular, linear and hyperbolic, pipelined or iterative.

The arithmetic is specified bit for bit by `oscarray.golden.cordic`; this module reads the same
`CordicConfig` (formats, micro-op schedule, constants) and builds it in hardware. Both
architectures are built from the same stage functions below, so they agree bit for bit:

- `pipelined`: one register stage per pre-processing step, per micro-op and per output step;
  one result per clock; the whole pipeline stalls while the output is not accepted. With
  `split_stages=True`, two stages per micro-rotation (operands prepared, then added): faster
  clock, more latency and flip-flops (see `CordicPipelined`).
- `iterative` (`cordic_iterative.py`): one adder and one barrel shifter do every x/y step, the
  pre-rotation negation and the output rounding included (z has its own adder; hyperbolic
  keeps the range-reduction and exponential stages), sequenced by microcode in block RAM;
  `cycles_per_result` clocks per result (63 for the default rotate), small (344 LC on UP5K).

Each micro-op adder is a single carry chain: x - R(y, k) = x + ~(y >> k) + (1 - y[k-1]), so the
rounding of the shifted operand and the choice of add or subtract cost one XOR per bit.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.cordic import CIRCULAR, HYPERBOLIC, HYPERBOLIC_Q_RANGE, LINEAR, CordicConfig

# CordicIterative is re-exported lazily by __getattr__ (its module imports this one).
__all__ = ["Cordic", "CordicPipelined", "CordicIterative",  # noqa: F822
           "cordic_payload", "ARCHITECTURES", "check_options"]

ARCHITECTURES = ("pipelined", "iterative")


def cordic_payload(config: CordicConfig) -> data.StructLayout:
    """The stream payload, the same in and out: x (low bits), y, z."""
    z_shape = unsigned(config.phase_bits) if config.coordinates == CIRCULAR \
        else signed(config.data_width)
    return data.StructLayout({
        "x": signed(config.data_width),
        "y": signed(config.data_width),
        "z": z_shape,
    })


# ---------------------------------------------------------------------------------------------
# Arithmetic building blocks
# ---------------------------------------------------------------------------------------------

def _add_carry(a, b, carry_in, width: int):
    """a + b + carry_in modulo 2**width as one carry chain, returned as signed(width).

    The carry enters through an extra low bit ({a, 1} + {b, c}), which Yosys maps to the same
    chain instead of a second adder.
    """
    wide = Cat(Const(1, 1), _to_width(a, width)) + Cat(carry_in, _to_width(b, width))
    return wide[1:width + 1].as_signed()


def _to_width(value, width: int):
    """The low `width` bits of `value`, sign-extended first when it is narrower and signed."""
    value = Value.cast(value)
    if len(value) >= width:
        return value[:width]
    fill = value[-1] if value.shape().signed else Const(0, 1)
    return Cat(value, fill.replicate(width - len(value)))


def _shifted_operand(operand, shift, negate):
    """(addend, carry_in) with addend + carry_in = R(operand, shift), or -R(operand, shift)
    when `negate`: the inputs of `_add_carry` that `_add_shifted` adds to its accumulator.

    R rounds half up: R(v, k) = (v >> k) + v[k-1]. Subtracting uses -(a + b) = ~a + ~b for a
    one-bit b, so the carry-in is `negate XOR v[k-1]`. `shift` is an int or a Value.
    """
    shifted = operand >> shift
    round_bit = ((operand << 1) >> shift)[0]
    return Mux(negate, ~shifted, shifted), negate ^ round_bit


def _add_shifted(acc, operand, shift, negate, width: int):
    """acc + R(operand, shift), or acc - R(operand, shift) when `negate`: one adder."""
    addend, carry_in = _shifted_operand(operand, shift, negate)
    return _add_carry(acc, addend, carry_in, width)


def _round_shift(value, shift: int):
    """R(value, shift) for a constant shift: add half, then shift."""
    if shift == 0:
        return value
    return (value + (1 << (shift - 1))) >> shift


def _saturate(value, width: int):
    """Clamp to the signed `width`-bit range."""
    hi, lo = (1 << (width - 1)) - 1, -(1 << (width - 1))
    return Mux(value > hi, hi, Mux(value < lo, lo, value))


def _saturate_wide(value, width: int):
    """Clamp a signed Value (any width >= `width`) to signed(`width`): only its top bits look.

    The same function as `_saturate`, without comparators (no carry chain).
    """
    sign = value[-1]
    top = value[width - 1:]
    overflow = top.any() & ~top.all()
    return Mux(overflow, Cat((~sign).replicate(width - 1), sign),
               value[:width]).as_signed()


# ---------------------------------------------------------------------------------------------
# Stages: functions from a dict of Values to a dict of expressions
# ---------------------------------------------------------------------------------------------

def state_shapes(config: CordicConfig) -> dict:
    """Shapes of the state that the micro-ops carry (x and y never overflow by design; z wraps)."""
    shapes = {"x": signed(config.x_width), "y": signed(config.x_width),
              "z": signed(config.z_width)}
    if config.coordinates == HYPERBOLIC:
        shapes["q"] = signed(4)
    if config.mode == "vector":
        shapes["zero"] = unsigned(1)
    return shapes


def pre_stages(config: CordicConfig, split: bool = False) -> list:
    """Input steps: to internal formats and into the convergence range (see golden `_pre`).

    The half-turn negations are carry chains after an inversion, built like a micro-op: a
    prepared stage (accumulator 0, addends and carry-ins as in `micro_op_prepare`), then
    `micro_op_add`. With `split` the two are separate register stages (rotate: the inversion
    moves into the quadrant stage, so the stage count stays; vector and divide: one stage more).
    """
    g, h, w = config.guard_bits, config.angle_guard_bits, config.x_width

    def widen(s):
        return {"x": s["x"] << g, "y": s["y"] << g}

    def negated(x, y, flip) -> dict:
        # -v = ~v + 1: the prepared form of 0 + (v or -v), the chain still to come.
        return {"x": Const(0, w), "x_b": Mux(flip, ~x, x), "x_c": flip,
                "y": Const(0, w), "y_b": Mux(flip, ~y, y), "y_c": flip}

    def add(s):
        return micro_op_add(config, s)

    # Split stages: negate before widening, -(v << g) = (-v) << g, so that the chain is
    # W + 2 bits and the g low bits (all `flip` when inverted) need no flip-flops.
    def turned_narrow(x_in, y_in, z_in, flip):
        out = turned(x_in, y_in, z_in, flip)
        out.update(negated(_to_width(x_in, w - g), _to_width(y_in, w - g), flip))
        out.update(x=Const(0, w - g), y=Const(0, w - g))
        return out

    def add_narrow(s):
        out = {name: value for name, value in s.items() if name[-2:] not in ("_b", "_c")}
        for name in ("x", "y"):
            out[name] = _add_carry(s[name], s[f"{name}_b"], s[f"{name}_c"], w - g) << g
        return out

    if config.mode == "rotate":
        p = config.phase_bits

        def quadrant_flip(z):
            top = z[p - 2:]
            return (top == 1) | (top == 2)

        def turned(x_in, y_in, z_in, flip):
            x, y = widen({"x": x_in, "y": y_in}).values()
            z = (z_in ^ Mux(flip, 1 << (p - 1), 0))[:p].as_signed()
            return {**negated(x, y, flip), "z": z << h}

        if split:
            return [lambda s: turned_narrow(s["x"], s["y"], s["z"], quadrant_flip(s["z"])),
                    add_narrow]

        def quadrant(s):
            # Decoded a stage early: the flip bit then drives the negations from a register.
            return {"x_in": s["x"], "y_in": s["y"], "z": s["z"], "flip": quadrant_flip(s["z"])}

        def half_turn(s):
            return add(turned(s["x_in"], s["y_in"], s["z"], s["flip"]))
        return [quadrant, half_turn]

    if config.mode in ("vector", "divide"):
        def right_half_plane_prepared(s):
            flip = s["x"] < 0
            x, y = widen(s).values()
            z = s["z"] << h
            if config.mode == "vector":
                z = Mux(flip, z + (1 << (config.z_width - 1)), z)
            out = {**negated(x, y, flip), "z": z}
            if config.mode == "vector":
                out["zero"] = (s["x"] == 0) & (s["y"] == 0)
            return out

        if split:
            def right_half_plane_narrow(s):
                out = right_half_plane_prepared(s)
                flip = out["x_c"]
                out.update(negated(_to_width(s["x"], w - g), _to_width(s["y"], w - g), flip))
                out.update(x=Const(0, w - g), y=Const(0, w - g))
                return out
            return [right_half_plane_narrow, add_narrow]
        return [lambda s: add(right_half_plane_prepared(s))]

    if config.mode == "multiply":
        return [lambda s: {**widen(s), "z": s["z"] << h}]

    def range_index(s):
        z = s["z"] << h
        over = [z >= t for t in config.hyperbolic_thresholds]
        q = sum(over[1:], over[0].as_unsigned()) + HYPERBOLIC_Q_RANGE[0]
        return {"z": z, "q": q}

    def range_reduce(s):
        table = [Const(q * config.ln2, signed(config.z_width + 2)) for q in HYPERBOLIC_Q_RANGE]
        offset = Const(0, signed(config.z_width + 2))
        for index, q in enumerate(HYPERBOLIC_Q_RANGE):
            offset = Mux(s["q"] == q, table[index], offset)
        return {"x": Const(config.hyperbolic_start, signed(config.x_width)),
                "y": Const(0, signed(config.x_width)), "z": s["z"] - offset, "q": s["q"]}
    return [range_index, range_reduce]


def direction(config: CordicConfig, s: dict):
    """ccw: the micro-rotation turns counter-clockwise (d = +1): z >= 0, or y < 0 when vectoring.

    Works on state expressions wider than the state registers: the sign is taken at the
    register's width.
    """
    if config.vectoring:
        return s["y"][config.x_width - 1]
    return ~s["z"][config.z_width - 1]


def micro_op_prepare(config: CordicConfig, s: dict, shift, angle, is_scale,
                     scale_negative) -> dict:
    """The first half of `micro_op`: everything but the carry chains.

    For each of x, y, z that changes, the result holds the accumulator under its own name and
    the addend and carry-in of its chain as `<name>_b` and `<name>_c`, so that
    `micro_op_add` is three plain carry chains: the shift, the rounding bit and the
    direction-dependent inversion all happen here. Other state (q, zero) passes through.
    """
    x, y = s["x"], s["y"]
    ccw = direction(config, s)
    out = dict(s)
    if config.coordinates != LINEAR:
        # circular: x - d R(y); hyperbolic: x + d R(y)
        rotate_negate = ccw if config.coordinates == CIRCULAR else ~ccw
        out["x_b"], out["x_c"] = _shifted_operand(
            Mux(is_scale, x, y), shift, Mux(is_scale, scale_negative, rotate_negate))
    out["y_b"], out["y_c"] = _shifted_operand(
        Mux(is_scale, y, x), shift, Mux(is_scale, scale_negative, ~ccw))
    angle = Const(angle, signed(config.z_width)) if isinstance(angle, int) \
        else angle.as_signed()
    out["z_b"], out["z_c"] = Mux(ccw, ~angle, angle), ccw
    if is_scale is not False:
        out["z_keep"] = is_scale     # scale steps leave z alone
    return out


def micro_op_add(config: CordicConfig, p: dict) -> dict:
    """The second half of `micro_op`: one carry chain per prepared x, y, z (see
    `micro_op_prepare`; z keeps its value where `z_keep`), the state's other entries
    unchanged."""
    widths = {"x": config.x_width, "y": config.x_width, "z": config.z_width}
    out = {name: value for name, value in p.items()
           if name[-2:] not in ("_b", "_c") and name != "z_keep"}
    for name, width in widths.items():
        if f"{name}_b" in p:
            out[name] = _add_carry(p[name], p[f"{name}_b"], p[f"{name}_c"], width)
    if "z_keep" in p:
        out["z"] = Mux(p["z_keep"], p["z"], out["z"])
    return out


def micro_op(config: CordicConfig, s: dict, shift, angle, is_scale, scale_negative) -> dict:
    """One micro-op on state `s`; the op's fields may be ints (pipelined) or Values (iterative).

    is_scale / scale_negative: a Python bool or a 1-bit Value.
    """
    prepared = micro_op_prepare(config, s, shift, angle, is_scale, scale_negative)
    prepared["z_keep"] = is_scale      # also when False: the same netlist as before the split
    return micro_op_add(config, prepared)


def scale_op(config: CordicConfig, s: dict, shift: int, negative: bool) -> dict:
    """A gain-compensation micro-op (constant shift and sign) as one plain carry chain each
    for x and y: x - R(x, k) is a subtraction, whose inversion Yosys puts inside the ECP5
    carry cells (CCU2C), instead of x + ~(x >> k) + ~x[k-1] with an inverter in front.
    The same results as `micro_op(config, s, shift, 0, True, negative)`.
    """
    out = dict(s)
    for name in ("x", "y"):
        value, width = s[name], config.x_width
        shifted = _to_width(value >> shift, width)
        round_bit = ((value << 1) >> shift)[0]
        if negative:
            # {v, 0} - {v >> k, r} = 2 (v - (v >> k)) - r; dropping bit 0: v - R(v, k).
            wide = Cat(Const(0, 1), _to_width(value, width)) - Cat(round_bit, shifted)
            out[name] = wide[1:width + 1].as_signed()
        else:
            out[name] = _add_carry(value, shifted, round_bit, width)
    return out


def post_stages(config: CordicConfig, split: bool = False) -> list:
    """Output steps: round half up, then saturate (see golden `_post`).

    `split` (for `CordicPipelined(split_stages=True)`): saturate by looking at the top bits
    instead of by comparisons, so the saturation stage has no carry chain.
    """
    g, h, w = config.guard_bits, config.angle_guard_bits, config.data_width
    saturate = _saturate_wide if split else _saturate

    def saturate_all(s):
        out = {"x": saturate(s["x"], w), "y": saturate(s["y"], w)}
        if config.coordinates == CIRCULAR:
            out["z"] = s["z"][:config.phase_bits]
        else:
            out["z"] = saturate(s["z"], w)
        return out

    if config.coordinates != HYPERBOLIC:
        def round_all(s):
            out = {"x": _round_shift(s["x"], g), "y": _round_shift(s["y"], g)}
            half = 1 << (h - 1) if h else 0
            if config.mode == "vector":
                # A zero vector turned clockwise at every step: take that sum back out, so the
                # output is z_in (the golden model's atan2(0, 0) = 0).
                owed = sum(op.angle for op in config.schedule if op.kind == "rotation")
                z = s["z"] + Mux(s["zero"], half - owed, half)
                out["z"] = z[:config.z_width].as_signed() >> h
            else:
                out["z"] = _round_shift(s["z"], h)
            return out
        return [round_all, saturate_all]

    def exponentials(s):
        return {"ep": s["x"] + s["y"], "em": s["x"] - s["y"], "q": s["q"]}

    def scale_by_q(s):
        def times_two_to(value, exponent_of):
            result = value
            for q in HYPERBOLIC_Q_RANGE:
                k = exponent_of(q)
                shifted = value << k if k >= 0 else _round_shift(value, -k)
                result = Mux(s["q"] == q, shifted, result)
            return result
        return {"a": times_two_to(s["ep"], lambda q: q), "b": times_two_to(s["em"], lambda q: -q)}

    def sum_difference(s):
        return {"s": s["a"] + s["b"], "d": s["a"] - s["b"], "a": s["a"]}

    def round_hyperbolic(s):
        return {"x": _round_shift(s["s"], g + 1), "y": _round_shift(s["d"], g + 1),
                "z": _round_shift(s["a"], g)}

    return [exponentials, scale_by_q, sum_difference, round_hyperbolic, saturate_all]


def _check_stage_counts(config: CordicConfig):
    # The golden config states the latency; the stage lists here must agree with it.
    assert len(pre_stages(config)) == config.pre_stages
    assert len(post_stages(config)) == config.post_stages


def _compose(stages, state: dict) -> dict:
    for stage in stages:
        state = stage(state)
    return state


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

class Cordic(wiring.Component):
    """A CORDIC unit with stream input and output (valid/ready backpressure).

    Ports
    -----
    i : In(stream.Signature(cordic_payload(config)))
        x, y (signed Q2.F), z (binary angle or Q2.F, by mode). Accepted when valid and ready.
    o : Out(stream.Signature(cordic_payload(config)))
        The results in the same layout, in input order, one per accepted input.

    Use `Cordic.create(config, arch)` to get the architecture you want.
    """

    def __init__(self, config: CordicConfig):
        if not isinstance(config, CordicConfig):
            raise TypeError(f"config must be a CordicConfig, not {config!r}")
        _check_stage_counts(config)
        self.config = config
        layout = cordic_payload(config)
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
        })

    @staticmethod
    def create(config: CordicConfig, arch: str = "pipelined", *,
               split_stages: bool = False) -> "Cordic":
        """The CORDIC of architecture `arch`; `split_stages`: see `CordicPipelined`."""
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown CORDIC architecture {arch!r}; choose one of "
                             f"{', '.join(ARCHITECTURES)}")
        if not isinstance(config, CordicConfig):
            raise TypeError(f"config must be a CordicConfig, not {config!r}")
        check_options(arch, split_stages=split_stages)
        if arch == "pipelined":
            return CordicPipelined(config, split_stages=split_stages)
        from .cordic_iterative import CordicIterative   # it imports this module's pieces
        return CordicIterative(config)

    def _input_state(self) -> dict:
        return {"x": self.i.payload.x, "y": self.i.payload.y, "z": self.i.payload.z}

    def _drive_output(self, m: Module, state: dict):
        m.d.comb += [self.o.payload.x.eq(state["x"]), self.o.payload.y.eq(state["y"]),
                     self.o.payload.z.eq(state["z"])]


def check_options(arch: str, *, split_stages: bool = False):
    """Raise TypeError / ValueError for options that `Cordic.create(config, arch, ...)`
    does not take (without building anything)."""
    if not isinstance(split_stages, bool):
        raise TypeError(f"split_stages must be a bool, not {split_stages!r}")
    if split_stages and arch != "pipelined":
        raise ValueError("split_stages applies to the pipelined architecture only")


class CordicPipelined(Cordic):
    """One register stage per step; one result per clock.

    split_stages
        False (default): one stage per micro-op (shift, conditional inversion and carry chain
        in one clock); latency `config.latency_pipelined`.
        True: for clock speed. Two stages per micro-rotation, "prepare" (shift,
        direction-dependent inversion, carry-in bit; `micro_op_prepare`) and "add" (one carry
        chain from registered operands; `micro_op_add`), and likewise for the pre-rotation
        negations; the gain-compensation scales stay one stage each (`scale_op`: constant
        shift and sign, so nothing to prepare), and the saturation looks at top bits instead
        of comparing. The results are bit for bit the same (only registers move) and the
        throughput is still one per clock. The stall enable (thousands of loads) comes from a
        flip-flop instead of from o.ready, with a two-entry output buffer: o.valid and
        o.payload come from flip-flops, i.ready from one through an inverter (o.ready still
        acts at once: no result is lost or repeated). The latency grows by one clock per
        micro-rotation, one for the vector and divide pre-rotation and one for the output
        buffer: see `latency`.
    """

    arch = "pipelined"

    def __init__(self, config: CordicConfig, *, split_stages: bool = False):
        try:
            check_options(self.arch, split_stages=split_stages)
        except TypeError:
            self._MustUse__silence = True    # no "created but never used" warning
            raise
        self.split_stages = split_stages
        super().__init__(config)

    @property
    def latency(self) -> int:
        """Clocks from input accepted to output valid (with the output ready)."""
        # Split stages: one more for the output buffer (see `elaborate`).
        return len(self._stages()) + self.split_stages

    def _stages(self) -> list:
        """(stage function, declared state shapes) per register stage, input to output."""
        config, split = self.config, self.split_stages
        shapes = state_shapes(config)
        stages = [(stage, shapes) for stage in pre_stages(config, split=split)]
        for op in config.schedule:
            if op.kind == "rotation":
                args = (op.shift, op.angle, False, False)
            else:
                args = (op.shift, 0, True, op.sign < 0)
            if split and op.kind == "scale":
                # Constant shift and sign: nothing to prepare, and the subtraction's
                # inversion sits inside the ECP5 carry chain. Splitting these too measured
                # ~850 flip-flops and 9 clocks more, and then the design misses UP5K.
                stages.append((lambda s, o=op: scale_op(config, s, o.shift, o.sign < 0),
                               shapes))
            elif split:
                stages.append((lambda s, a=args: micro_op_prepare(config, s, *a), shapes))
                stages.append((lambda s: micro_op_add(config, s), shapes))
            else:
                stages.append((lambda s, a=args: micro_op(config, s, *a), shapes))
        # Up to the last micro-op the state keeps its declared shapes (so z wraps); the
        # output steps keep whatever width their arithmetic needs.
        stages += [(stage, {}) for stage in post_stages(config, split=split)]
        assert split or len(stages) == config.latency_pipelined
        return stages

    def elaborate(self, platform):
        m = Module()
        # The whole pipeline moves when `advance`. Default: when its last stage is empty or
        # being read. Split stages: `advance` is a flip-flop (it is the clock enable of every
        # register, thousands of loads, so o.ready may not reach it through logic), and a
        # two-entry output buffer takes what the pipeline delivers while the output stalls.
        if self.split_stages:
            advance = Signal(init=1)     # see the output buffer below
        else:
            advance = Signal()
            m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]

        state, valid = self._input_state(), self.i.valid
        for index, (stage, declared) in enumerate(self._stages()):
            next_state = stage(state)
            registers = {}
            for name, value in next_state.items():
                value = Value.cast(value)
                shape = Shape.cast(declared.get(name, value.shape()))
                # z's direction bits (addend and carry-in, each bit ccw or ~ccw) start at
                # all ones (no reset, the value is never used) so that Yosys does not merge
                # them with x's carry-in of the shift-0 micro-op (also ccw): one flip-flop
                # near each chain instead of one between them.
                init = 0
                if name in ("z_b", "z_c"):
                    init = -1 if shape.signed else (1 << shape.width) - 1
                registers[name] = Signal(shape, name=f"s{index}_{name}", reset_less=True,
                                         init=init)
                with m.If(advance):
                    m.d.sync += registers[name].eq(value)
            stage_valid = Signal(name=f"s{index}_valid")
            with m.If(advance):
                m.d.sync += stage_valid.eq(valid)
            state, valid = registers, stage_valid

        if not self.split_stages:
            m.d.comb += self.o.valid.eq(valid)
            self._drive_output(m, state)
            return m

        # Output buffer: `head` drives o, `tail` holds a second result while head waits.
        # The pipeline advances unless both are full; tail only fills while head stays full,
        # so that is "unless tail is full": advance == ~tail_valid, kept in a flip-flop of
        # its own (the enable's sits where its thousands of loads pull it). Every control
        # flip-flop is one LUT4 of (o.ready, head_valid, tail_valid, valid) away.
        fields = cordic_payload(self.config).members
        head = {name: Signal(shape, name=f"head_{name}", reset_less=True)
                for name, shape in fields.items()}
        tail = {name: Signal(shape, name=f"tail_{name}", reset_less=True)
                for name, shape in fields.items()}
        head_valid, tail_valid = Signal(), Signal()
        head_free, tail_valid_next = Signal(), Signal()
        m.d.comb += [
            self.i.ready.eq(~tail_valid),
            head_free.eq(~head_valid | self.o.ready),      # head takes tail, or the pipeline
            tail_valid_next.eq(~head_free & (tail_valid | valid)),
        ]
        m.d.sync += [head_valid.eq(~head_free | tail_valid | valid),
                     tail_valid.eq(tail_valid_next), advance.eq(~tail_valid_next)]
        with m.If(head_free):
            for name in fields:
                m.d.sync += head[name].eq(Mux(tail_valid, tail[name], state[name]))
        with m.If(~tail_valid):
            for name in fields:
                m.d.sync += tail[name].eq(state[name])
        m.d.comb += self.o.valid.eq(head_valid)
        self._drive_output(m, head)
        return m


def __getattr__(name):
    # CordicIterative lives in cordic_iterative.py, which imports this module: re-export lazily.
    if name == "CordicIterative":
        from .cordic_iterative import CordicIterative
        return CordicIterative
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
