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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations
from typing import Callable

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from ..golden.cordic import CIRCULAR, HYPERBOLIC, LINEAR, CordicConfig
from .cordic import Cordic, _add_carry, _compose, _saturate_wide, post_stages, pre_stages

__all__ = ["CordicIterative", "schedule_program"]

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
        config = self.config
        sources = ["dir"]
        if config.mode in _FLIP_MODES:
            sources.append("flip")
        if config.mode == "vector":
            sources.append("zero")
        return sources

    def _word_layout(self):
        config = self.config
        largest_shift = max([op.shift for op in config.schedule] + [config.guard_bits, 1])
        fields = {
            "shift": unsigned(largest_shift.bit_length()),
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
            word = program.word(pc) if 1 <= pc <= length else Word()
            following = program.word(pc + 1) if 1 <= pc < length else Word()
            next_cond = sources.index(following.cond[0]) if following.cond else 0
            for cond in (0, 1):
                init.append({
                    "shift": word.shift, "t_src_y": word.t_src == "y",
                    "t_neg": word.t_neg[cond] if word.t_neg else 0,
                    "dest_x": word.dest == "x", "dest_y": word.dest == "y",
                    "zero_acc": word.zero_acc, "advance": 1 <= pc < length,
                    "finish": pc == length, "next_cond": next_cond,
                    "z_add": word.z_add[cond] if word.z_add else 0,
                })
        # ram_style asks Yosys for block RAM: in logic cells the ROM costs ~100 of them.
        rom = Memory(shape=self._word_layout(), depth=len(init), init=init,
                     attrs={"ram_style": "block"})
        return rom, pc_bits

    # -- input loading ---------------------------------------------------------------------
    def _load_values(self):
        """x, y, z as loaded on the input handshake, and the flip and zero bits."""
        config, p = self.config, self.i.payload
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
            values = _compose(pre_stages(config), self._input_state())
        zero = (p.x == 0) & (p.y == 0) if config.mode == "vector" else Const(0, 1)
        return values, flip, zero

    # -- output ----------------------------------------------------------------------------
    def _outputs(self, state):
        config = self.config
        if config.coordinates == HYPERBOLIC:
            return _compose(post_stages(config), state)
        h, w = config.angle_guard_bits, config.data_width
        out = {"x": _saturate_wide(state["x"], w), "y": _saturate_wide(state["y"], w)}
        if config.coordinates == CIRCULAR:
            out["z"] = state["z"][h:h + config.phase_bits]
        else:
            out["z"] = _saturate_wide(state["z"][h:].as_signed(), w)
        return out

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
        cond = dir_bit
        for index, name in enumerate(self._cond_sources()[1:], start=1):
            cond = Mux(word.next_cond == index, sources[name], cond)
        m.d.comb += port.addr.eq(Cat(cond, pc_next))
        m.d.sync += pc.eq(pc_next)
        with m.If(accept):
            m.d.sync += busy.eq(1)
        with m.If(finish):
            m.d.sync += [busy.eq(0), done.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += done.eq(0)

        # The shared adder: A + R(+-src, shift), t holding {(src ^ neg) >> shift, round bit}.
        # Shifting before t (not after) splits shifter and carry chain into two clocks; t's
        # flip-flops pack with the shifter's last level, so the split costs no logic cell.
        # (signed ^ unsigned widens with an uninverted sign bit: slice back to xw bits.)
        inverted = (Mux(word.t_src_y, y, x) ^ word.t_neg.replicate(xw))[:xw]
        m.d.sync += t.eq(Cat(word.t_neg, inverted).as_signed() >> word.shift)
        acc = Mux(word.zero_acc, 0, Mux(word.dest_y, y, x))
        total = _add_carry(acc, t[1:], t[0], xw)

        loaded, flip_in, zero_in = self._load_values()
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

        self._drive_output(m, self._outputs({"x": x, "y": y, "z": z, "q": q}))
        return m
