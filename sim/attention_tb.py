"""cocotb test module for the attention head: loads each head, runs it, saves its items.

Params (from `oscarray.sim.runner.run_cocotb`, written by `oscarray.sim.attention`):
    in_path      npz: count (cases); per case c: heads_c, items_c (items per head on `o`),
                 ready_c (the chance per clock that `o` is ready), and per head h
                 writes_c_h, (M, 3) rows of (target, addr, data) for the `load` port
    out_path     npz written here, per case c and head h: items_c_h (N, 2) of (value, kind),
                 cycles_c_h, error_c_h
    load_widths  [data, addr, target] field widths of the load payload
    out_widths, out_signs   [value, kind] widths and signedness of the `o` payload
    seed         random backpressure on `o`
"""

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from oscarray.sim.streams import (
    StreamSink,
    StreamSource,
    load_params,
    pack_fields,
    start,
    unpack_fields,
)


async def _collect_ready(dut, n: int) -> list[int]:
    """`o` always ready: sample on the clocks where valid is up and sleep until it rises
    otherwise (the head computes for thousands of clocks between rows)."""
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


@cocotb.test()
async def run_heads(dut):
    p = load_params()
    cases = np.load(p["in_path"])
    rng = np.random.default_rng(int(p.get("seed", 0)))
    loader, sink = StreamSource(dut, "load"), StreamSink(dut, "o")
    dut.start.value = 0
    await start(dut, period_ns=10)
    edge = RisingEdge(dut.clk)
    out = {}
    for c in range(int(cases["count"])):
        items, ready = int(cases[f"items_{c}"]), float(cases[f"ready_{c}"])
        for h in range(int(cases[f"heads_{c}"])):
            writes = cases[f"writes_{c}_{h}"]
            payloads = pack_fields([writes[:, 2], writes[:, 1], writes[:, 0]],
                                   [int(w) for w in p["load_widths"]], False)
            await loader.send_all(payloads)
            dut.start.value = 1
            await edge
            dut.start.value = 0
            if ready >= 1:
                got = await _collect_ready(dut, items)
            else:
                got = await sink.collect(items, ready_prob=ready, rng=rng)
            while True:
                await ReadOnly()
                if int(dut.done.value):
                    break
                await edge
            out[f"cycles_{c}_{h}"] = int(dut.cycles.value)
            out[f"error_{c}_{h}"] = int(dut.error.value)
            out[f"items_{c}_{h}"] = unpack_fields(got, [int(w) for w in p["out_widths"]],
                                                  [bool(s) for s in p["out_signs"]])
            await edge
    np.savez(p["out_path"], **out)
