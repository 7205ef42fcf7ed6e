"""The host driver against a board top's RTL, through a simulated UART (issue 6).

`run_board_sim` builds a board top without its PLL and pins (boards/top.py, `pll=False`
outside a platform: ports `rxd`, `txd`, clocked by the simulator) with a fast UART (`divisor`
clocks a bit, 4 by default) and runs cocotb's `uart_tb.py` on it. There the blocking host
driver (oscarray/driver.py `Driver`, the same code as on a board) runs in a cocotb bridge
thread (`cocotb.task.bridge`); its transport, `SimUartTransport`, turns each byte into 8N1
bits on the `rxd` pin and decodes the `txd` pin bit by bit (a monitor samples each bit in
its middle), calling into the simulation through `cocotb.task.resume`.

Jobs (the `job` param):
    "case"      Driver.run_case on a case npz: the result of `oscarray attention --engine
                rtl` (pickled to out_path)
    "selftest"  driver.link_selftest on a link top (the loopback engine)

Speed: one simulator callback per UART bit each way (the bits of a byte are sent as runs of
equal bits), so a case costs about (writes x write bytes + items x item bytes) x 10
callbacks, plus the head's clocks.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from pathlib import Path

__all__ = ["SimUartTransport", "run_board_sim", "sim_top", "sim_top_name", "job"]

PERIOD_NS = 10


class SimUartTransport:
    """A driver `Transport` on the pins of a simulated top (runs inside cocotb).

    `start()` (from the cocotb test, before the driver's thread) starts the monitor of `txd`.
    The driver's thread calls write/read/settle/idle, each a `cocotb.task.resume` into the
    simulation. `silence_clocks`: a read returns short when no byte arrives for that long.
    """

    def __init__(self, dut, divisor: int, *, period_ns: float = PERIOD_NS,
                 silence_clocks: int = 200_000, idle_clocks: int = 2_000):
        from cocotb.task import resume
        self.dut, self.divisor, self.period_ns = dut, int(divisor), float(period_ns)
        self.bit_ns = self.divisor * self.period_ns
        self.silence_ns = silence_clocks * self.period_ns
        self.idle_ns = idle_clocks * self.period_ns
        self.received = bytearray()
        self.framing_errors = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        from cocotb.triggers import Event
        self._event = Event()
        self.write = resume(self._write)
        self.read = resume(self._read)
        self.settle = resume(self._settle)
        self.idle = resume(self._idle)

    def start(self) -> None:
        import cocotb
        self.dut.rxd.value = 1
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        from cocotb.triggers import FallingEdge, Timer
        txd = self.dut.txd
        half, bit = self.bit_ns / 2, self.bit_ns
        while True:
            await FallingEdge(txd)
            # the line changes just after a rising clock edge: sampling half a bit later
            # (plus half a clock) lands mid-bit, between edges
            await Timer(half + self.period_ns / 2, unit="ns")
            if int(txd.value) != 0:
                continue                                  # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(bit, unit="ns")
                byte |= int(txd.value) << i
            await Timer(bit, unit="ns")
            if int(txd.value) != 1:
                self.framing_errors += 1
                continue
            self.received.append(byte)
            self.bytes_received += 1
            self._event.set()

    async def _write(self, data: bytes):
        from cocotb.triggers import Timer
        rxd = self.dut.rxd
        for byte in bytes(data):
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            i = 0
            while i < 10:                                # runs of equal bits: one wait each
                j = i
                while j < 10 and bits[j] == bits[i]:
                    j += 1
                rxd.value = bits[i]
                await Timer((j - i) * self.bit_ns, unit="ns")
                i = j
        self.bytes_sent += len(data)

    async def _read(self, n: int) -> bytes:
        from cocotb.triggers import First, Timer
        while len(self.received) < n:
            before = len(self.received)
            self._event.clear()
            await First(self._event.wait(), Timer(self.silence_ns, unit="ns"))
            if len(self.received) == before:
                break
        out = bytes(self.received[:n])
        del self.received[:n]
        return out

    async def _settle(self, clocks: int | None):
        from cocotb.triggers import Timer
        if clocks is None:                     # a simulated top's byte_timeout: 500 bits
            clocks = 500 * self.divisor
        await Timer((int(clocks) + 20 * self.divisor) * self.period_ns, unit="ns")
        self.received.clear()

    async def _idle(self):
        from cocotb.triggers import Timer
        await Timer(self.idle_ns, unit="ns")


def job(transport, params: dict) -> None:
    """What the bridge thread runs (uart_tb.py): the driver on `transport`, the `job`
    param's work, its result pickled to out_path."""
    from ..driver import Driver, link_selftest

    t0 = time.monotonic()
    driver = Driver(transport)
    if params["job"] == "case":
        from ..golden.attention import load_case
        case = load_case(params["case_path"])
        result = driver.run_case(case)
    elif params["job"] == "selftest":
        result = link_selftest(driver, words=int(params.get("words", 64)))
    else:
        raise ValueError(f"unknown job {params['job']!r}")
    result = {"result": result, "stats": driver.stats, "fmt": driver.fmt,
              "identity": driver.identity, "bytes_sent": transport.bytes_sent,
              "bytes_received": transport.bytes_received,
              "framing_errors": transport.framing_errors,
              "driver_s": time.monotonic() - t0}
    with open(params["out_path"], "wb") as handle:
        pickle.dump(result, handle)


def sim_top(design: str = "attention", *, divisor: int = 4, **options):
    """A board top for simulation (no PLL, no pins): boards/top.py `top_for(None, ...)`."""
    from ..boards.top import top_for
    return top_for(None, design, divisor=divisor, **options)


def sim_top_name(top, design: str) -> str:
    if design == "link":
        return f"board_link_div{top.divisor}"
    named = "".join(f"_{m.removeprefix('ode-')}" for m in top.modes if m != "analytic")
    return f"board_attention_t{top.max_tokens}_d{top.max_d_h}{named}_div{top.divisor}"


def run_board_sim(job_name: str = "case", *, case_path=None, design: str = "attention",
                  divisor: int = 4, sim: str | None = None, build_root=None,
                  verbose: bool = False, top_options: dict | None = None, **params) -> dict:
    """Run the driver `job_name` ("case" with `case_path`, or "selftest") on a simulated
    board top of `design` (top_options: max_tokens, max_d_h, modes, max_payload, ...).

    Returns {"result": the job's result (run_case's dict, or link_selftest's), "stats"
    (the driver's frames, retries, answers), "fmt", "identity", "bytes_sent",
    "bytes_received", "framing_errors", "driver_s", "sim", "build_s", "run_s"}."""
    from .runner import run_cocotb

    top = sim_top(design, divisor=divisor, **(top_options or {}))
    name = sim_top_name(top, design)
    with tempfile.TemporaryDirectory(prefix="oscarray-board-") as tmp:
        out_path = Path(tmp) / "out.pkl"
        run_params = {"job": job_name, "divisor": divisor, "out_path": str(out_path),
                      "period_ns": PERIOD_NS, **params}
        if case_path is not None:
            run_params["case_path"] = str(Path(case_path).resolve())
        result = run_cocotb(top, name=name, test_module="oscarray.sim.uart_tb", sim=sim,
                            build_root=build_root, verbose=verbose, params=run_params)
        with open(out_path, "rb") as handle:
            out = pickle.load(handle)
    out.update(sim=result.sim, build_s=result.build_s, run_s=result.run_s)
    return out
