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
from oscarray.sim.streams import StreamSink, StreamSource, load_params, load_run_collect, start


@cocotb.test()
async def run_heads(dut):
    p = load_params()
    cases = np.load(p["in_path"])
    rng = np.random.default_rng(int(p.get("seed", 0)))
    loader, sink = StreamSource(dut, "load"), StreamSink(dut, "o")
    dut.start.value = 0
    await start(dut, period_ns=10)
    out = {}
    for c in range(int(cases["count"])):
        items, ready = int(cases[f"items_{c}"]), float(cases[f"ready_{c}"])
        for h in range(int(cases[f"heads_{c}"])):
            run = await load_run_collect(dut, loader, sink, cases[f"writes_{c}_{h}"], items,
                                         ready, rng, p)
            out[f"cycles_{c}_{h}"] = run["cycles"]
            out[f"error_{c}_{h}"] = run["error"]
            out[f"items_{c}_{h}"] = run["items"]
    np.savez(p["out_path"], **out)
