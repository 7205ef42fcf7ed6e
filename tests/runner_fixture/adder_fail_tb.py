"""cocotb module with one passing and one deliberately failing test (for the runner tests)."""

import cocotb

from oscarray.sim.streams import StreamSink, StreamSource, start


@cocotb.test()
async def passes(dut):
    StreamSource(dut, "i"), StreamSink(dut, "o")
    await start(dut)


@cocotb.test()
async def fails_on_purpose(dut):
    StreamSource(dut, "i"), StreamSink(dut, "o")
    await start(dut)
    assert 1 + 1 == 3, "deliberate failure"
