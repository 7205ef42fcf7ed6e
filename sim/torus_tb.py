"""cocotb test module for the torus layer: loads each case, runs it, saves its items.

Params (from `oscarray.sim.runner.run_cocotb`, written by `oscarray.sim.torus`):
    in_path      npz: count (cases); per case c: writes_c, (M, 3) rows of (target, addr,
                 data) for the `load` port; items_c (items on `o`); ready_c (the chance per
                 clock that `o` is ready)
    out_path     npz written here, per case c: items_c (N, 2) of (value, kind), cycles_c
    load_widths  [data, addr, target] field widths of the load payload
    out_widths, out_signs   [value, kind] widths and signedness of the `o` payload
    seed         random backpressure on `o`
"""

import cocotb
import numpy as np
from oscarray.sim.streams import StreamSink, StreamSource, load_params, load_run_collect, start


@cocotb.test()
async def run_cases(dut):
    p = load_params()
    cases = np.load(p["in_path"])
    rng = np.random.default_rng(int(p.get("seed", 0)))
    loader, sink = StreamSource(dut, "load"), StreamSink(dut, "o")
    dut.start.value = 0
    await start(dut, period_ns=10)
    out = {}
    for c in range(int(cases["count"])):
        run = await load_run_collect(dut, loader, sink, cases[f"writes_{c}"],
                                     int(cases[f"items_{c}"]), float(cases[f"ready_{c}"]),
                                     rng, p)
        out[f"cycles_{c}"] = run["cycles"]
        out[f"items_{c}"] = run["items"]
    np.savez(p["out_path"], **out)
