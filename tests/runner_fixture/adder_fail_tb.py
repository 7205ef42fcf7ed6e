"""cocotb module with one passing test and one that fails on purpose (for the runner tests).

Params: ``fail`` (default True): whether ``fails_on_purpose`` fails.
"""

import cocotb

from oscarray.sim.streams import StreamSink, StreamSource, load_params, start


@cocotb.test()
async def passes(dut):
    StreamSource(dut, "i"), StreamSink(dut, "o")
    await start(dut)


@cocotb.test()
async def fails_on_purpose(dut):
    StreamSource(dut, "i"), StreamSink(dut, "o")
    await start(dut)
    if load_params().get("fail", True):
        assert 1 + 1 == 3, "deliberate failure"
