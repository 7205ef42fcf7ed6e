"""Iterative CORDIC for area: one adder, one barrel shifter, a microcode ROM in block RAM.

Datapath (every x/y step of `oscarray.golden.cordic` is `acc +- R(operand, k)`, one adder):

- x, y: the state (`config.x_width` bits); z: the angle state with its own adder.
- t: the operand register, `x_width + 1` bits. A "t-load" writes `{src ^ neg, neg} >> k` (src =
  x or y, neg = subtract, one shared barrel shifter). The next clock the adder computes
  `A + t[1:] + t[0]`: for k >= 1 that is `A + R(src, k)` or `A + R(~src, k) = A - R(src, k)`,
  and for k = 0 the appended low bit is the `+1` of the two's complement. So add/subtract and
  round half up cost no logic beyond the XOR in front of the shifter.
- A = x, y or 0; the sum goes back to x or y. With A = 0 the same adder negates (pre-rotation)
  and rounds the outputs (`R(v, g) = 0 + R(v, g)`), so pre- and post-processing need no adders.
- z: `z + addend` every cycle; the addend comes from the ROM (0 when z has nothing to do).

Control is a microcode ROM, one word per clock, addressed by `{pc, cond}`: `cond` is a data bit
(the rotation direction, the pre-rotation flip or the zero-vector flag) chosen by the previous
word, so data-dependent choices (subtract or add, +angle or -angle) are ROM contents instead of
XOR gates. The program is a fixed sequence per configuration, scheduled at elaboration time by
`schedule_program`: two clocks per micro-rotation when data dependences allow (the x and y updates
of consecutive micro-ops alternate their order so that each t-load reads a finished value).

Hyperbolic mode keeps the combinational range reduction and exponential output stages of
`hdl/cordic.py` (they need comparisons and left shifts the shared datapath does not have); only
its micro-ops use the shared datapath.

`SharedCordicIterative` puts several configurations (units that never run at the same time, as
the attention head's vector, rotate and divide CORDICs) on one such datapath and one microcode
store, with a port per configuration that behaves like that configuration's `CordicIterative`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import reduce
from itertools import permutations
from typing import Callable

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.cordic import CIRCULAR, HYPERBOLIC, LINEAR, CordicConfig
from .cordic import (Cordic, _add_carry, _check_stage_counts, _compose, _saturate_wide,
                     _to_width, cordic_payload, post_stages, pre_stages)

__all__ = ["CordicIterative", "SharedCordicIterative", "schedule_program"]

# Modes whose inputs are turned by a half-turn (x, y negated) before the micro-ops.
_FLIP_MODES = ("rotate", "vector", "divide")


# ---------------------------------------------------------------------------------------------
# The program: tasks of micro-steps, placed on clock cycles at elaboration time
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Update:
    """`dest <- (0 or dest) + R(+-src, shift)`: one t-load, then one adder cycle.

    neg(cond) gives the subtract bit; `kind` names the data bit `cond` is (None: constant).
    """
    dest: str
    src: str
    shift: int
    neg: Callable[[int], int]
    kind: str | None = None
    zero_acc: bool = False


@dataclass(frozen=True)
class ZAdd:
    """`z <- z + add(cond)` modulo 2**z_width."""
    add: Callable[[int], int]
    kind: str | None = None


@dataclass
class Task:
    """Updates (in either order) and an optional z step that belong together.

    `reads_old`: the second update reads the first one's destination before it is written
    (a micro-rotation: y' uses the old x). `tag` tells apart the direction bits of micro-ops.
    """
    updates: list
    zadd: ZAdd | None = None
    reads_old: bool = False
    tag: object = None


@dataclass
class Word:
    """One clock of the program; values are per cond bit where they depend on it."""
    t_src: str | None = None           # a t-load this clock, from x or y
    t_neg: tuple = (0, 0)
    shift: int = 0
    dest: str | None = None
    zero_acc: bool = False
    z_add: tuple | None = None
    cond: tuple | None = None          # (kind, tag) of the data bit this word depends on


@dataclass
class Program:
    """The placed program: words[1..] run on the clocks after the input is accepted."""
    words: dict = field(default_factory=dict)
    ready: dict = field(default_factory=lambda: {"x": 1, "y": 1, "z": 1})
    last_read: dict = field(default_factory=lambda: {"x": 0, "y": 0, "z": 0})
    dir_source: str = "z"

    @property
    def length(self) -> int:
        return max(self.words, default=0)

    def word(self, cycle) -> Word:
        return self.words.get(cycle, Word())


def _cond_ok(program, cycle, kind, tag, own_write):
    """May a word at `cycle` depend on data bit `kind`? Its address is formed one clock earlier.

    The direction bit of a micro-op is read live from its source register (z, or y when
    vectoring): at `cycle - 1` that register must hold the previous micro-op's result and not
    yet this one's (`own_write`: the clock this task writes it).
    """
    if cycle - 1 < 1:                      # clock 0 is the load: nothing is valid yet
        return False
    existing = program.word(cycle).cond
    if existing is not None and existing != (kind, tag):
        return False
    if kind == "dir":
        source = program.dir_source
        if program.ready[source] > cycle - 1:
            return False
        if own_write is not None and cycle - 1 > own_write:
            return False
    return True


def _try_place(program, task, order, t1, z_range):
    """Place `task` with its first t-load at clock t1; returns the placement or None."""
    words, ready = program.words, dict(program.ready)
    last_read = dict(program.last_read)
    placed, busy_t, busy_add = [], set(), set()

    def t_free(c):
        return c not in busy_t and (c not in words or words[c].t_src is None)

    def add_free(c):
        return c not in busy_add and (c not in words or words[c].dest is None)

    tl = t1
    for index, u in enumerate(order):
        if index == 1:
            candidates = [placed[0][2]] if task.reads_old else range(placed[0][2], t1 + 64)
            tl = next((c for c in candidates if t_free(c) and ready[u.src] <= c), None)
            if tl is None:
                return None
        if not (t_free(tl) and ready[u.src] <= tl):
            return None
        up = tl + 1
        if not (add_free(up) and ready[u.dest] <= up and last_read[u.dest] <= up):
            return None
        placed.append((u, tl, up))
        busy_t.add(tl)
        busy_add.add(up)
        last_read[u.src] = max(last_read[u.src], tl)
        if index == 0 and not task.reads_old:
            ready[u.dest] = up + 1
    zc = None
    if task.zadd is not None:
        for c in z_range:
            if (c not in words or words[c].z_add is None) and ready["z"] <= c \
                    and last_read["z"] <= c:
                zc = c
                break
        if zc is None:
            return None
    # Data-bit checks: every word of the task that depends on a data bit.
    own_write = None
    if task.tag is not None:
        own_write = zc if program.dir_source == "z" else \
            next((up for u, _, up in placed if u.dest == "y"), None)
    uses = [(tl, u.kind) for u, tl, _ in placed if u.kind] + \
           ([(zc, task.zadd.kind)] if task.zadd is not None and task.zadd.kind else [])
    for cycle, kind in uses:
        tag = task.tag if kind == "dir" else None
        if not _cond_ok(program, cycle, kind, tag, own_write):
            return None
    return placed, zc, uses


def _place(program, task):
    """Place `task` as early as possible (trying both update orders) and commit it."""
    lower = 1
    best = None
    for order in permutations(task.updates):
        for t1 in range(lower, lower + 200):
            z_lo = max(1, program.ready["z"])
            result = None
            z_starts = range(z_lo, max(z_lo, t1) + 8) if task.zadd else [None]
            for z_start in z_starts:
                z_range = [z_start] if z_start is not None else []
                result = _try_place(program, task, order, t1, z_range)
                if result is not None:
                    break
            if result is not None:
                placed, zc, _ = result
                finish = max([up for _, _, up in placed] + ([zc] if zc else []))
                key = (finish, t1)
                if best is None or key < best[0]:
                    best = (key, result)
                break
    if best is None:
        raise RuntimeError("CORDIC microcode: could not schedule a task")
    placed, zc, uses = best[1]
    for u, tl, up in placed:
        w = program.words.setdefault(tl, Word())
        w.t_src, w.t_neg, w.shift = u.src, (u.neg(0), u.neg(1)), u.shift
        w = program.words.setdefault(up, Word())
        w.dest, w.zero_acc = u.dest, u.zero_acc
        program.ready[u.dest] = max(program.ready[u.dest], up + 1)
        program.last_read[u.src] = max(program.last_read[u.src], tl)
    if zc is not None:
        w = program.words.setdefault(zc, Word())
        w.z_add = (task.zadd.add(0), task.zadd.add(1))
        program.ready["z"] = zc + 1
        program.last_read["z"] = max(program.last_read["z"], zc)
    for cycle, kind in uses:
        program.words[cycle].cond = (kind, task.tag if kind == "dir" else None)
        if kind == "dir":
            source = program.dir_source
            program.last_read[source] = max(program.last_read[source], cycle - 1)


def _tasks(config: CordicConfig) -> list:
    """The golden model's steps (`_pre`, `_micro_ops`, `_post`) as tasks for the shared adder."""
    zw, g, h = config.z_width, config.guard_bits, config.angle_guard_bits
    mask = (1 << zw) - 1
    tasks = []

    def flip_neg(cond):
        return cond

    if config.mode in _FLIP_MODES:
        # x, y = -x, -y when flipped: 0 + R(~v, 0) + 1.
        updates = [Update(r, r, 0, flip_neg, "flip", zero_acc=True) for r in "xy"]
        zadd = None
        if config.mode == "vector":
            zadd = ZAdd(lambda cond: (cond << (zw - 1)) & mask, "flip")
        tasks.append(Task(updates, zadd))

    # ccw (d = +1) as a function of the live direction bit: z's sign bit, or y's when vectoring.
    def ccw(cond):
        return cond if config.vectoring else 1 - cond

    for index, op in enumerate(config.schedule):
        if op.kind == "scale":
            neg = int(op.sign < 0)
            tasks.append(Task([Update(r, r, op.shift, lambda c, n=neg: n) for r in "xy"]))
            continue
        y_update = Update("y", "x", op.shift, lambda c: 1 - ccw(c), "dir")
        if config.coordinates == CIRCULAR:
            x_neg = ccw                              # x - d R(y)
        else:
            x_neg = lambda c: 1 - ccw(c)             # hyperbolic: x + d R(y)  # noqa: E731
        updates = [y_update] if config.coordinates == LINEAR else \
            [Update("x", "y", op.shift, x_neg, "dir"), y_update]
        zadd = ZAdd(lambda c, a=op.angle: (-a if ccw(c) else a) & mask, "dir")
        tasks.append(Task(updates, zadd, reads_old=len(updates) == 2, tag=index))

    if config.coordinates != HYPERBOLIC:
        # Round half up to the output format: x, y = 0 + R(v, g); z + half, then z >> h.
        updates = [Update(r, r, g, lambda c: 0, zero_acc=True) for r in "xy"]
        half = 1 << (h - 1) if h else 0
        if config.mode == "vector":
            # A zero vector turned clockwise at every step: take that sum back out, so the
            # output is z_in (the golden model's atan2(0, 0) = 0).
            owed = sum(op.angle for op in config.schedule if op.kind == "rotation")
            zadd = ZAdd(lambda cond: (half - owed if cond else half) & mask, "zero")
        else:
            zadd = ZAdd(lambda cond: half)
        tasks.append(Task(updates, zadd))
    return tasks


def schedule_program(config: CordicConfig) -> Program:
    """Place every step of `config` on a clock; word 0 is the idle word."""
    program = Program(dir_source="y" if config.vectoring else "z")
    for task in _tasks(config):
        _place(program, task)
    return program


def _cond_sources(config: CordicConfig) -> list:
    """The data bits a program of `config` branches on: the direction bit, and the pre-rotation
    flip and the zero-vector flag where the mode has them."""
    sources = ["dir"]
    if config.mode in _FLIP_MODES:
        sources.append("flip")
    if config.mode == "vector":
        sources.append("zero")
    return sources


def _word_fields(program: Program, pc: int, source_index: Callable[[str], int]) -> dict:
    """The microcode fields of clock `pc` of `program` (0 and past the end: the idle word).

    `t_neg` and `z_add` are (cond 0, cond 1) pairs, `z_add` None where z rests; `next_cond` is
    `source_index` of the data bit the following word depends on (0 when none).
    """
    length = program.length
    word = program.word(pc) if 1 <= pc <= length else Word()
    following = program.word(pc + 1) if 1 <= pc < length else Word()
    return {
        "shift": word.shift, "t_src_y": word.t_src == "y", "t_neg": word.t_neg or (0, 0),
        "dest_x": word.dest == "x", "dest_y": word.dest == "y", "zero_acc": word.zero_acc,
        "advance": 1 <= pc < length, "finish": pc == length,
        "next_cond": source_index(following.cond[0]) if following.cond else 0,
        "z_add": word.z_add,
    }


def _shift_bits(configs) -> int:
    """Bits of the microcode's shift field: every micro-op's shift and the output rounding."""
    largest = max([op.shift for config in configs for op in config.schedule]
                  + [config.guard_bits for config in configs] + [1])
    return largest.bit_length()


def _select(index, values):
    """values[index] for a Value `index` (values[0] also past the end): a chain of Muxes."""
    chosen = values[0]
    for position, value in enumerate(values[1:], start=1):
        chosen = Mux(index == position, value, chosen)
    return chosen


def _load_values(config: CordicConfig, p):
    """x, y, z as loaded from the input payload `p` on the handshake, and the flip and zero
    bits (see `CordicIterative`)."""
    g, h = config.guard_bits, config.angle_guard_bits
    zw = config.z_width
    flip = Const(0, 1)
    if config.mode == "rotate":
        pb = config.phase_bits
        # Quadrants 1 and 2 turn by a half-turn: z's top bit becomes z[p-2] (see golden _pre).
        flip = p.z[pb - 1] ^ p.z[pb - 2]
        z = Cat(Const(0, h), p.z[:pb - 1], p.z[pb - 2])
    elif config.coordinates == CIRCULAR:
        flip = p.x[-1]
        z = Cat(Const(0, h), p.z)            # the flip's half-turn is a microcode z step
    else:
        flip = p.x[-1] if config.mode == "divide" else flip
        z = Cat(Const(0, h), p.z.as_signed())
    x = Cat(Const(0, g), p.x).as_signed()
    y = Cat(Const(0, g), p.y).as_signed()
    values = {"x": x, "y": y, "z": z[:zw].as_signed()}
    if config.coordinates == HYPERBOLIC:
        values = _compose(pre_stages(config), {"x": p.x, "y": p.y, "z": p.z})
    zero = (p.x == 0) & (p.y == 0) if config.mode == "vector" else Const(0, 1)
    return values, flip, zero


def _outputs(config: CordicConfig, state: dict) -> dict:
    """The output payload from the final state: x, y of any width (sign-extended), z of
    `config.z_width` bits."""
    if config.coordinates == HYPERBOLIC:
        return _compose(post_stages(config), state)
    h, w = config.angle_guard_bits, config.data_width
    out = {"x": _saturate_wide(state["x"], w), "y": _saturate_wide(state["y"], w)}
    if config.coordinates == CIRCULAR:
        out["z"] = state["z"][h:h + config.phase_bits]
    else:
        out["z"] = _saturate_wide(state["z"][h:].as_signed(), w)
    return out


def _t_load(x, y, src_y, neg, shift, width: int):
    """The next value of t: {(src ^ neg) >> shift, round bit}, src = y if `src_y` else x.

    Shifting before t (not after) splits shifter and carry chain into two clocks; t's
    flip-flops pack with the shifter's last level, so the split costs no logic cell.
    (signed ^ unsigned widens with an uninverted sign bit: slice back to `width` bits.)
    """
    inverted = (Mux(src_y, y, x) ^ neg.replicate(width))[:width]
    return Cat(neg, inverted).as_signed() >> shift


def _accumulate(x, y, t, zero_acc, dest_y, width: int):
    """The one adder: A + R(+-src, shift) with A = 0, y or x and t from `_t_load`."""
    acc = Mux(zero_acc, 0, Mux(dest_y, y, x))
    return _add_carry(acc, t[1:], t[0], width)


# ---------------------------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------------------------

class CordicIterative(Cordic):
    """One shared adder and shifter, microcoded; small and slow.

    Latency (input accepted to output valid) is `cycles_per_result` clocks; the core accepts the
    next input after its output is taken. Outputs are held in the state registers until ready.
    """

    arch = "iterative"

    #: The microcode word's `advance` and `finish` bits count only while busy. The ROM's read
    #: register has no reset and no defined power-up value (Amaranth emits its RTLIL
    #: INIT_VALUE as x), so in the first clock after power-up the word is arbitrary; gated by
    #: busy (a reset register), it cannot start the program or raise done without an input.
    #: While busy the word is always a program word and while idle always the idle word, so
    #: the gate changes nothing else (latency and throughput are the same). The formal proofs
    #: turn it off (a subclass) to show that they catch the power-up defect.
    power_up_guard = True

    def __init__(self, config: CordicConfig):
        super().__init__(config)
        self.program = schedule_program(config)

    @property
    def cycles_per_result(self) -> int:
        """Clocks from the input handshake to the output handshake when `o.ready` is high."""
        return self.program.length + 1

    # -- microcode ROM ---------------------------------------------------------------------
    def _cond_sources(self):
        return _cond_sources(self.config)

    def _word_layout(self):
        config = self.config
        fields = {
            "shift": unsigned(_shift_bits([config])),
            "t_src_y": unsigned(1),
            "t_neg": unsigned(1),
            "dest_x": unsigned(1),
            "dest_y": unsigned(1),
            "zero_acc": unsigned(1),
            "advance": unsigned(1),          # pc + 1 next; else back to the idle word
            "finish": unsigned(1),           # the last word: the outputs are ready after it
            "next_cond": unsigned(max(len(self._cond_sources()) - 1, 1).bit_length()),
            "z_add": unsigned(config.z_width),
        }
        return data.StructLayout(fields)

    def _rom(self):
        """The program as ROM words at address {pc, cond} (cond is the low address bit)."""
        program, sources = self.program, self._cond_sources()
        length = program.length
        pc_bits = max(length, 1).bit_length()
        init = []
        for pc in range(1 << pc_bits):
            fields = _word_fields(program, pc, sources.index)
            for cond in (0, 1):
                init.append({**fields, "t_neg": fields["t_neg"][cond],
                             "z_add": fields["z_add"][cond] if fields["z_add"] else 0})
        # ram_style asks Yosys for block RAM: in logic cells the ROM costs ~100 of them.
        rom = Memory(shape=self._word_layout(), depth=len(init), init=init,
                     attrs={"ram_style": "block"})
        return rom, pc_bits

    def elaborate(self, platform):
        m = Module()
        config = self.config
        xw, zw = config.x_width, config.z_width

        rom, pc_bits = self._rom()
        m.submodules.rom = rom
        port = rom.read_port(domain="sync")
        word = port.data

        # Datapath state: no reset needed, every result is loaded or computed before use.
        x = Signal(signed(xw), reset_less=True)
        y = Signal(signed(xw), reset_less=True)
        z = Signal(signed(zw), reset_less=True)
        t = Signal(signed(xw + 1), reset_less=True)
        flip = Signal(reset_less=True)
        zero = Signal(reset_less=True)
        q = Signal(signed(4), reset_less=True)
        pc = Signal(pc_bits)
        busy = Signal()
        done = Signal()

        m.d.comb += [self.i.ready.eq(~busy & ~done), self.o.valid.eq(done)]
        accept = self.i.valid & self.i.ready

        # Sequencer: the ROM answers one clock later, so it is addressed with the next pc.
        # advance and finish are gated by busy (see `power_up_guard`).
        advance, finish = word.advance, word.finish
        if self.power_up_guard:
            advance, finish = advance & busy, finish & busy
        pc_next = Mux(advance, pc + 1, Mux(accept, 1, 0))[:pc_bits]
        dir_bit = y[-1] if config.vectoring else z[-1]
        sources = {"dir": dir_bit, "flip": flip, "zero": zero}
        cond = _select(word.next_cond, [sources[name] for name in self._cond_sources()])
        m.d.comb += port.addr.eq(Cat(cond, pc_next))
        m.d.sync += pc.eq(pc_next)
        with m.If(accept):
            m.d.sync += busy.eq(1)
        with m.If(finish):
            m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += done.eq(0)

        # The shared adder: A + R(+-src, shift), t holding {(src ^ neg) >> shift, round bit}.
        m.d.sync += t.eq(_t_load(x, y, word.t_src_y, word.t_neg, word.shift, xw))
        total = _accumulate(x, y, t, word.zero_acc, word.dest_y, xw)

        loaded, flip_in, zero_in = _load_values(config, self.i.payload)
        with m.If(accept):
            m.d.sync += [x.eq(loaded["x"]), y.eq(loaded["y"]), z.eq(loaded["z"]),
                         flip.eq(flip_in), zero.eq(zero_in)]
            if config.coordinates == HYPERBOLIC:
                m.d.sync += q.eq(loaded["q"])
        with m.Else():
            with m.If(word.dest_x):
                m.d.sync += x.eq(total)
            with m.If(word.dest_y):
                m.d.sync += y.eq(total)
            m.d.sync += z.eq(z + word.z_add)

        self._drive_output(m, _outputs(config, {"x": x, "y": y, "z": z, "q": q}))
        return m


# ---------------------------------------------------------------------------------------------
# Several configurations on one datapath
# ---------------------------------------------------------------------------------------------

def _port_signature(config: CordicConfig) -> wiring.Signature:
    """One port of `SharedCordicIterative`: the `i` and `o` streams of a `Cordic`."""
    layout = cordic_payload(config)
    return wiring.Signature({"i": In(stream.Signature(layout)),
                             "o": Out(stream.Signature(layout))})


def _signed_value(value: int, width: int) -> int:
    """The two's complement `width`-bit pattern `value` read as a signed integer."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


class SharedCordicIterative(wiring.Component):
    """Several iterative CORDICs on one datapath: one operation at a time, any of its configs.

    For units that never work at the same time (the attention head's vector, rotate and divide
    CORDICs): each config keeps its own stream port, behaving exactly like
    `CordicIterative(config)` (the same outputs bit for bit, the same `cycles_per_result` from
    the input handshake to o.valid, outputs held until o.ready), but all of them share one
    datapath of `CordicIterative` (x, y, t, z, the adder, the barrel shifter) and one microcode
    ROM holding every config's program, as `schedule_program` places it.

    Sharing:

    - x, y and t are as wide as the widest config's (`x_width`), z as the widest `z_width`.
      x and y hold every mode's integer values sign-extended (same binary point: the rounding
      R(v, k) depends on position); they never overflow a config's own width (the golden model
      does not wrap them either), so the extra top bits only repeat the sign. z holds the
      config's value in its low `z_width` bits: carries run upwards only, so those bits wrap
      modulo 2**z_width exactly as the config's own register, and only they are read (its
      direction bit is bit z_width - 1, its output is sliced from them).
    - The inputs are loaded as an OR of per-port terms, each gated by its own handshake, ORed
      with the datapath's own next value, which is 0 on the handshake clock: the ROM then
      outputs the idle word (accumulator 0, no destination), t is cleared while idle, z is
      cleared after its output is taken and its z ROM answers 0 while idle. So x, y and z
      need no load multiplexer (three ports and the sum: two LUT4s a bit).
    - Every port's x and y land on the same register bits: those of a mode that starts with
      the half-turn pre-rotation (rotate, vector, divide) are loaded shifted left up to the
      largest guard bits, and the pre-rotation's t-loads, the first words to read them, shift
      them back right by as much (exact: the bits shifted out are zeros; see `_roms`). From
      then on x and y hold the config's own values. Other modes load at their own position.
    - The microcode ROM is addressed by pc alone (not {pc, cond}): every program side by side,
      the idle word at 0. The subtract bit is stored for both values of the data bit `cond`
      and picked by the registered cond (one LUT). z's addends live in a second ROM, one pair
      (cond 0, cond 1) per z step, addressed by {z-step count, cond}; the first ROM's words
      say which clocks step z. Both fit 256 x 16 block RAMs: three for the attention head's
      three configs (a single {pc, cond} ROM of 512 x 39 bits would need five).
    - The flip and zero bits, the direction bit's choice and the output formats stay per
      config (a few LUTs); x and y saturate once for every port (all have one data_width).

    One operation is in flight at a time: while one runs (and until its output is taken),
    every port's i.ready is low; when several ports offer inputs on the same clock, the
    lowest-numbered goes first (port k's i.ready is low while a port below k offers one). The
    attention head never overlaps its CORDICs, so it never waits for this. i.ready also stays
    low for the first clock after reset, while the ROMs' read registers fill with the idle
    word (they have no reset and no defined power-up value; see
    `CordicIterative.power_up_guard`).

    Cost on iCE40, Yosys 0.70 `synth_ice40 -spram`, the attention head's three configs
    (`attention_fixed.DEFAULT_CONFIG`: vector, rotate, divide; ROMs of 224 x 15 and 128 x 25
    bits), against the three `CordicIterative` units synthesized the same way:

    ==================================  ========  ===========  =======  ========
    every input a top-level port        SB_LUT4   SB_RAM40_4K  SB_DFF*  SB_CARRY
    ==================================  ========  ===========  =======  ========
    CordicIterative vector              452       3            139      62
    CordicIterative rotate              360       3            113      53
    CordicIterative divide              370       3            108      48
    the three                           1182      9            360      163
    SharedCordicIterative of the three  540       3            151      68
    ==================================  ========  ===========  =======  ========

    With the inputs the head ties to constants (vector z = 0, rotate x = 2**16 and y = 0,
    divide y = 2**16 and z = 0; hdl/attention.py), whose load terms then vanish: 1081 SB_LUT4
    for the three units, 497 for the shared one. Latency is each config's own (105, 63 and 58
    clocks for vector, rotate and divide).

    Hyperbolic mode is refused: its range reduction and exponential stages are not shared
    (use `CordicIterative`).

    Parameters
    ----------
    configs : sequence of CordicConfig
        One port per config, in this order; all with the same `data_width`.

    Ports
    -----
    port<k> : Out(wiring.Signature({"i": In(stream), "o": Out(stream)}))
        For `configs[k]`: `i` (x, y, z in `cordic_payload(configs[k])`; accepted when valid
        and ready) and `o` (the results in the same layout), as `Cordic.i` and `Cordic.o`.
        `ports[k]` or `port(config)` give the same object.
    """

    def __init__(self, configs):
        try:
            configs = self._check(configs)
        except (TypeError, ValueError):
            self._MustUse__silence = True    # no "created but never used" warning
            raise
        self.configs = configs
        self.programs = tuple(schedule_program(config) for config in configs)
        super().__init__({f"port{k}": Out(_port_signature(config))
                          for k, config in enumerate(configs)})

    @staticmethod
    def _check(configs) -> tuple:
        if isinstance(configs, CordicConfig) or not hasattr(configs, "__iter__"):
            raise TypeError(f"configs must be a sequence of CordicConfig, not {configs!r}")
        configs = tuple(configs)
        if not configs:
            raise ValueError("SharedCordicIterative needs at least one CordicConfig")
        for config in configs:
            if not isinstance(config, CordicConfig):
                raise TypeError(f"every config must be a CordicConfig, not {config!r}")
            if config.coordinates == HYPERBOLIC:
                raise ValueError("SharedCordicIterative does not share hyperbolic mode (its "
                                 "range reduction and exponential stages are its own); use "
                                 "CordicIterative for it")
            _check_stage_counts(config)
        widths = sorted({config.data_width for config in configs})
        if len(widths) > 1:
            raise ValueError(f"every config must have the same data_width (the ports share "
                             f"the x and y outputs), not {', '.join(map(str, widths))}")
        return configs

    @property
    def ports(self) -> tuple:
        """The port of each config, in the order of `configs`."""
        return tuple(getattr(self, f"port{k}") for k in range(len(self.configs)))

    def port(self, config: CordicConfig):
        """The port of `config` (the first, if it was given twice)."""
        if config not in self.configs:
            raise ValueError(f"{config!r} is not one of this unit's configs")
        return self.ports[self.configs.index(config)]

    @property
    def cycles_per_result(self) -> tuple:
        """Per port: clocks from the input handshake to the output handshake (o.ready high),
        the same as `CordicIterative(configs[k]).cycles_per_result`."""
        return tuple(program.length + 1 for program in self.programs)

    def _input_shift(self, config: CordicConfig) -> int:
        """Extra left shift of `config`'s x and y inputs: to the largest guard bits if its
        program starts with the pre-rotation (see `_roms`), so that every port's input bits
        land on the same register bits."""
        if config.mode not in _FLIP_MODES:
            return 0
        return max(c.guard_bits for c in self.configs) - config.guard_bits

    # -- microcode -------------------------------------------------------------------------
    @staticmethod
    def _source_name(config: CordicConfig, kind: str) -> str:
        """The shared data bit behind `kind` of `config`: its direction bit is y's sign when
        vectoring, else the sign of z at the config's own width."""
        if kind != "dir":
            return kind
        return "y_sign" if config.vectoring else f"z_sign{config.z_width}"

    def _cond_sources(self) -> list:
        names = []
        for config in self.configs:
            for kind in _cond_sources(config):
                name = self._source_name(config, kind)
                if name not in names:
                    names.append(name)
        return names

    def _word_layout(self) -> data.StructLayout:
        return data.StructLayout({
            "shift": unsigned(_shift_bits(self.configs)),
            "t_src_y": unsigned(1),
            "t_neg": unsigned(2),            # the subtract bit for cond = 0 (bit 0) and 1
            "dest_x": unsigned(1),
            "dest_y": unsigned(1),
            "zero_acc": unsigned(1),
            "finish": unsigned(1),           # the last word; else pc + 1 next while busy
            "next_cond": unsigned(max(len(self._cond_sources()) - 1, 1).bit_length()),
            "z_step": unsigned(1),           # z += the z ROM's word this clock
        })

    def _roms(self):
        """The word ROM (address pc) and the z ROM (address {z step, cond}), the ROM address
        of each program's first word and the z step of its first z word."""
        sources, z_width = self._cond_sources(), max(c.z_width for c in self.configs)
        # The idle word: accumulator 0 and no destination, so that the sum is 0 on the input
        # handshake (see the class docstring).
        words = [{"zero_acc": 1}]
        z_pairs = [(0, 0)]                   # the idle z word: z stays
        starts, z_starts = [], []
        for config, program in zip(self.configs, self.programs):
            starts.append(len(words))
            z_starts.append(len(z_pairs))

            def source_index(kind, config=config):
                return sources.index(self._source_name(config, kind))
            realigned = set()
            for pc in range(1, program.length + 1):
                fields = _word_fields(program, pc, source_index)
                word = program.word(pc)
                if word.t_src and word.cond and word.cond[0] == "flip":
                    # The pre-rotation's t-loads read x and y first, as loaded: shifting
                    # them right by the input's extra shift undoes it exactly (the bits
                    # shifted out are 0, so the rounding bit is too, and R(~v, k) = -R(v, k)
                    # for k >= 1), and their sums (accumulator 0) replace x and y.
                    assert fields["shift"] == 0
                    fields["shift"] = self._input_shift(config)
                    realigned.add(word.t_src)
                # Nothing else may see x or y before that (they are the first task's).
                assert config.mode not in _FLIP_MODES or \
                    {word.dest, word.t_src} <= realigned | {None}, \
                    "x or y used before the pre-rotation"
                pair = fields["z_add"]
                if pair is not None:
                    z_pairs.append(tuple(_signed_value(v, config.z_width) for v in pair))
                words.append({**fields, "t_neg": fields["t_neg"][0] | fields["t_neg"][1] << 1,
                              "z_step": pair is not None})
        layout = self._word_layout()
        words = [{name: word.get(name, 0) for name in layout.members} for word in words]
        # Padded to a power of two: the z step count may pass the last pair after a program's
        # last word (unread then), and still address a word.
        z_pairs += [(0, 0)] * ((1 << (len(z_pairs) - 1).bit_length()) - len(z_pairs))
        z_words = [value for pair in z_pairs for value in pair]
        # ram_style asks Yosys for block RAM (see CordicIterative._rom).
        rom = Memory(shape=layout, depth=len(words), init=words, attrs={"ram_style": "block"})
        z_rom = Memory(shape=signed(z_width), depth=len(z_words), init=z_words,
                       attrs={"ram_style": "block"})
        return rom, z_rom, starts, z_starts

    # -- hardware --------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        configs, ports = self.configs, self.ports
        xw = max(config.x_width for config in configs)
        zw = max(config.z_width for config in configs)

        rom, z_rom, starts, z_starts = self._roms()
        m.submodules.rom, m.submodules.z_rom = rom, z_rom
        rom_port, z_port = rom.read_port(domain="sync"), z_rom.read_port(domain="sync")
        word, z_add = rom_port.data, z_port.data

        # Datapath state (no reset: loaded or computed before use), except z, which must be 0
        # on the input handshake (cleared by reset and after every output).
        x = Signal(signed(xw), reset_less=True)
        y = Signal(signed(xw), reset_less=True)
        z = Signal(signed(zw))
        t = Signal(signed(xw + 1), reset_less=True)
        flip = Signal(reset_less=True)
        zero = Signal(reset_less=True)
        cond_reg = Signal(reset_less=True)   # the data bit of the word now out of the ROM
        active = Signal(len(configs), reset_less=True)   # one-hot: the port in flight
        pc = Signal(range(rom.depth))
        step = Signal(range(z_rom.depth // 2))
        busy, done = Signal(), Signal()
        primed = Signal()                    # low the first clock after reset (see docstring)
        m.d.sync += primed.eq(1)

        # Handshakes: one operation at a time, the lowest-numbered port first.
        idle = primed & ~busy & ~done
        blocked, accepts = Const(0, 1), []
        for port in ports:
            m.d.comb += port.i.ready.eq(idle & ~blocked)
            blocked = blocked | port.i.valid
            accepts.append(port.i.valid & port.i.ready)
        accept = Cat(*accepts).any()
        taken = Cat(*(port.o.valid & port.o.ready for port in ports)).any()

        def on_accept(values, default=0):
            """The value of the accepted port (at most one), else `default`."""
            chosen = default
            for accepted, value in zip(accepts, values):
                chosen = Mux(accepted, value, chosen)
            return chosen

        # Sequencer, as CordicIterative's: the ROMs answer one clock later, so they are
        # addressed with the next pc and z step. The word's finish bit counts only while busy
        # (`CordicIterative.power_up_guard`); while busy, every word but the last advances.
        finish = word.finish & busy
        pc_next = Mux(busy & ~word.finish, pc + 1, on_accept(starts))[:len(pc)]
        step_next = Mux(busy, step + word.z_step, on_accept(z_starts))[:len(step)]
        bits = {"y_sign": y[-1], "flip": flip, "zero": zero}
        bits.update({f"z_sign{c.z_width}": z[c.z_width - 1] for c in configs})
        cond = _select(word.next_cond, [bits[name] for name in self._cond_sources()])
        m.d.comb += [rom_port.addr.eq(pc_next), z_port.addr.eq(Cat(cond, step_next))]
        m.d.sync += [pc.eq(pc_next), step.eq(step_next), cond_reg.eq(cond)]
        with m.If(accept):
            m.d.sync += [busy.eq(1), active.eq(Cat(*accepts))]
        with m.If(finish):
            m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(taken):
            m.d.sync += done.eq(0)

        # The shared adder (CordicIterative's); t is 0 while idle, so the sum is 0 on the
        # handshake clock (the idle word: accumulator 0).
        t_neg = word.t_neg.bit_select(cond_reg, 1)
        m.d.sync += t.eq(_t_load(x, y, word.t_src_y, t_neg, word.shift, xw))
        with m.If(~busy):
            m.d.sync += t.eq(0)
        total = _accumulate(x, y, t, word.zero_acc, word.dest_y, xw)

        # Inputs: each port's values (CordicIterative's; x and y shifted by `_input_shift`),
        # gated by its own handshake.
        loads = []
        for config, port in zip(configs, ports):
            values, flip_in, zero_in = _load_values(config, port.i.payload)
            shift = self._input_shift(config)
            values.update(x=values["x"] << shift, y=values["y"] << shift)
            loads.append((values, flip_in, zero_in))

        def loaded(name, width):
            gated = [_to_width(Mux(accepted, values[name], 0), width)
                     for accepted, (values, _, _) in zip(accepts, loads)]
            return reduce(operator.or_, gated)

        with m.If(accept | word.dest_x):
            m.d.sync += x.eq(total | loaded("x", xw))
        with m.If(accept | word.dest_y):
            m.d.sync += y.eq(total | loaded("y", xw))
        with m.If(accept | (word.z_step & busy)):
            m.d.sync += z.eq((z + z_add)[:zw] | loaded("z", zw))
        with m.If(taken):
            m.d.sync += z.eq(0)
        with m.If(accept):
            m.d.sync += [flip.eq(on_accept([f for _, f, _ in loads])),
                         zero.eq(on_accept([zz for _, _, zz in loads]))]

        # Outputs: x and y saturate once for every port; z from the config's own bits. After
        # the output rounding, |x|, |y| <= 2**(data_width + 1) (they fit x_width before it):
        # the bits above data_width + 2 only repeat the sign, and saturation needs not see them.
        w = configs[0].data_width
        for k, (config, port) in enumerate(zip(configs, ports)):
            out = _outputs(config, {"x": x[:w + 3].as_signed(), "y": y[:w + 3].as_signed(),
                                    "z": z[:config.z_width].as_signed()})
            m.d.comb += [port.o.valid.eq(done & active[k]), port.o.payload.x.eq(out["x"]),
                         port.o.payload.y.eq(out["y"]), port.o.payload.z.eq(out["z"])]
        return m
