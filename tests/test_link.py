"""The host link: golden codec and reference model, and the RTL (HostLink, UartRx, UartTx)
in Amaranth's simulator with the fake engine of sim/link.py."""

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from oscarray.golden.link import (
    CAPABILITY_BYTES,
    BadCrcError,
    BusyError,
    Command,
    DeviceError,
    Flag,
    FrameTimeoutError,
    IncompleteResponse,
    LinkDevice,
    LinkFormat,
    LinkFormatError,
    ResponseError,
    Status,
    WatchdogError,
    crc16,
    decode_response,
    decode_responses,
    decode_status,
    encode_frame,
    encode_response,
    pack_items,
    pack_writes,
    read_payload,
    unpack_items,
    unpack_writes,
    write_frames,
)
from oscarray.hdl.link import (
    HostLink,
    HostLinkError,
    UartRx,
    UartTx,
    connect_engine,
    engine_signature,
    link_format,
    uart_divisor,
)
from oscarray.sim.link import (
    FakeEngineModel,
    LinkHarness,
    compare_responses,
    fuzz_script,
    harness_layouts,
)

FMT = LinkFormat(target_bits=2, addr_bits=6, data_bits=20, value_bits=21, kind_bits=5,
                 cycle_bits=20, max_payload=64, byte_timeout=24, watchdog_cycles=4000)


# ---------------------------------------------------------------------------------------------
# golden: CRC, frames, payloads


def test_crc16_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF
    assert crc16(b"6789", crc16(b"12345")) == 0x29B1


def test_frame_layout():
    frame = encode_frame(Command.READ, read_payload(300))
    assert frame[0] == 0xA5 and frame[1] == Command.READ
    assert frame[2:4] == (2).to_bytes(2, "little") and frame[4:6] == (300).to_bytes(2, "little")
    assert int.from_bytes(frame[6:], "little") == crc16(frame[1:6])
    response = encode_response(Status.OK, b"\x01\x02\x03")
    assert response[0] == 0x5A and len(response) == 9


def test_decode_response_ok_and_errors():
    stream_ = encode_response(Status.OK, b"abc") + encode_response(Status.BUSY)
    first = decode_response(stream_)
    assert first.ok and first.payload == b"abc" and first.size == 9
    with pytest.raises(BusyError) as info:
        decode_response(stream_[first.size:])
    assert isinstance(info.value, DeviceError) and info.value.response.status == Status.BUSY
    assert decode_response(stream_[first.size:], check=False).status == Status.BUSY
    assert [r.status for r in decode_responses(stream_)] == [Status.OK, Status.BUSY]
    # a WATCHDOG answer to STATUS keeps its payload
    with pytest.raises(WatchdogError) as info:
        decode_response(encode_response(Status.WATCHDOG, b"\x09\x00\x00\x00"))
    assert info.value.response.payload == b"\x09\x00\x00\x00"
    with pytest.raises(FrameTimeoutError):
        decode_response(encode_response(Status.TIMEOUT))
    with pytest.raises(BadCrcError):
        decode_response(encode_response(Status.BAD_CRC))


def test_decode_response_malformed():
    good = encode_response(Status.OK, b"xyz")
    with pytest.raises(IncompleteResponse) as info:
        decode_response(good[:5])
    assert info.value.needed == len(good) - 5
    with pytest.raises(IncompleteResponse):
        decode_response(b"")
    with pytest.raises(ResponseError, match="sync"):
        decode_response(b"\xA5" + good[1:])
    bad = bytearray(good)
    bad[5] ^= 0x10
    with pytest.raises(ResponseError, match="CRC"):
        decode_response(bytes(bad))
    with pytest.raises(ResponseError, match="unknown status"):
        decode_response(encode_response(0x44))


@pytest.mark.parametrize("bits", [(2, 6, 20), (3, 15, 36), (1, 1, 1), (8, 8, 8), (5, 13, 63)])
def test_writes_round_trip(bits):
    t, a, d = bits
    fmt = LinkFormat(target_bits=t, addr_bits=a, data_bits=d, value_bits=8, kind_bits=4)
    rng = np.random.default_rng(t * 100 + a)
    writes = np.stack([rng.integers(0, 1 << t, 50), rng.integers(0, 1 << a, 50),
                       rng.integers(0, 1 << min(d, 62), 50, dtype=np.int64)], axis=1)
    writes[0] = [(1 << t) - 1, (1 << a) - 1, (1 << d) - 1]           # every bit set
    payload = pack_writes(fmt, writes)
    assert len(payload) == 50 * fmt.write_bytes
    assert fmt.write_bytes == (t + 7) // 8 + (a + 7) // 8 + (d + 7) // 8
    np.testing.assert_array_equal(unpack_writes(fmt, payload), writes)


def test_writes_wire_order_and_refusals():
    fmt = FMT                                   # 1 + 1 + 3 bytes
    assert pack_writes(fmt, [[3, 0x2A, 0x12345]]) == bytes([3, 0x2A, 0x45, 0x23, 0x01])
    with pytest.raises(LinkFormatError, match="target"):
        pack_writes(fmt, [[4, 0, 0]])
    with pytest.raises(LinkFormatError, match="data"):
        pack_writes(fmt, [[0, 0, 1 << 20]])
    with pytest.raises(LinkFormatError, match="data"):
        pack_writes(fmt, [[0, 0, -1]])
    with pytest.raises(LinkFormatError, match="whole writes"):
        unpack_writes(fmt, bytes(7))
    with pytest.raises(LinkFormatError, match="padding"):
        unpack_writes(fmt, bytes([0, 0x40, 0, 0, 0]))            # addr bit 6
    with pytest.raises(LinkFormatError, match="padding"):
        unpack_writes(fmt, bytes([0, 0, 0, 0, 0x10]))            # data bit 20
    assert fmt.write_masks() == [0x03, 0x3F, 0xFF, 0xFF, 0x0F]
    assert pack_writes(fmt, np.zeros((0, 3), dtype=np.int64)) == b""


@pytest.mark.parametrize("signed", [True, False])
def test_items_round_trip(signed):
    fmt = LinkFormat(target_bits=1, addr_bits=1, data_bits=1, value_bits=21,
                     value_signed=signed, kind_bits=5)
    rng = np.random.default_rng(1)
    lo, hi = (-(1 << 20), 1 << 20) if signed else (0, 1 << 21)
    items = np.stack([rng.integers(lo, hi, 100), rng.integers(0, 32, 100)], axis=1)
    items[0, 0], items[1, 0] = lo, hi - 1
    payload = pack_items(fmt, items)
    assert len(payload) == 100 * 4
    np.testing.assert_array_equal(unpack_items(fmt, payload), items)
    if signed:
        assert pack_items(fmt, [[-1, 3]]) == bytes([0xFF, 0xFF, 0xFF, 3])
    with pytest.raises(LinkFormatError):
        pack_items(fmt, [[hi, 0]])
    with pytest.raises(LinkFormatError, match="whole items"):
        unpack_items(fmt, bytes(5))


def test_items_64_bit_value():
    fmt = LinkFormat(target_bits=1, addr_bits=1, data_bits=1, value_bits=64, kind_bits=1)
    items = np.array([[-(1 << 63), 1], [(1 << 63) - 1, 0], [-5, 1]], dtype=np.int64)
    np.testing.assert_array_equal(unpack_items(fmt, pack_items(fmt, items)), items)


def test_format_validation_and_capabilities():
    caps = FMT.capabilities()
    assert len(caps) == CAPABILITY_BYTES
    assert LinkFormat.from_capabilities(caps) == FMT
    assert FMT.max_writes == 12 and FMT.max_items == 16 and FMT.status_bytes == 4
    with pytest.raises(LinkFormatError, match="protocol"):
        LinkFormat.from_capabilities(bytes([9]) + caps[1:])
    with pytest.raises(LinkFormatError, match="max_payload .* too small"):
        LinkFormat(target_bits=1, addr_bits=1, data_bits=1, value_bits=8, kind_bits=1,
                   max_payload=18)
    with pytest.raises(LinkFormatError, match="data_bits"):
        LinkFormat(target_bits=1, addr_bits=1, data_bits=0, value_bits=8, kind_bits=1)
    with pytest.raises(LinkFormatError, match="byte_timeout"):
        LinkFormat(target_bits=1, addr_bits=1, data_bits=1, value_bits=8, kind_bits=1,
                   byte_timeout=0)
    with pytest.raises(LinkFormatError, match="engine_id"):
        LinkFormat(target_bits=1, addr_bits=1, data_bits=1, value_bits=8, kind_bits=1,
                   engine_id=256)


def test_write_frames_split_at_max_payload():
    writes = np.stack([np.zeros(30, dtype=np.int64), np.arange(30) % 64,
                       np.arange(30)], axis=1)
    frames = write_frames(FMT, writes)
    assert len(frames) == 3                                      # 12 + 12 + 6 writes
    payload = b"".join(f[4:-2] for f in frames)
    np.testing.assert_array_equal(unpack_writes(FMT, payload), writes)


# ---------------------------------------------------------------------------------------------
# golden: the device model


def _device():
    engine = FakeEngineModel(FMT)
    return LinkDevice(FMT, engine), engine


def _statuses(data: bytes):
    return [Status(r.status) for r in decode_responses(data)]


def test_device_model_commands():
    device, engine = _device()
    ping = decode_response(device.feed(encode_frame(Command.PING)))
    assert LinkFormat.from_capabilities(ping.payload) == FMT
    ctrl = [[3, 0, 2], [3, 1, 0], [3, 2, 3], [3, 3, 1]]          # run 2, base 0, 3 items, error
    write = decode_response(device.feed(encode_frame(
        Command.WRITE, pack_writes(FMT, [[0, 0, 5], [0, 1, (1 << 20) - 1], *ctrl]))))
    assert write.payload == (6).to_bytes(2, "little")
    assert engine.memory[1] == (1 << 20) - 1
    decode_response(device.feed(encode_frame(Command.START)))
    report = decode_status(FMT, decode_response(device.feed(encode_frame(Command.STATUS)))
                           .payload)
    assert (report.busy, report.done, report.error, report.pending, report.cycles) == \
        (False, True, True, True, 2)
    got = decode_response(device.feed(encode_frame(Command.READ, read_payload(1000))))
    np.testing.assert_array_equal(unpack_items(FMT, got.payload), [[5, 0], [-1, 1], [0, 2]])
    assert not engine.pending()


def test_device_model_errors():
    device, engine = _device()
    frame = bytearray(encode_frame(Command.WRITE, pack_writes(FMT, [[0, 7, 9]])))
    frame[6] ^= 1
    garbage = bytes([0x00, 0x5A, 0xFF])
    out = device.feed(garbage + bytes(frame))
    assert _statuses(out) == [Status.BAD_CRC] and engine.memory[7] == 0
    assert device.feed(encode_frame(0x77)) and device.answers[-1][1] == Status.UNKNOWN_CMD
    assert _statuses(device.feed(encode_frame(Command.PING, b"x"))) == [Status.BAD_PAYLOAD]
    # oversize: answered right after LEN, the rest is hunted
    oversize = bytes([0xA5, Command.WRITE]) + (65).to_bytes(2, "little")
    assert _statuses(device.feed(oversize)) == [Status.BAD_LENGTH] and not device.in_frame
    # truncated: nothing until the timeout
    assert device.feed(encode_frame(Command.STATUS)[:5]) == b"" and device.in_frame
    assert _statuses(device.timeout()) == [Status.TIMEOUT] and not device.in_frame
    assert device.timeout() == b""


def test_device_model_busy_and_watchdog():
    device, engine = _device()
    device.feed(encode_frame(Command.START))                     # run = 0: stuck
    assert engine.busy
    assert _statuses(device.feed(encode_frame(Command.WRITE, pack_writes(FMT, [[0, 0, 1]])))) \
        == [Status.BUSY]
    assert engine.memory[0] == 0
    assert _statuses(device.feed(encode_frame(Command.START))) == [Status.BUSY]
    device.expire_watchdog()
    status = decode_response(device.feed(encode_frame(Command.STATUS)), check=False)
    assert status.status == Status.WATCHDOG
    assert decode_status(FMT, status.payload).watchdog
    assert _statuses(device.feed(encode_frame(Command.ABORT))) == [Status.OK]
    status = decode_response(device.feed(encode_frame(Command.STATUS)))
    assert status.payload[0] == 0 and not engine.busy


# ---------------------------------------------------------------------------------------------
# hdl: parameters


def test_link_format_from_layouts():
    load, out = harness_layouts()
    assert link_format(load, out, cycle_bits=20, max_payload=64, byte_timeout=24,
                       watchdog_cycles=4000) == FMT


def test_link_format_from_attention_head():
    from oscarray.golden.attention_fixed import DEFAULT_CONFIG
    from oscarray.hdl.attention import load_layout, output_layout
    fmt = link_format(load_layout(DEFAULT_CONFIG, 64, 32), output_layout(DEFAULT_CONFIG, 64, 32))
    assert (fmt.target_bytes, fmt.addr_bytes, fmt.data_bytes) == (1, 2, 5)
    assert (fmt.value_bytes, fmt.kind_bytes, fmt.value_signed) == (6, 1, True)
    assert fmt.max_writes == 32 and fmt.max_items == 36


def test_host_link_refuses_bad_parameters():
    load, out = harness_layouts()
    with pytest.raises(HostLinkError, match="fields target, addr, data"):
        HostLink(data.StructLayout({"data": 8, "addr": 4}), out)
    with pytest.raises(HostLinkError, match="must be unsigned"):
        HostLink(data.StructLayout({"data": 8, "addr": 4, "target": data.signed(2)}), out)
    with pytest.raises(HostLinkError, match="kind"):
        HostLink(load, data.StructLayout({"value": 8, "kind": data.signed(2)}))
    with pytest.raises(HostLinkError, match="StructLayout"):
        HostLink(data.UnionLayout({"data": 8}), out)
    with pytest.raises(HostLinkError, match="max_payload .* too small"):
        HostLink(load, out, max_payload=10)
    with pytest.raises(HostLinkError, match="watchdog_cycles"):
        HostLink(load, out, watchdog_cycles=0)
    with pytest.raises(HostLinkError, match="divisor"):
        UartRx(3)
    with pytest.raises(HostLinkError, match="divisor"):
        UartTx(2.5)


def test_uart_divisor():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(48e6, 3e6) == 16
    with pytest.raises(HostLinkError, match="off by"):
        uart_divisor(12e6, 1.6e6)
    with pytest.raises(HostLinkError, match="at least 4"):
        uart_divisor(12e6, 6e6)


def test_connects_to_engines():
    from oscarray.golden.attention_fixed import DEFAULT_CONFIG
    from oscarray.hdl.attention import AttentionHead, load_layout, output_layout
    head = AttentionHead(DEFAULT_CONFIG, max_tokens=8, max_d_h=8)
    link = HostLink(load_layout(DEFAULT_CONFIG, 8, 8), output_layout(DEFAULT_CONFIG, 8, 8))
    m = Module()
    wiring.connect(m, link.engine, head)              # AttentionHead's ports exactly
    Fragment.get(m, None)
    head._MustUse__silence = link._MustUse__silence = True

    # an engine without error and cycles (like the torus layer) through connect_engine
    load, out = harness_layouts()
    members = dict(engine_signature(load, out).members)
    del members["error"], members["cycles"]

    class NoError(wiring.Component):
        def __init__(self):
            super().__init__(members)

        def elaborate(self, platform):
            return Module()

    link = HostLink(load, out)
    m = Module()
    engine = NoError()
    connect_engine(m, link, engine)
    Fragment.get(m, None)
    link._MustUse__silence = engine._MustUse__silence = True
    del members["busy"]
    link, engine, m = HostLink(load, out), NoError(), Module()
    link._MustUse__silence = engine._MustUse__silence = m._MustUse__silence = True
    with pytest.raises(HostLinkError, match="no 'busy' port"):
        connect_engine(m, link, engine)


# ---------------------------------------------------------------------------------------------
# hdl in Amaranth's simulator


def play(harness, script, max_wait=20_000):
    """Play a FuzzScript through a LinkHarness (byte ports) in Amaranth's simulator, as
    sim/link_tb.py does in cocotb. Returns (received bytes, hang step or -1)."""
    received, hang = [], [-1]

    async def testbench(ctx):
        rx, tx = harness.rx, harness.tx
        ctx.set(tx.ready, 1)

        async def tick():
            _, _, ready, valid, payload = await ctx.tick().sample(rx.ready, tx.valid,
                                                                  tx.payload)
            if valid:
                received.append(payload)
            return ready

        pos = 0
        for s, end in enumerate(script.step_end):
            while pos < end:
                for _ in range(script.gaps[pos]):
                    await tick()
                ctx.set(rx.payload, script.data[pos])
                ctx.set(rx.valid, 1)
                waited = 0
                while not await tick():
                    waited += 1
                    if waited > max_wait:
                        hang[0] = s
                        return
                ctx.set(rx.valid, 0)
                pos += 1
            for _ in range(script.step_idle[s]):
                await tick()
            waited = 0
            while len(received) < script.step_expect[s]:
                await tick()
                waited += 1
                if waited > max_wait:
                    hang[0] = s
                    return
        for _ in range(64):
            await tick()

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return bytes(received), hang[0]


def test_link_fuzz_in_amaranth():
    """A short fuzz (every category, a watchdog episode, memory replays) against golden
    LinkDevice; the 10,000-frame run is in test_link_rtl.py on Verilator."""
    harness = LinkHarness(watchdog_cycles=1500)
    script = fuzz_script(harness.format, 250, seed=3, memory_every=120)
    assert script.frames["watchdog"] > 0 and script.memory_checks >= 2
    received, hang = play(harness, script)
    assert hang == -1
    assert compare_responses(script, received) == []


def _link_sim(harness, testbench):
    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


async def _send(ctx, harness, data: bytes, gap: int = 0):
    for k, byte in enumerate(data):
        if k:
            for _ in range(gap):
                await ctx.tick()
        ctx.set(harness.rx.payload, byte)
        ctx.set(harness.rx.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(harness.rx.ready)
            if ready:
                break
        ctx.set(harness.rx.valid, 0)


async def _receive(ctx, harness, limit: int = 2000) -> bytes:
    """One response (or b"" if none starts within `limit` clocks)."""
    got = bytearray()
    ctx.set(harness.tx.ready, 1)
    for _ in range(limit):
        _, _, valid, payload = await ctx.tick().sample(harness.tx.valid, harness.tx.payload)
        if valid:
            got.append(payload)
            try:
                decode_response(bytes(got), check=False)
                return bytes(got)
            except IncompleteResponse:
                pass
    return bytes(got)


def test_byte_timeout_is_exact():
    """A gap of byte_timeout - 1 clocks inside a frame is fine, byte_timeout is TIMEOUT."""
    harness = LinkHarness(byte_timeout=16)
    frame = encode_frame(Command.STATUS)
    assert 0xA5 not in frame[1:]                 # the rest of a timed-out frame is hunted
    received = bytearray()

    async def testbench(ctx):
        for gap in (15, 16):
            await _send(ctx, harness, frame, gap=gap)
            await ctx.tick().repeat(60)

    async def collector(ctx):
        ctx.set(harness.tx.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(harness.tx.valid,
                                                            harness.tx.payload):
            if valid:
                received.append(payload)

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.add_testbench(collector, background=True)
    sim.run()
    assert _statuses(received) == [Status.OK, Status.TIMEOUT]


def test_write_stall_ends_with_watchdog():
    """An engine that never takes a write (load.ready low, not busy): the WRITE ends with
    WATCHDOG after watchdog_cycles clocks and the link answers the next command."""
    load, out = harness_layouts()
    fmt = link_format(load, out, max_payload=64, byte_timeout=50, watchdog_cycles=300)

    class Stuck(wiring.Component):
        def __init__(self):
            super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})
            self.link = HostLink(load, out, max_payload=64, byte_timeout=50,
                                 watchdog_cycles=300)

        def elaborate(self, platform):
            m = Module()
            m.submodules.link = self.link
            wiring.connect(m, wiring.flipped(self.rx), self.link.rx)
            wiring.connect(m, self.link.tx, wiring.flipped(self.tx))
            return m

    dut = Stuck()
    answers = []

    async def testbench(ctx):
        await _send(ctx, dut, encode_frame(Command.WRITE, pack_writes(fmt, [[0, 1, 2]] * 3)))
        answers.append(decode_response(await _receive(ctx, dut, 1000), check=False))
        await _send(ctx, dut, encode_frame(Command.PING))
        answers.append(decode_response(await _receive(ctx, dut), check=False))

    _link_sim(dut, testbench)
    assert answers[0].status == Status.WATCHDOG and answers[0].payload == b"\x00\x00"
    assert answers[1].ok and LinkFormat.from_capabilities(answers[1].payload) == fmt


# ---------------------------------------------------------------------------------------------
# UARTs


class _Loopback(wiring.Component):
    """UartTx -> line -> UartRx."""

    def __init__(self, divisor):
        self.utx, self.urx = UartTx(divisor), UartRx(divisor)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8)),
                          "line": Out(1), "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.utx, m.submodules.urx = self.utx, self.urx
        wiring.connect(m, wiring.flipped(self.i), self.utx.i)
        wiring.connect(m, self.urx.o, wiring.flipped(self.o))
        m.d.comb += [self.urx.rx.eq(self.utx.tx), self.line.eq(self.utx.tx),
                     self.framing_error.eq(self.urx.framing_error),
                     self.overrun.eq(self.urx.overrun)]
        return m


@pytest.mark.parametrize("divisor", [4, 5, 13])
def test_uart_loopback(divisor):
    dut = _Loopback(divisor)
    sent = np.random.default_rng(divisor).integers(0, 256, 40).tolist() + [0x00, 0xFF, 0xA5]
    got, line = [], []

    async def source(ctx):
        for byte in sent:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        clocks = 0
        while len(got) < len(sent):
            _, _, valid, payload, bit, ferr, ovr = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.line, dut.framing_error, dut.overrun)
            assert not ferr and not ovr
            line.append(bit)
            clocks += 1
            if valid:
                got.append(payload)
        # back to back: one byte every 10 bit times
        assert clocks <= 10 * divisor * len(sent) + 4 * divisor

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == sent
    # the line: idle high, then the first byte's start bit lasts `divisor` clocks
    first_low = line.index(0)
    assert line[first_low:first_low + divisor] == [0] * divisor


def _serial_bits(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


def test_uart_rx_framing_glitch_overrun():
    divisor = 8
    dut = UartRx(divisor)
    events = {"bytes": [], "framing": 0, "overrun": 0}

    async def testbench(ctx):
        async def line(bits):
            for bit in bits:
                ctx.set(dut.rx, bit)
                for _ in range(divisor):
                    _, _, ferr, ovr = await ctx.tick().sample(dut.framing_error, dut.overrun)
                    events["framing"] += ferr
                    events["overrun"] += ovr

        ctx.set(dut.o.ready, 1)
        await line([1] * 3)
        await line(_serial_bits(0x3C))                           # a good byte
        await line([1] * 2)
        await line(_serial_bits(0x55, stop=0) + [0] * 3)          # framing error, then break
        await line([1] * 3)
        ctx.set(dut.rx, 0)                                        # a glitch: 2 clocks low
        await ctx.tick().repeat(2)
        await line([1] * 3)
        await line(_serial_bits(0xC3))                            # a good byte
        await line([1] * 2)
        ctx.set(dut.o.ready, 0)                                   # not taken: overrun
        await line(_serial_bits(0x11) + [1] + _serial_bits(0x22) + [1] * 2)
        ctx.set(dut.o.ready, 1)
        await line([1] * 2)

    async def collector(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                   dut.o.payload):
            if valid and ready:
                events["bytes"].append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.add_testbench(collector, background=True)
    sim.run()
    assert events["framing"] == 1 and events["overrun"] == 1
    assert events["bytes"] == [0x3C, 0xC3, 0x11]


def test_link_through_uart_pins():
    """PING, a WRITE and a bad frame through UartRx/UartTx (divisor 4) at the pins."""
    divisor = 4
    harness = LinkHarness(uart_divisor=divisor, byte_timeout=400)
    fmt = harness.format
    answers = []

    async def testbench(ctx):
        async def send(data):
            for byte in data:
                for bit in _serial_bits(byte):
                    ctx.set(harness.rxd, bit)
                    await ctx.tick().repeat(divisor)

        async def receive(limit=4000):
            got = bytearray()
            idle = 0
            while idle < limit:
                _, _, bit = await ctx.tick().sample(harness.txd)
                if bit:
                    idle += 1
                    continue
                idle = 0
                await ctx.tick().repeat(divisor // 2)           # to the middle of the start
                byte = 0
                for k in range(8):
                    await ctx.tick().repeat(divisor)
                    byte |= ctx.get(harness.txd) << k
                await ctx.tick().repeat(divisor)                # the stop bit
                got.append(byte)
                try:
                    decode_response(bytes(got), check=False)
                    return bytes(got)
                except IncompleteResponse:
                    pass
            return bytes(got)

        ctx.set(harness.rxd, 1)
        await ctx.tick().repeat(10)
        for frame in (encode_frame(Command.PING),
                      encode_frame(Command.WRITE, pack_writes(fmt, [[1, 2, 3], [0, 5, 6]])),
                      encode_frame(0x42)):
            await send(frame)
            answers.append(decode_response(await receive(), check=False))

    _link_sim(harness, testbench)
    assert LinkFormat.from_capabilities(answers[0].payload) == fmt
    assert answers[1].ok and answers[1].payload == (2).to_bytes(2, "little")
    assert answers[2].status == Status.UNKNOWN_CMD
    assert Flag.PENDING == 0x10
