"""Run attention cases on the attention head RTL in cocotb (`attention_tb.py`).

One build serves every case up to its capacity (max_tokens, max_d_h): the head is
elaborated without contents, and each head of each case is written through the `load` port
(`head_writes`, the host's step 0), run, and read back from the `o` stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..golden.attention import NOT_CONVERGED
from ..golden.attention_fixed import DEFAULT_CONFIG, AttentionFixedConfig
from ..hdl.attention import (
    OSCILLATOR_MODES,
    AttentionHead,
    AttentionHeadError,
    check_case,
    check_modes,
    cordic_latencies,
    decode_items,
    head_d_osc,
    head_writes,
    load_layout,
    output_layout,
    row_items,
    validate_mechanism,
)
from .runner import ready_probabilities, run_batch

__all__ = ["oscillator_d_osc", "run_attention_rtl", "run_attention_rtl_batch", "stack_heads"]


def run_attention_rtl_batch(cases, config: AttentionFixedConfig = DEFAULT_CONFIG, *,
                            max_tokens: int = 16, max_d_h: int = 32,
                            cordic_arch: str = "pipelined", sim: str | None = None,
                            build_root: Path | None = None, ready_prob=1.0, seed: int = 0,
                            verbose: bool = False, modes=None, d_osc=None,
                            mac_lanes: int = 1, compact: bool = False) -> list[dict]:
    """Run every head of every case on one head of capacity (max_tokens, max_d_h), one after
    another in one simulation. `ready_prob`: the chance per clock that the `o` stream is
    ready (random backpressure), one float or one per case.

    Returns one dict per case: attn_int (H, T, T), out_int (H, T, d_h), theta_int (H, T),
    x_int (H, T, d_osc), h_int (H, T, d_osc), e_w (H, T), steps (H, T) (NOT_CONVERGED where the
    engine's detector did not fire), converged (H, T) (the RTL's integers, as golden
    attention_fixed names them), cycles (H,) (clocks from start to done per head), error
    (H,) bool, sim. `modes`: the head's build (default: the cases' modes, both ODE modes
    when one is needed; a softmax case is golden `softmax_case`'s). `d_osc`: the head's
    (default: the oscillator cases', which must agree; 2 without any). `mac_lanes`: the
    head's products per clock in SCORES and OUT (`AttentionHead`); `compact`: its compact
    build (the iCE40UP5K's). Every case is checked (`check_case`) before anything is built.
    """
    cases = [validate_mechanism(case, config) for case in cases]
    if d_osc is None:
        d_osc = oscillator_d_osc(cases)
    if modes is None:
        needed = {case.mode for case in cases} or {"analytic"}
        if needed & set(OSCILLATOR_MODES[1:]):
            needed |= set(OSCILLATOR_MODES)     # one build for both ODE modes
        modes = tuple(needed)
    modes = check_modes(modes)
    cases = [check_case(case, config, max_tokens=max_tokens, max_d_h=max_d_h, modes=modes,
                        d_osc=d_osc) for case in cases]
    if not cases:
        return []
    cordic_latencies(config, cordic_arch)          # refuses an unknown architecture
    readies = ready_probabilities(ready_prob, len(cases))
    head = AttentionHead(config, max_tokens=max_tokens, max_d_h=max_d_h,
                         cordic_arch=cordic_arch, modes=modes, d_osc=d_osc,
                         mac_lanes=mac_lanes, compact=compact)
    name = (f"attention_t{max_tokens}_d{max_d_h}_b{config.qk_bits}_p{config.phase_bits}"
            + ("" if cordic_arch == "pipelined" else f"_{cordic_arch}")
            + ("_ode" if "ode-drive" in modes else "")
            + ("_softmax" if "softmax" in modes else "")
            + ("" if "analytic" in modes else "_only")
            + ("" if d_osc == 2 else f"_o{d_osc}")
            + ("" if mac_lanes == 1 else f"_l{mac_lanes}") + ("_compact" if compact else ""))
    arrays = {"count": len(cases)}
    for c, case in enumerate(cases):
        writes = head_writes(case, config, max_tokens=max_tokens, max_d_h=max_d_h,
                             modes=modes, d_osc=d_osc)
        arrays[f"heads_{c}"] = len(writes)
        arrays[f"items_{c}"] = case.tokens * row_items(case.tokens, case.d_h, d_osc)
        arrays[f"ready_{c}"] = readies[c]
        for h, rows in enumerate(writes):
            arrays[f"writes_{c}_{h}"] = rows
    out, simulator = run_batch(head, name=name, test_module="oscarray.sim.attention_tb",
                               arrays=arrays,
                               load_layout=load_layout(config, max_tokens, max_d_h),
                               output_layout=output_layout(config, max_tokens, max_d_h),
                               sim=sim, build_root=build_root, verbose=verbose, seed=seed)
    results = []
    for c, case in enumerate(cases):
        heads = [decode_items(out[f"items_{c}_{h}"], case.tokens, case.d_h, d_osc)
                 for h in range(case.heads)]
        results.append(stack_heads(
            heads, [int(out[f"cycles_{c}_{h}"]) for h in range(case.heads)],
            [bool(out[f"error_{c}_{h}"]) for h in range(case.heads)]) | {"sim": simulator})
    return results


def oscillator_d_osc(cases) -> int:
    """The d_osc of the oscillator cases among validated `cases` (a softmax case has no
    anchors): 2 when there are none; AttentionHeadError when they differ (one build holds
    one d_osc)."""
    sizes = {head_d_osc(case) for case in cases if case.mode in OSCILLATOR_MODES}
    if len(sizes) > 1:
        raise AttentionHeadError(f"anchors: the cases have d_osc {sorted(sizes)}; one head "
                                 f"holds one d_osc")
    return sizes.pop() if sizes else 2


def stack_heads(heads: list[dict], cycles, errors) -> dict:
    """The heads of a case (each `decode_items`'s dict) as one result with golden
    attention_fixed's names: attn_int, out_int, theta_int, x_int, h_int, e_w, steps
    (NOT_CONVERGED where the detector did not fire), converged, cycles, error."""
    stack = {key: np.stack([h[key] for h in heads]) for key in heads[0]}
    return {"attn_int": stack["attn"], "out_int": stack["out"], "theta_int": stack["theta"],
            "x_int": stack["x"], "h_int": stack["h"], "e_w": stack["e_w"],
            "steps": np.where(stack["converged"], stack["steps"], NOT_CONVERGED),
            "converged": stack["converged"], "cycles": np.array(cycles, np.int64),
            "error": np.array(errors, bool)}


def run_attention_rtl(case, config: AttentionFixedConfig = DEFAULT_CONFIG, **options) -> dict:
    """Run one case (every head) on the attention head RTL; see `run_attention_rtl_batch`."""
    return run_attention_rtl_batch([case], config, **options)[0]
