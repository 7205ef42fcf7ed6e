"""CORDIC units: circular, linear and hyperbolic, pipelined or iterative.

The arithmetic is specified bit for bit by `oscarray.golden.cordic`; this module reads the same
`CordicConfig` (formats, micro-op schedule, constants) and builds it in hardware. Both
architectures are built from the same stage functions below, so they agree bit for bit:

- `pipelined`: one register stage per pre-processing step, per micro-op and per output step;
  one result per clock; the whole pipeline stalls while the output is not accepted.
- `iterative` (`cordic_iterative.py`): one adder and one barrel shifter do every step, the
  pre-rotation negation and the output rounding included, sequenced by microcode in block RAM;
  `cycles_per_result` clocks per result (63 for the default rotate), small (344 LC on UP5K).

Each micro-op adder is a single carry chain: x - R(y, k) = x + ~(y >> k) + (1 - y[k-1]), so the
rounding of the shifted operand and the choice of add or subtract cost one XOR per bit.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.cordic import CIRCULAR, HYPERBOLIC, HYPERBOLIC_Q_RANGE, LINEAR, CordicConfig

__all__ = ["Cordic", "CordicPipelined", "CordicIterative", "cordic_payload", "ARCHITECTURES"]

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


def _add_shifted(acc, operand, shift, negate, width: int):
    """acc + R(operand, shift), or acc - R(operand, shift) when `negate`: one adder.

    R rounds half up: R(v, k) = (v >> k) + v[k-1]. Subtracting uses -(a + b) = ~a + ~b for a
    one-bit b, so the carry-in is `negate XOR v[k-1]`. `shift` is an int or a Value.
    """
    shifted = operand >> shift
    round_bit = ((operand << 1) >> shift)[0]
    return _add_carry(acc, Mux(negate, ~shifted, shifted), negate ^ round_bit, width)


def _negate_if(value, flip, width: int):
    """-value when `flip`, else value, as one carry chain: (value XOR flip) + flip."""
    return _add_carry(Const(0, width), Mux(flip, ~value, value), flip, width)


def _round_shift(value, shift: int):
    """R(value, shift) for a constant shift: add half, then shift."""
    if shift == 0:
        return value
    return (value + (1 << (shift - 1))) >> shift


def _saturate(value, width: int):
    """Clamp to the signed `width`-bit range."""
    hi, lo = (1 << (width - 1)) - 1, -(1 << (width - 1))
    return Mux(value > hi, hi, Mux(value < lo, lo, value))


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


def pre_stages(config: CordicConfig) -> list:
    """Input steps: to internal formats and into the convergence range (see golden `_pre`)."""
    g, h = config.guard_bits, config.angle_guard_bits

    def widen(s):
        return {"x": s["x"] << g, "y": s["y"] << g}

    if config.mode == "rotate":
        p = config.phase_bits

        def quadrant(s):
            # Decoded a stage early: the flip bit then drives the negations from a register.
            top = s["z"][p - 2:]
            return {"x_in": s["x"], "y_in": s["y"], "z": s["z"], "flip": (top == 1) | (top == 2)}

        def half_turn(s):
            flip = s["flip"]
            x, y = widen({"x": s["x_in"], "y": s["y_in"]}).values()
            z = (s["z"] ^ Mux(flip, 1 << (p - 1), 0))[:p].as_signed()
            w = config.x_width
            return {"x": _negate_if(x, flip, w), "y": _negate_if(y, flip, w), "z": z << h}
        return [quadrant, half_turn]

    if config.mode in ("vector", "divide"):
        def right_half_plane(s):
            flip = s["x"] < 0
            x, y = widen(s).values()
            z = s["z"] << h
            if config.mode == "vector":
                z = Mux(flip, z + (1 << (config.z_width - 1)), z)
            w = config.x_width
            out = {"x": _negate_if(x, flip, w), "y": _negate_if(y, flip, w), "z": z}
            if config.mode == "vector":
                out["zero"] = (s["x"] == 0) & (s["y"] == 0)
            return out
        return [right_half_plane]

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


def micro_op(config: CordicConfig, s: dict, shift, angle, is_scale, scale_negative) -> dict:
    """One micro-op on state `s`; the op's fields may be ints (pipelined) or Values (iterative).

    is_scale / scale_negative: a Python bool or a 1-bit Value.
    """
    x, y, z = s["x"], s["y"], s["z"]
    w, zw = config.x_width, config.z_width
    ccw_x = ccw_y = ccw_z = direction(config, s)
    out = dict(s)
    if config.coordinates == LINEAR:
        x_next = x
    else:
        # circular: x - d R(y); hyperbolic: x + d R(y)
        rotate_negate = ccw_x if config.coordinates == CIRCULAR else ~ccw_x
        x_next = _add_shifted(x, Mux(is_scale, x, y), shift,
                              Mux(is_scale, scale_negative, rotate_negate), w)
    y_next = _add_shifted(y, Mux(is_scale, y, x), shift,
                          Mux(is_scale, scale_negative, ~ccw_y), w)
    angle = Const(angle, signed(zw)) if isinstance(angle, int) else angle.as_signed()
    z_step = _add_carry(z, Mux(ccw_z, ~angle, angle), ccw_z, zw)
    out.update(x=x_next, y=y_next, z=Mux(is_scale, z, z_step))
    return out


def post_stages(config: CordicConfig) -> list:
    """Output steps: round half up, then saturate (see golden `_post`)."""
    g, h, w = config.guard_bits, config.angle_guard_bits, config.data_width

    def saturate_all(s):
        out = {"x": _saturate(s["x"], w), "y": _saturate(s["y"], w)}
        if config.coordinates == CIRCULAR:
            out["z"] = s["z"][:config.phase_bits]
        else:
            out["z"] = _saturate(s["z"], w)
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
    def create(config: CordicConfig, arch: str = "pipelined") -> "Cordic":
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown CORDIC architecture {arch!r}; choose one of "
                             f"{', '.join(ARCHITECTURES)}")
        if not isinstance(config, CordicConfig):
            raise TypeError(f"config must be a CordicConfig, not {config!r}")
        if arch == "pipelined":
            return CordicPipelined(config)
        from .cordic_iterative import CordicIterative   # it imports this module's pieces
        return CordicIterative(config)

    def _input_state(self) -> dict:
        return {"x": self.i.payload.x, "y": self.i.payload.y, "z": self.i.payload.z}

    def _drive_output(self, m: Module, state: dict):
        m.d.comb += [self.o.payload.x.eq(state["x"]), self.o.payload.y.eq(state["y"]),
                     self.o.payload.z.eq(state["z"])]


class CordicPipelined(Cordic):
    """One register stage per step; one result per clock; latency `config.latency_pipelined`."""

    arch = "pipelined"

    @property
    def latency(self) -> int:
        return self.config.latency_pipelined

    def elaborate(self, platform):
        m = Module()
        config = self.config
        shapes = state_shapes(config)
        # The whole pipeline moves when its last stage is empty or being read.
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]

        def rotation(op):
            return lambda s: micro_op(config, s, op.shift, op.angle, False, False)

        def scale(op):
            return lambda s: micro_op(config, s, op.shift, 0, True, op.sign < 0)

        core = list(pre_stages(config))
        core += [rotation(op) if op.kind == "rotation" else scale(op) for op in config.schedule]
        # Up to the last micro-op the state keeps its declared shapes (so z wraps); the
        # output steps keep whatever width their arithmetic needs.
        stages = [(stage, shapes) for stage in core] + [(stage, {}) for stage in
                                                         post_stages(config)]

        state, valid = self._input_state(), self.i.valid
        for index, (stage, declared) in enumerate(stages):
            next_state = stage(state)
            registers = {}
            for name, value in next_state.items():
                registers[name] = Signal(declared.get(name, value.shape()),
                                         name=f"s{index}_{name}", reset_less=True)
                with m.If(advance):
                    m.d.sync += registers[name].eq(value)
            stage_valid = Signal(name=f"s{index}_valid")
            with m.If(advance):
                m.d.sync += stage_valid.eq(valid)
            state, valid = registers, stage_valid

        m.d.comb += self.o.valid.eq(valid)
        self._drive_output(m, state)
        return m



def __getattr__(name):
    # CordicIterative lives in cordic_iterative.py, which imports this module: re-export lazily.
    if name == "CordicIterative":
        from .cordic_iterative import CordicIterative
        return CordicIterative
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
