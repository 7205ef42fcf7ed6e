"""A tiny pipelined stream adder used to test the cocotb runner and stream helpers.

Input payload (flat, first field in the low bits): ``a: signed(width)``, ``b: signed(width)``.
Output payload: ``sum = a + b`` and ``diff = a - b``, both ``signed(width + 1)``.
The result appears ``latency`` accepted cycles after the input; the whole pipeline stalls
while the output holds a value that the sink does not accept (one global enable), which is
the simplest correct valid/ready pipeline.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


class PipelinedAdder(wiring.Component):
    """Stream adder with ``latency`` register stages (``latency >= 1``).

    Args:
        width: width of each signed input field.
        latency: number of register stages between input and output.
    """

    def __init__(self, width: int = 16, latency: int = 3):
        if latency < 1:
            raise ValueError("latency must be at least 1")
        self.width = width
        self.latency = latency
        in_layout = data.StructLayout({"a": signed(width), "b": signed(width)})
        out_layout = data.StructLayout({"sum": signed(width + 1), "diff": signed(width + 1)})
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        # The pipeline advances when the output register is empty or being drained.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(advance)

        valid = [Signal(name=f"valid_{k}") for k in range(self.latency)]
        sums = [Signal(signed(self.width + 1), name=f"sum_{k}") for k in range(self.latency)]
        diffs = [Signal(signed(self.width + 1), name=f"diff_{k}") for k in range(self.latency)]
        with m.If(advance):
            m.d.sync += [
                valid[0].eq(self.i.valid),
                sums[0].eq(self.i.payload.a + self.i.payload.b),
                diffs[0].eq(self.i.payload.a - self.i.payload.b),
            ]
            for k in range(1, self.latency):
                m.d.sync += [
                    valid[k].eq(valid[k - 1]),
                    sums[k].eq(sums[k - 1]),
                    diffs[k].eq(diffs[k - 1]),
                ]
        m.d.comb += [
            self.o.valid.eq(valid[-1]),
            self.o.payload.sum.eq(sums[-1]),
            self.o.payload.diff.eq(diffs[-1]),
        ]
        return m
