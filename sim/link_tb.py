"""cocotb test module for the host link: plays a fuzz script through LinkHarness's bytes.

Params (from `oscarray.sim.link.run_link_fuzz`):
    in_path    npz: data (uint8, every byte to send), gaps (idle clocks before each byte),
               step_end (bytes sent after each step), step_idle (idle clocks after a step's
               last byte is taken), step_expect (response bytes the host must have by the
               end of each step)
    out_path   npz written here: received (uint8, every byte from tx), hang_step (the first
               step whose answers did not all arrive within max_wait clocks, -1 if none),
               clocks (clock cycles of the run)
    max_wait   clocks to wait for a step's answers before calling it a hang

The host side takes every tx byte at once (tx.ready high), except during long idles with
nothing expected, which it skips in one wait with tx.ready low: a byte the link should not
have sent waits there and shows up as a mismatch afterwards.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from oscarray.sim.streams import load_params, start


@cocotb.test()
async def play_script(dut):
    p = load_params()
    script = np.load(p["in_path"])
    data = script["data"].tolist()
    gaps = script["gaps"].tolist()
    step_end = script["step_end"].tolist()
    step_idle = script["step_idle"].tolist()
    step_expect = script["step_expect"].tolist()
    max_wait = int(p["max_wait"])

    rx_valid, rx_ready, rx_payload = dut.rx__valid, dut.rx__ready, dut.rx__payload
    tx_valid, tx_ready, tx_payload = dut.tx__valid, dut.tx__ready, dut.tx__payload
    rx_valid.value = 0
    tx_ready.value = 0
    clock = await start(dut, period_ns=10)
    t0 = clock.cycle()
    edge, read_only = RisingEdge(dut.clk), ReadOnly()
    received = []
    tx_ready.value = 1

    async def tick() -> int:
        """One clock: take a tx byte if one is offered; return rx.ready as sampled."""
        await read_only
        if tx_valid.value:
            received.append(int(tx_payload.value))
        ready = int(rx_ready.value)
        await edge
        return ready

    pos, hang_step = 0, -1
    for s, end in enumerate(step_end):
        while pos < end:
            if gaps[pos]:
                for _ in range(gaps[pos]):
                    await tick()
            rx_payload.value = data[pos]
            rx_valid.value = 1
            waited = 0
            while not await tick():
                waited += 1
                if waited > max_wait:
                    break
            rx_valid.value = 0
            if waited > max_wait:
                hang_step = s
                break
            pos += 1
        if hang_step >= 0:
            break
        idle = step_idle[s]
        if idle > 64 and len(received) >= (step_expect[s - 1] if s else 0) \
                and step_expect[s] == len(received):
            tx_ready.value = 0                       # nothing may come: skip in one wait
            await ClockCycles(dut.clk, idle)
            tx_ready.value = 1
        else:
            for _ in range(idle):
                await tick()
        waited = 0
        while len(received) < step_expect[s]:
            await tick()
            waited += 1
            if waited > max_wait:
                hang_step = s
                break
        if hang_step >= 0:
            break
    # Anything the model did not predict would come now.
    for _ in range(64):
        await tick()
    np.savez(p["out_path"], received=np.array(received, dtype=np.uint8),
             hang_step=hang_step, clocks=clock.cycle() - t0)
