"""cocotb helpers for ``amaranth.lib.stream`` interfaces (valid/ready/payload).

Ports follow Amaranth's naming of a converted component: ``{prefix}__valid``,
``{prefix}__ready``, ``{prefix}__payload`` (one flat vector, first field in the low bits),
plus ``clk`` and ``rst`` (synchronous, active high).

Protocol as implemented here: a transfer happens on a rising edge of ``clk`` at which
``valid`` and ``ready`` are both 1. Both sides sample the other side's signal in the
``ReadOnly`` phase just before the edge (after all combinational logic has settled, so a
combinational ``ready`` that depends on our ``valid`` is seen correctly) and write their own
signals just after the edge. Once ``valid`` is raised it stays up with the same payload
until the transfer, as the Amaranth stream rules require.

Speed: benches push ~100k vectors, so the per-cycle work is two awaits and one or two signal
reads; random gaps and backpressure are drawn in NumPy in advance, and payloads are packed
and unpacked with NumPy outside the simulation loop (:func:`pack_fields`,
:func:`unpack_fields`).

Typical cocotb test::

    src, sink = StreamSource(dut, "i"), StreamSink(dut, "o")   # before start(): idle in reset
    clock = await start(dut)
    cocotb.start_soon(src.send_all(pack_fields([a, b], [16, 16]), valid_prob=0.7, rng=rng))
    out = unpack_fields(await sink.collect(len(a), ready_prob=0.6, rng=rng), [17, 17])
    cycles = clock.cycles(src.first_ns, sink.last_ns)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .runner import load_params

__all__ = [
    "SimClock",
    "StreamSource",
    "StreamSink",
    "StreamTimeout",
    "start",
    "pack_fields",
    "unpack_fields",
    "layout_fields",
    "load_params",
    "load_run_collect",
]

#: Default number of cycles a side may wait for the other before StreamTimeout.
MAX_IDLE_CYCLES = 100_000


class StreamTimeout(AssertionError):
    """The other side of a stream made no progress for too many cycles (a hang).

    It is an AssertionError so that cocotb reports the test as failed, not errored.
    """


def _sim_time_ns() -> float:
    from cocotb.simtime import get_sim_time
    return get_sim_time("ns")


def _bit(handle) -> int:
    # int() of a 1-bit value raises ValueError on X/Z, which is what we want:
    # an undefined handshake signal is a design bug, not a 0.
    return int(handle.value)


# --------------------------------------------------------------------------- clock


@dataclass(frozen=True)
class SimClock:
    """The running clock, as returned by :func:`start`.

    Attributes:
        period_ns: clock period in ns.
    """

    period_ns: float

    def cycle(self) -> int:
        """Index of the current clock cycle (from simulation time; costs nothing per cycle)."""
        return round(_sim_time_ns() / self.period_ns)

    def cycles(self, t0_ns: float | None, t1_ns: float | None) -> int:
        """Number of clock cycles from time ``t0_ns`` to ``t1_ns`` (e.g. ``source.first_ns``
        to ``sink.last_ns``: cycles from first input accepted to last output received)."""
        if t0_ns is None or t1_ns is None:
            raise ValueError("no transfer recorded yet")
        return round((t1_ns - t0_ns) / self.period_ns)


async def start(dut, period_ns: float = 10, reset_cycles: int = 4,
                clk: str = "clk", rst: str = "rst") -> SimClock:
    """Start the clock and hold the synchronous reset for ``reset_cycles`` rising edges.

    Returns just after a rising edge with reset released (a safe moment to drive inputs).
    Create StreamSource/StreamSink before calling this, so that valid/ready are 0 during reset.

    Args:
        dut: the cocotb top handle.
        period_ns: clock period in ns.
        reset_cycles: rising edges with ``rst`` high.
        clk: name of the clock port.
        rst: name of the reset port (active high, synchronous as in Amaranth).
    """
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles

    clk_handle = getattr(dut, clk)
    Clock(clk_handle, period_ns, unit="ns").start()
    rst_handle = getattr(dut, rst)
    rst_handle.value = 1
    await ClockCycles(clk_handle, reset_cycles)
    rst_handle.value = 0
    return SimClock(period_ns)


# --------------------------------------------------------------------------- stream ends


class _StreamEnd:
    """Common part of a stream source and sink: the three port handles and statistics."""

    def __init__(self, dut, prefix: str, clk: str):
        try:
            self.valid = getattr(dut, f"{prefix}__valid")
            self.ready = getattr(dut, f"{prefix}__ready")
            self.payload = getattr(dut, f"{prefix}__payload")
        except AttributeError as exc:
            raise AttributeError(
                f"{dut._name} has no stream {prefix!r} ({prefix}__valid/ready/payload): "
                f"{exc}") from None
        self.clk = getattr(dut, clk)
        self.prefix = prefix
        self.count = 0                    # transfers so far
        self.first_ns: float | None = None  # sim time (ns) of the first transfer edge
        self.last_ns: float | None = None   # sim time (ns) of the last transfer edge

    def _triggers(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        # Trigger objects are created once and awaited many times: cheaper per cycle.
        return RisingEdge(self.clk), ReadOnly()


class StreamSource(_StreamEnd):
    """Drives a stream input (``{prefix}__valid``/``__payload``; reads ``__ready``).

    Args:
        dut: the cocotb top handle.
        prefix: the stream's port name in the component's signature (``"i"``).
        clk: name of the clock port.
    """

    def __init__(self, dut, prefix: str = "i", clk: str = "clk"):
        super().__init__(dut, prefix, clk)
        self.valid.value = 0

    async def send_all(self, payloads: Sequence[int] | np.ndarray, valid_prob: float = 1.0,
                       rng: np.random.Generator | None = None,
                       max_idle_cycles: int = MAX_IDLE_CYCLES) -> None:
        """Send every payload in order; returns after the last transfer edge.

        Call it when writes are allowed (not in ReadOnly), e.g. right after :func:`start`.

        Args:
            payloads: flat payload integers (see :func:`pack_fields`).
            valid_prob: chance per cycle that the source offers the next item; before each
                item it idles a geometric number of cycles (mean ``1/valid_prob - 1``).
            rng: NumPy generator for the gaps (default: a fixed seed, for reproducibility).
            max_idle_cycles: raise :class:`StreamTimeout` if ``ready`` stays low this long.
        """
        items = payloads.tolist() if isinstance(payloads, np.ndarray) else list(payloads)
        gaps = _gaps(len(items), valid_prob, rng)
        edge, read_only = self._triggers()
        valid, ready, payload = self.valid, self.ready, self.payload
        last = len(items) - 1
        driving = False  # current value of valid (write only on change: it is a GPI call)
        for k, item in enumerate(items):
            if gaps[k]:
                if driving:
                    valid.value = 0
                    driving = False
                for _ in range(gaps[k]):
                    await edge
            payload.value = item
            if not driving:
                valid.value = 1
                driving = True
            waited = 0
            while True:
                await read_only
                if _bit(ready):
                    break
                waited += 1
                if waited > max_idle_cycles:
                    raise StreamTimeout(
                        f"stream {self.prefix!r}: ready low for {max_idle_cycles} cycles "
                        f"at item {k} of {len(items)}")
                await edge
            await edge  # the transfer edge
            if k == 0:
                self.first_ns = _sim_time_ns()
            if k == last:
                self.last_ns = _sim_time_ns()
        if items:
            self.count += len(items)
            valid.value = 0


class StreamSink(_StreamEnd):
    """Receives a stream output (reads ``{prefix}__valid``/``__payload``; drives ``__ready``).

    Args:
        dut: the cocotb top handle.
        prefix: the stream's port name in the component's signature (``"o"``).
        clk: name of the clock port.
    """

    def __init__(self, dut, prefix: str = "o", clk: str = "clk"):
        super().__init__(dut, prefix, clk)
        self.ready.value = 0

    async def collect(self, n: int, ready_prob: float = 1.0,
                      rng: np.random.Generator | None = None,
                      max_idle_cycles: int = MAX_IDLE_CYCLES) -> list[int]:
        """Receive ``n`` payloads and return them (flat integers); ``ready`` is 0 afterwards,
        so any extra output stays in the design.

        Call it when writes are allowed (not in ReadOnly).

        Args:
            n: number of transfers to wait for.
            ready_prob: chance per cycle that ``ready`` is 1 (random backpressure).
            rng: NumPy generator for the backpressure (default: a fixed seed).
            max_idle_cycles: raise :class:`StreamTimeout` after this many cycles without a
                transfer.
        """
        out: list[int] = []
        edge, read_only = self._triggers()
        valid, ready, payload = self.valid, self.ready, self.payload
        readies = _Bernoulli(ready_prob, rng)
        current = -1  # last value written to ready (write only on change: it is a GPI call)
        idle = 0
        while len(out) < n:
            want = readies.next()
            if want != current:
                ready.value = want
                current = want
            await read_only
            fire = want and _bit(valid)
            if fire:
                out.append(int(payload.value))
                idle = 0
            else:
                idle += 1
                if idle > max_idle_cycles:
                    raise StreamTimeout(
                        f"stream {self.prefix!r}: no transfer for {max_idle_cycles} cycles "
                        f"after {len(out)} of {n} items")
            await edge
            if fire and self.first_ns is None:
                self.first_ns = _sim_time_ns()
        if n:
            self.last_ns = _sim_time_ns()
        ready.value = 0
        self.count += len(out)
        return out


# --------------------------------------------------------------------------- randomness


def _default_rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(0)


def _gaps(n: int, valid_prob: float, rng: np.random.Generator | None) -> list[int]:
    """Idle cycles before each of ``n`` items, drawn at once (geometric, mean 1/p - 1)."""
    if not 0 < valid_prob <= 1:
        raise ValueError(f"valid_prob must be in (0, 1], got {valid_prob}")
    if valid_prob == 1 or n == 0:
        return [0] * n
    return (_default_rng(rng).geometric(valid_prob, size=n) - 1).tolist()


class _Bernoulli:
    """Endless 0/1 draws with P(1) = p, generated in NumPy blocks (cheap per call)."""

    _BLOCK = 8192

    def __init__(self, p: float, rng: np.random.Generator | None):
        if not 0 < p <= 1:
            raise ValueError(f"ready_prob must be in (0, 1], got {p}")
        self.p = p
        self.rng = None if p == 1 else _default_rng(rng)
        self.block: list[int] = []
        self.pos = 0

    def next(self) -> int:
        if self.rng is None:
            return 1
        if self.pos == len(self.block):
            self.block = (self.rng.random(self._BLOCK) < self.p).astype(np.int8).tolist()
            self.pos = 0
        value = self.block[self.pos]
        self.pos += 1
        return value


# --------------------------------------------------------------------------- payload packing


def _normalize_fields(widths: Sequence[int], signed: bool | Sequence[bool]):
    widths = [int(w) for w in widths]
    signs = [bool(signed)] * len(widths) if isinstance(signed, (bool, np.bool_)) \
        else [bool(s) for s in signed]
    if len(signs) != len(widths):
        raise ValueError("signed must be a bool or have one entry per field")
    for w, s in zip(widths, signs):
        if not 1 <= w <= (64 if s else 63):
            raise ValueError(f"field width {w} unsupported (1..64 signed, 1..63 unsigned)")
    offsets = np.cumsum([0, *widths[:-1]]).tolist()
    return widths, signs, offsets, sum(widths)


def _columns(fields, k: int) -> list[np.ndarray]:
    """Accept a 2-D array (n, k) or a sequence of k 1-D arrays; return k int64 columns."""
    if isinstance(fields, np.ndarray) and fields.ndim == 2:
        cols = [fields[:, j] for j in range(fields.shape[1])]
    else:
        cols = [np.asarray(f) for f in fields]
    if len(cols) != k:
        raise ValueError(f"got {len(cols)} fields for {k} widths")
    lengths = {c.shape for c in cols}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"fields must be 1-D arrays of one length, got shapes {lengths}")
    return [c.astype(np.int64, copy=False) for c in cols]


def _check_range(col: np.ndarray, w: int, s: bool, j: int) -> None:
    lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else (0, (1 << w) - 1)
    if col.size and (col.min() < lo or col.max() > hi):
        raise ValueError(f"field {j} has values outside the {'signed' if s else 'unsigned'} "
                         f"{w}-bit range [{lo}, {hi}]")


def pack_fields(fields, widths: Sequence[int], signed: bool | Sequence[bool] = True
                ) -> list[int]:
    """Pack fields into flat payload integers; the first field goes in the low bits.

    Args:
        fields: a 2-D array of shape (n, k), or k 1-D arrays of length n.
        widths: bit width of each of the k fields.
        signed: whether fields are two's complement (one bool, or one per field).
            Values are checked against their field's range (ValueError if they do not fit).

    Returns:
        n Python ints, ready to assign to a payload port or to give to
        :meth:`StreamSource.send_all`.
    """
    widths, signs, offsets, total = _normalize_fields(widths, signed)
    cols = _columns(fields, len(widths))
    for j, (c, w, s) in enumerate(zip(cols, widths, signs)):
        _check_range(c, w, s, j)
    # Two's complement bits of each field as uint64 (view, not conversion, keeps negatives).
    raw = [c.view(np.uint64) & np.uint64((1 << w) - 1) if w < 64 else c.view(np.uint64)
           for c, w in zip(cols, widths)]
    n = cols[0].shape[0]
    if total <= 64:
        acc = np.zeros(n, dtype=np.uint64)
        for r, off in zip(raw, offsets):
            acc |= r << np.uint64(off)
        return acc.tolist()
    # Wider than one machine word: lay the bits out in a (n, total) bit matrix.
    bits = np.zeros((n, total), dtype=np.uint8)
    for r, w, off in zip(raw, widths, offsets):
        field_bits = np.unpackbits(r.astype("<u8").view(np.uint8).reshape(n, 8),
                                   axis=1, bitorder="little")
        bits[:, off:off + w] = field_bits[:, :w]
    packed = np.packbits(bits, axis=1, bitorder="little")
    nbytes = packed.shape[1]
    buf = packed.tobytes()
    return [int.from_bytes(buf[i * nbytes:(i + 1) * nbytes], "little") for i in range(n)]


def unpack_fields(payloads: Sequence[int], widths: Sequence[int],
                  signed: bool | Sequence[bool] = True) -> np.ndarray:
    """Split flat payload integers into fields; the first field is in the low bits.

    Args:
        payloads: flat payload integers (e.g. from :meth:`StreamSink.collect`).
        widths: bit width of each field.
        signed: whether fields are two's complement (one bool, or one per field).

    Returns:
        int64 array of shape (n, k): column j is field j.
    """
    widths, signs, offsets, total = _normalize_fields(widths, signed)
    n = len(payloads)
    raw = []
    if total <= 64:
        words = np.fromiter(payloads, dtype=np.uint64, count=n)
        for w, off in zip(widths, offsets):
            r = words >> np.uint64(off)
            raw.append(r & np.uint64((1 << w) - 1) if w < 64 else r)
    else:
        nbytes = (total + 7) // 8
        # to_bytes raises OverflowError if a payload is wider than the fields: good check.
        buf = b"".join(int(p).to_bytes(nbytes, "little") for p in payloads)
        bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8).reshape(n, nbytes),
                             axis=1, bitorder="little")
        for w, off in zip(widths, offsets):
            padded = np.zeros((n, 64), dtype=np.uint8)
            padded[:, :w] = bits[:, off:off + w]
            raw.append(np.packbits(padded, axis=1, bitorder="little").view("<u8")
                       .astype(np.uint64).ravel())
    out = np.empty((n, len(widths)), dtype=np.int64)
    for j, (r, w, s) in enumerate(zip(raw, widths, signs)):
        if s:
            # Sign-extend: move the field's sign bit to bit 63, then shift back arithmetically.
            shift = np.uint64(64 - w)
            out[:, j] = (r << shift).view(np.int64) >> np.int64(64 - w)
        else:
            out[:, j] = r.view(np.int64)
    return out


def layout_fields(layout) -> tuple[list[str], list[int], list[bool]]:
    """Names, widths and signedness of an Amaranth ``StructLayout``, low bits first.

    Use it to feed :func:`pack_fields`/:func:`unpack_fields` from the component's own
    payload layout (e.g. ``component.i.payload.shape()``) instead of repeating widths.
    Raises ValueError if the fields leave gaps (only contiguous layouts pack this way).
    """
    from amaranth.hdl import Shape
    from amaranth.lib import data

    layout = data.Layout.cast(layout)
    entries = sorted(((f.offset, name, Shape.cast(f.shape)) for name, f in layout),
                     key=lambda e: e[0])
    names, widths, signs, offset = [], [], [], 0
    for off, name, shape in entries:
        if off != offset:
            raise ValueError(f"field {name!r} at bit {off}, expected {offset}: layout has gaps")
        names.append(str(name))
        widths.append(shape.width)
        signs.append(shape.signed)
        offset += shape.width
    return names, widths, signs


# ---------------------------------------------------------------------------------------------
# Engines with a `load` stream, `start`/`done` and an `o` stream of items (the attention head,
# the torus layer): one run, as their test benches drive it

async def _collect_always_ready(dut, n: int) -> list[int]:
    """`o` always ready: sample on the clocks where valid is up and sleep until it rises
    otherwise (engines compute for hundreds to thousands of clocks between rows)."""
    from cocotb.triggers import ReadOnly, RisingEdge
    edge, valid, payload = RisingEdge(dut.clk), dut.o__valid, dut.o__payload
    dut.o__ready.value = 1
    got = []
    while len(got) < n:
        await ReadOnly()
        if int(valid.value):
            got.append(int(payload.value))
            await edge
        else:
            await RisingEdge(valid)
    dut.o__ready.value = 0
    return got


async def load_run_collect(dut, loader: StreamSource, sink: StreamSink, writes, items: int,
                           ready: float, rng, params: dict) -> dict:
    """Send `writes` ((M, 3) rows of (target, addr, data)) through `load`, pulse `start`,
    take `items` items from `o` (always ready when `ready` >= 1, else ready with that chance
    per clock) and wait for `done`. params: load_widths, out_widths, out_signs (of
    `layout_fields`). Returns items ((N, 2) of (value, kind)), cycles and, where the engine
    has an `error` port, error."""
    from cocotb.triggers import ReadOnly, RisingEdge
    edge = RisingEdge(dut.clk)
    writes = np.asarray(writes)
    payloads = pack_fields([writes[:, 2], writes[:, 1], writes[:, 0]],
                           [int(w) for w in params["load_widths"]], False)
    await loader.send_all(payloads)
    dut.start.value = 1
    await edge
    dut.start.value = 0
    if ready >= 1:
        got = await _collect_always_ready(dut, items)
    else:
        got = await sink.collect(items, ready_prob=ready, rng=rng)
    while True:
        await ReadOnly()
        if int(dut.done.value):
            break
        await edge
    result = {"cycles": int(dut.cycles.value),
              "items": unpack_fields(got, [int(w) for w in params["out_widths"]],
                                     [bool(s) for s in params["out_signs"]])}
    if hasattr(dut, "error"):
        result["error"] = int(dut.error.value)
    await edge
    return result
