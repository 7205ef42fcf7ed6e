"""cocotb module for the PipelinedAdder fixture: streams vectors through it.

Params (from run_cocotb, read with load_params):
    in_path:  npz with int arrays ``a`` and ``b``
    out_path: npz written here: ``sum``, ``diff`` (int64), ``cycles`` (first input accepted
              to last output received), ``wall_s`` (wall time of the streaming)
    width: field width of a and b
    valid_prob, ready_prob: random gaps / backpressure (1.0 = none)
    seed: seed of the NumPy generator for gaps and backpressure
"""

import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, ReadOnly

from oscarray.sim.streams import (StreamSink, StreamSource, load_params, pack_fields, start,
                                  unpack_fields)


@cocotb.test()
async def stream_vectors(dut):
    p = load_params()
    width = int(p["width"])
    vectors = np.load(p["in_path"])
    a, b = vectors["a"], vectors["b"]
    rng = np.random.default_rng(int(p.get("seed", 0)))

    source, sink = StreamSource(dut, "i"), StreamSink(dut, "o")
    clock = await start(dut, period_ns=10)

    t0 = time.perf_counter()
    payloads = pack_fields([a, b], [width, width])
    sender = cocotb.start_soon(source.send_all(
        payloads, valid_prob=float(p.get("valid_prob", 1.0)), rng=rng))
    received = await sink.collect(len(a), ready_prob=float(p.get("ready_prob", 1.0)), rng=rng)
    await sender
    out = unpack_fields(received, [width + 1, width + 1])
    wall_s = time.perf_counter() - t0

    # Nothing more may come out: hold ready high for a few cycles and watch valid.
    dut.o__ready.value = 1
    for _ in range(8):
        await ReadOnly()
        assert int(dut.o__valid.value) == 0, "adder produced an extra output"
        await ClockCycles(dut.clk, 1)

    np.savez(p["out_path"], sum=out[:, 0], diff=out[:, 1],
             cycles=clock.cycles(source.first_ns, sink.last_ns), wall_s=wall_s)
