"""Run quantized array cases on the array engine RTL in cocotb (`array_tb.py`).

One build serves every case of one format (capacity, A, P) and lane count: the engine is
elaborated without contents and each case is written through its `load` port (`load="port"`,
the default). `load="init"` elaborates the case into the Memory init instead (one build per case;
it checks the reset contents).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..golden.array_fixed import ArrayFixedConfig, QuantizedCase
from ..hdl.array import (ENGINE_FORMS, ArrayEngine, check_cordic_arch, check_forms, load_layout,
                         load_writes, order_layout)
from .runner import run_cocotb
from .streams import layout_fields

__all__ = ["run_array_rtl", "run_array_rtl_batch", "LOAD_MODES"]

LOAD_MODES = ("port", "init")


def _engine_config(cases) -> ArrayFixedConfig:
    configs = {q.config for q in cases}
    if len(configs) != 1:
        raise ValueError(f"one RTL run takes cases of one format, got {sorted(map(str, configs))}")
    return configs.pop()


def run_array_rtl_batch(cases: list[QuantizedCase], trace: bool = False, sim: str | None = None,
                        build_root: Path | None = None, *, load: str = "port",
                        order_ready_prob: float = 1.0, seed: int = 0, lanes: int = 1,
                        forms=ENGINE_FORMS, cordic_arch: str = "pipelined",
                        start_writes=None, verbose: bool = False) -> list[dict]:
    """Run each case on one engine of `lanes` coupling lanes, one after another in one
    simulation; one dict per case (see `run_array_rtl`). `forms`, `cordic_arch`: the
    engine's build options (`ArrayEngine`); a case in a form left out is refused first.
    `start_writes`: per case, a function of its `load_writes` rows giving the row to send in
    the clock of the start (the engine's contract: it counts for that run), or None."""
    if load not in LOAD_MODES:
        raise ValueError(f"unknown load mode {load!r}; choose one of {', '.join(LOAD_MODES)}")
    if not cases:
        return []
    config = _engine_config(cases)
    forms, cordic_arch = check_forms(forms), check_cordic_arch(cordic_arch)
    if load == "init" and len(cases) != 1:
        raise ValueError("load='init' elaborates one case into the engine: pass one case")
    # Encoding every case first also validates it (form, sizes) before any build.
    writes = [load_writes(q, config, lanes, forms) for q in cases]
    options = dict(lanes=lanes, forms=forms, cordic_arch=cordic_arch)
    if load == "init":
        engine = ArrayEngine(config, cases[0], **options)
        writes = [np.zeros((0, 3), np.int64)]
    else:
        engine = ArrayEngine(config, **options)
    name = f"array_c{config.capacity}_a{config.acc_bits}_p{config.phase_bits}_l{lanes}"
    if forms != ENGINE_FORMS:
        name += "_" + "_".join(forms)
    if cordic_arch != "pipelined":
        name += f"_{cordic_arch}"
    _, load_widths, _ = layout_fields(load_layout(config, lanes))
    order_width = order_layout(config).size // 2
    with tempfile.TemporaryDirectory(prefix="oscarray-array-") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        arrays = {"count": len(cases)}
        for c, (q, w) in enumerate(zip(cases, writes)):
            arrays[f"writes_{c}"], arrays[f"n_{c}"] = w, q.n
            choose = start_writes[c] if start_writes else None
            arrays[f"start_write_{c}"] = -1 if choose is None or not len(w) else choose(w)
        np.savez(in_path, **arrays)
        result = run_cocotb(
            engine, name=name, test_module="oscarray.sim.array_tb", sim=sim,
            build_root=build_root, verbose=verbose,
            params={"in_path": str(in_path), "out_path": str(out_path), "trace": trace,
                    "load_widths": load_widths, "order_width": order_width,
                    "acc_bits": config.acc_bits, "order_ready_prob": order_ready_prob,
                    "seed": seed})
        out = dict(np.load(out_path))
    return [_result(q, out, c, trace, result.sim) for c, q in enumerate(cases)]


def _result(q: QuantizedCase, out: dict, c: int, trace: bool, sim: str) -> dict:
    steps = int(out[f"steps_{c}"])
    result = {"acc": out[f"acc_{c}"].astype(np.uint64),
              "order_sums": out[f"order_{c}"].astype(np.int64),
              "steps_taken": steps, "cycles": int(out[f"cycles_{c}"]),
              "converged": bool(out[f"converged_{c}"]), "sim": sim, "trajectory": None}
    if trace:
        # The update port writes n accumulators per step, in index order.
        updates = out[f"updates_{c}"]
        if updates.shape[0] != steps * q.n or \
                not np.array_equal(updates[:, 0], np.tile(np.arange(q.n), steps)):
            raise RuntimeError(f"the engine wrote {updates.shape[0]} accumulators in "
                               f"{steps} steps of {q.n}: the update port is out of order")
        rows = updates[:, 1].astype(np.uint64).reshape(steps, q.n)
        result["trajectory"] = np.vstack([q.acc0.astype(np.uint64)[None, :], rows])
    return result


def run_array_rtl(q: QuantizedCase, trace: bool = False, sim: str | None = None,
                  build_root: Path | None = None, **options) -> dict:
    """Run one quantized case on the engine RTL.

    Returns a dict: acc (N,) uint64 final accumulators, order_sums (steps_taken + 1, 2) int64,
    steps_taken, cycles (clocks from start to done), converged, sim, and trajectory
    ((steps_taken + 1, N) uint64 accumulators) when `trace`, else None. Options: see
    `run_array_rtl_batch`.
    """
    return run_array_rtl_batch([q], trace, sim, build_root, **options)[0]
