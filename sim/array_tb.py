"""cocotb test module for the array engine: loads cases, runs them, saves what came out.

Params (from `oscarray.sim.runner.run_cocotb`, written by `oscarray.sim.array`):
    in_path      npz: count (number of cases); per case c: writes_c, (M, 3) rows of
                 (target, addr, data) for the `load` port (empty: the contents are the
                 engine's Memory init), n_c (oscillators), start_write_c (the row of
                 writes_c sent in the clock of the start, not before it; -1: none)
    out_path     npz written here, per case c: acc_c (final accumulators from `phases`),
                 order_c (K, 2) order sums, steps_c, cycles_c, converged_c, and with trace
                 updates_c (U, 2) of (index, acc) from the `update` port
    load_widths  [data, addr, target] field widths of the load payload
    order_width  width of each order sum; acc_bits: width of a phases item
    trace        record the accumulator writes
    order_ready_prob, seed   random backpressure on the order stream
"""

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from oscarray.sim.streams import (StreamSink, StreamSource, load_params, pack_fields, start,
                                  unpack_fields)


async def _run_one(dut, trace: bool, order_width: int, readies, with_start=None):
    """Pulse start (with the load payload `with_start` in the same clock, if given: the
    engine takes it, as it is idle), collect the order stream (and updates) until done;
    return the record."""
    edge, read_only = RisingEdge(dut.clk), ReadOnly()
    dut.start.value = 1
    if with_start is not None:
        dut.load__payload.value = with_start
        dut.load__valid.value = 1
    await edge
    dut.start.value = 0
    dut.load__valid.value = 0
    orders, updates = [], []
    order_valid, order_ready, done = dut.order__valid, dut.order__ready, dut.done
    update_valid = dut.update__valid
    while True:
        want = readies()
        order_ready.value = want
        await read_only
        if want and int(order_valid.value):
            orders.append(int(dut.order__payload.value))
        if trace and int(update_valid.value):
            updates.append((int(dut.update__index.value), int(dut.update__acc.value)))
        if int(done.value):
            break
        await edge
    await edge
    order_ready.value = 0
    record = {"steps": int(dut.steps_taken.value), "cycles": int(dut.cycles.value),
              "converged": int(dut.converged.value)}
    record["order"] = unpack_fields(orders, [order_width, order_width], True).reshape(-1, 2)
    record["updates"] = np.array(updates, np.int64).reshape(-1, 2)
    return record


@cocotb.test()
async def run_cases(dut):
    p = load_params()
    cases = np.load(p["in_path"])
    trace = bool(p.get("trace", False))
    order_width, acc_bits = int(p["order_width"]), int(p["acc_bits"])
    rng = np.random.default_rng(int(p.get("seed", 0)))
    ready_prob = float(p.get("order_ready_prob", 1.0))

    def readies():
        return 1 if ready_prob >= 1 else int(rng.random() < ready_prob)

    loader, phases = StreamSource(dut, "load"), StreamSink(dut, "phases")
    dut.start.value = 0
    dut.order__ready.value = 0
    await start(dut, period_ns=10)
    out = {}
    for c in range(int(cases["count"])):
        writes = cases[f"writes_{c}"]
        payloads = pack_fields([writes[:, 2], writes[:, 1], writes[:, 0]],
                               [int(w) for w in p["load_widths"]], False) if writes.size else []
        late = int(cases[f"start_write_{c}"])
        before = [item for row, item in enumerate(payloads) if row != late]
        if before:
            await loader.send_all(before)
        n = int(cases[f"n_{c}"])
        record = await _run_one(dut, trace, order_width, readies,
                                int(payloads[late]) if late >= 0 else None)
        # The same random backpressure on `phases` as on `order` (the readout's address
        # follows each transfer).
        acc = unpack_fields(await phases.collect(n, ready_prob=ready_prob, rng=rng),
                            [acc_bits], False)[:, 0]
        out.update({f"acc_{c}": acc.astype(np.uint64), f"order_{c}": record["order"],
                    f"steps_{c}": record["steps"], f"cycles_{c}": record["cycles"],
                    f"converged_{c}": record["converged"], f"updates_{c}": record["updates"]})
    np.savez(p["out_path"], **out)
