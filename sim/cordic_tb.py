"""cocotb test module for the CORDIC: streams vectors through the RTL and saves what came out.

Params (from `oscarray.sim.runner.run_cocotb`):
    in_path     npz with integer arrays x, y, z
    out_path    npz written here: x, y, z (integers as the RTL produced them), cycles (first
                input accepted to last output received), wall_s
    widths      [x, y, z] field widths; z_signed: whether z is two's complement
    valid_prob, ready_prob, seed   random input gaps and output backpressure
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
    widths = [int(w) for w in p["widths"]]
    signs = [True, True, bool(p["z_signed"])]
    vectors = np.load(p["in_path"])
    rng = np.random.default_rng(int(p.get("seed", 0)))

    source, sink = StreamSource(dut, "i"), StreamSink(dut, "o")
    clock = await start(dut, period_ns=10)
    t0 = time.perf_counter()
    payloads = pack_fields([vectors["x"], vectors["y"], vectors["z"]], widths, signs)
    sender = cocotb.start_soon(source.send_all(
        payloads, valid_prob=float(p.get("valid_prob", 1.0)), rng=rng))
    received = await sink.collect(len(payloads), ready_prob=float(p.get("ready_prob", 1.0)),
                                  rng=rng)
    await sender
    wall_s = time.perf_counter() - t0
    out = unpack_fields(received, widths, signs)

    # Every output was matched to an input: nothing more may come out.
    dut.o__ready.value = 1
    for _ in range(int(p.get("drain_cycles", 64))):
        await ReadOnly()
        assert int(dut.o__valid.value) == 0, "the CORDIC produced an output without an input"
        await ClockCycles(dut.clk, 1)

    np.savez(p["out_path"], x=out[:, 0], y=out[:, 1], z=out[:, 2],
             cycles=clock.cycles(source.first_ns, sink.last_ns), wall_s=wall_s)
