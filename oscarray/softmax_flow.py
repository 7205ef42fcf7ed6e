"""`oscarray softmax`: an attention case through softmax attention on one engine.

The case is `oscarray attention`'s (golden/attention.py; anchors optional and ignored), the
result npz the same keys where they apply (attn, out; the integers and scales from
golden-fixed and rtl; cycles from rtl).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .flows import (
    _check_output_path,
    _check_plots_dir,
    _json_default,
    _say,
    check_engine,
    plot_attention,
    run_engine,
)

__all__ = ["SOFTMAX_ENGINES", "softmax_run", "softmax_rtl_mismatches", "softmax_rtl_result"]

SOFTMAX_RESULT_KEYS = ("attn", "out", "attn_int", "out_int", "g_int", "y_int")


def _golden_float(case, **options) -> dict:
    from .golden.softmax import softmax_float
    return softmax_float(case)


def _golden_fixed(case, **options) -> dict:
    from .golden.softmax import softmax_fixed
    return softmax_fixed(case)


def _rtl_capacity(case, max_tokens, max_d_h):
    from .flows import attention_rtl_capacity
    return attention_rtl_capacity(case.tokens, case.d_h, max_tokens, max_d_h)


def _check_rtl(case, max_tokens=None, max_d_h=None, **options):
    from .hdl.attention import check_case
    max_tokens, max_d_h = _rtl_capacity(case, max_tokens, max_d_h)
    check_case(case, max_tokens=max_tokens, max_d_h=max_d_h, modes=("softmax",))


def _rtl(case, max_tokens=None, max_d_h=None, sim=None, build_root=None, progress=None,
         cordic_arch="pipelined", mac_lanes=1, compact=False) -> dict:
    """The attention head built with the softmax mode only, in cocotb (`cordic_arch`: its
    divide CORDIC's; `mac_lanes`: its products per clock in SCORES and OUT; `compact`: its
    compact build, `AttentionHead`)."""
    from .sim.attention import run_attention_rtl

    max_tokens, max_d_h = _rtl_capacity(case, max_tokens, max_d_h)
    _say(progress, f"rtl: simulating a softmax head of capacity T <= {max_tokens}, "
                   f"d_h <= {max_d_h} (the first run of a capacity builds it; then cached)")
    rtl = run_attention_rtl(case, max_tokens=max_tokens, max_d_h=max_d_h, sim=sim,
                            build_root=build_root, modes=("softmax",),
                            cordic_arch=cordic_arch, mac_lanes=mac_lanes, compact=compact)
    return softmax_rtl_result(case, rtl)


def softmax_rtl_result(case, rtl: dict) -> dict:
    """`oscarray softmax --engine rtl`'s result from a softmax head's integers (`rtl`: as
    sim/attention.py `run_attention_rtl` or the board driver gives them): attn, out, the
    integers, the host's scales (golden-fixed's step 0), cycles per head."""
    from .golden.attention_fixed import FRAC
    from .golden.softmax import softmax_fixed
    scales = softmax_fixed(case)["scales"]          # the host's exponents (step 0)
    return {"attn": rtl["attn_int"] * 2.0 ** -FRAC, "out": rtl["out_int"] * 2.0 ** -scales["out"],
            "attn_int": rtl["attn_int"].astype(np.int64),
            "out_int": rtl["out_int"].astype(np.int64), "scales": scales,
            "cycles": np.asarray(rtl["cycles"]).astype(np.int64), "sim": rtl.get("sim")}


def softmax_rtl_mismatches(case, rtl: dict) -> int:
    """How many of the RTL's integers (attn_int, out_int) differ from golden-fixed's."""
    from .golden.softmax import softmax_fixed
    golden = softmax_fixed(case)
    return int(sum(np.count_nonzero(rtl[key] != golden[key]) for key in ("attn_int", "out_int")))


SOFTMAX_ENGINES = {"golden-float": _golden_float, "golden-fixed": _golden_fixed, "rtl": _rtl}


def _check_fixed(case, **options):
    from .golden.softmax import softmax_front_end
    softmax_front_end(case)


# What an engine adds to the case's validation, before any work (a ValueError if refused).
SOFTMAX_CASE_CHECKS = {"golden-fixed": _check_fixed, "rtl": _check_rtl}


def _load(case_path):
    from .golden.attention import AttentionCaseError
    from .golden.npz import read_npz
    from .golden.softmax import softmax_case
    arrays = read_npz(case_path, AttentionCaseError)
    try:
        return softmax_case(arrays)
    except AttentionCaseError as error:
        raise AttentionCaseError(f"{case_path}: {error}") from None


def softmax_run(case_path, engine: str, out=None, progress=None, *, plots=None,
                max_tokens=None, max_d_h=None, sim=None, build_root=None) -> dict:
    """Run a case through softmax attention on `engine`; write result.npz to `out` and the
    heatmaps (engine versus golden-float) into `plots`. Everything is checked before any
    work; the summary compares with golden-float, and rtl's integers with golden-fixed's
    (`mismatches`, 0 when bit-exact)."""
    from .golden.attention_fixed import ATTN_TARGET, OUT_TARGET
    from .golden.npz import write_npz
    from .golden.softmax import softmax_float

    check_engine("softmax", SOFTMAX_ENGINES, engine)
    out = _check_output_path("--out", out)
    plots = _check_plots_dir(plots)
    case = _load(case_path)
    options = {"max_tokens": max_tokens, "max_d_h": max_d_h} if engine == "rtl" else {}
    if engine in SOFTMAX_CASE_CHECKS:
        SOFTMAX_CASE_CHECKS[engine](case, **options)

    _say(progress, f"{engine}: softmax, {case.heads} head(s), T = {case.tokens}, "
                   f"d_h = {case.d_h}, causal = {case.causal}")
    result, elapsed = run_engine(SOFTMAX_ENGINES, engine, case, options, sim=sim,
                                 build_root=build_root, progress=progress)
    reference = result if engine == "golden-float" else softmax_float(case)
    mismatches = softmax_rtl_mismatches(case, result) if engine == "rtl" else None

    arrays = {key: np.asarray(result[key]) for key in SOFTMAX_RESULT_KEYS if key in result}
    if "scales" in result:
        arrays["scales"] = np.asarray(json.dumps(result["scales"], default=_json_default))
    if "cycles" in result:
        arrays["cycles"] = np.asarray(result["cycles"], np.int64)
    arrays["engine"] = np.asarray(engine)
    arrays["mechanism"] = np.asarray("softmax")
    if out is not None:
        write_npz(out, arrays)
    plot = None
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        plot = plot_attention(result["attn"], reference["attn"],
                              plots / f"{Path(case_path).stem}_softmax_{engine}.png",
                              engine=engine, reference_name="golden-float (softmax)",
                              title=f"{Path(case_path).name}: softmax, {engine}")
    v_max = float(np.abs(case.v).max())
    out_err = float(np.abs(result["out"] - reference["out"]).max())
    return {"engine": engine, "mechanism": "softmax", "case": str(case_path),
            "shape": [case.heads, case.tokens, case.d_h], "causal": case.causal,
            "max_attn_err": float(np.abs(result["attn"] - reference["attn"]).max()),
            "max_out_err_rel": out_err / v_max if v_max > 0 else out_err,
            "attn_target": ATTN_TARGET, "out_target_rel": OUT_TARGET,
            "cycles": None if "cycles" not in result else [int(c) for c in result["cycles"]],
            "mismatches": mismatches, "sim": result.get("sim"), "elapsed_s": elapsed,
            "out": None if out is None else str(out),
            "plot": None if plot is None else str(plot)}
