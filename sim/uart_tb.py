"""cocotb test module: the host driver on a board top's RTL through a simulated UART.

Params (from `oscarray.sim.board_sim.run_board_sim`):
    job         "case" or "selftest" (board_sim.job)
    divisor     clocks per UART bit of the top
    period_ns   the clock period
    case_path   the case npz ("case")
    out_path    the job's result, pickled here

The clock starts, the reset is released, the transport's monitor of `txd` starts, and the
blocking driver runs in a bridge thread (`cocotb.task.bridge`); every byte it sends or
reads goes bit by bit through the top's `rxd` and `txd` pins (board_sim.SimUartTransport).
"""

import cocotb
from cocotb.task import bridge
from oscarray.sim.board_sim import SimUartTransport, job
from oscarray.sim.streams import load_params, start


@cocotb.test()
async def run_driver(dut):
    p = load_params()
    dut.rxd.value = 1
    await start(dut, period_ns=float(p["period_ns"]))
    transport = SimUartTransport(dut, int(p["divisor"]), period_ns=float(p["period_ns"]))
    transport.start()

    @bridge
    def blocking():
        job(transport, p)

    await blocking()
