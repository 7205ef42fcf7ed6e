"""Run torus cases on the Kuramoto-attention layer RTL in cocotb (`torus_tb.py`).

One build serves every case up to its capacity (max_tokens, max_d): the layer is elaborated
without contents, and each case is written through the `load` port (`torus_writes`, the
host's step 0), run, and read back from the `o` stream.
"""

from __future__ import annotations

from pathlib import Path

from ..golden.torus_fixed import DEFAULT_CONFIG, TorusFixedConfig
from ..hdl.torus import (
    TorusLayer,
    check_case,
    decode_items,
    load_layout,
    output_layout,
    row_items,
    torus_writes,
)
from .runner import ready_probabilities, run_batch

__all__ = ["run_torus_rtl", "run_torus_rtl_batch"]


def run_torus_rtl_batch(cases, config: TorusFixedConfig = DEFAULT_CONFIG, *,
                        max_tokens: int = 16, max_d: int = 16, cordic_arch: str = "pipelined",
                        sim: str | None = None, build_root: Path | None = None,
                        ready_prob=1.0, seed: int = 0, verbose: bool = False) -> list[dict]:
    """Run every case on one layer of capacity (max_tokens, max_d), one after another in one
    simulation. `ready_prob`: the chance per clock that the `o` stream is ready (random
    backpressure), one float or one per case.

    Returns one dict per case: attn_int (T, T), theta_next_acc (T, D) (the RTL's integers,
    as golden torus_fixed names them), cycles (clocks from start to done), sim. Every case
    is checked (`check_case`) before anything is built."""
    cases = [check_case(case, config, max_tokens=max_tokens, max_d=max_d) for case in cases]
    if not cases:
        return []
    readies = ready_probabilities(ready_prob, len(cases))
    layer = TorusLayer(config, max_tokens=max_tokens, max_d=max_d, cordic_arch=cordic_arch)
    name = (f"torus_t{max_tokens}_d{max_d}_p{config.phase_bits}_a{config.acc_bits}"
            + ("" if cordic_arch == "pipelined" else f"_{cordic_arch}"))
    arrays = {"count": len(cases)}
    for c, case in enumerate(cases):
        arrays[f"writes_{c}"] = torus_writes(case, config, max_tokens=max_tokens, max_d=max_d)
        arrays[f"items_{c}"] = case.tokens * row_items(case.tokens, case.d)
        arrays[f"ready_{c}"] = readies[c]
    out, simulator = run_batch(layer, name=name, test_module="oscarray.sim.torus_tb",
                               arrays=arrays,
                               load_layout=load_layout(config, max_tokens, max_d),
                               output_layout=output_layout(config), sim=sim,
                               build_root=build_root, verbose=verbose, seed=seed)
    results = []
    for c, case in enumerate(cases):
        decoded = decode_items(out[f"items_{c}"], case.tokens, case.d)
        decoded["cycles"] = int(out[f"cycles_{c}"])
        decoded["sim"] = simulator
        results.append(decoded)
    return results


def run_torus_rtl(case, config: TorusFixedConfig = DEFAULT_CONFIG, **options) -> dict:
    """Run one case on the torus layer RTL; see `run_torus_rtl_batch`."""
    return run_torus_rtl_batch([case], config, **options)[0]
