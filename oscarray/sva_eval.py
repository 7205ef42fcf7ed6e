"""`oscarray eval sva`: the trained subject-verb agreement classifiers through an attention engine.

eval_sva(model, engine, limit=None, progress=None, ...) runs a split (the test split by
default; the first `limit` sentences when given) through the classifier with its attention on
`engine` ("golden-float", "golden-fixed" or "rtl"; the rest of the model in NumPy float64, see
oscarray/sva_model.py) and reports accuracy overall, on hard sentences (the distractor's
number differs from the subject's) and on easy ones, and how often the predictions equal
golden-float's. "rtl" runs every sentence's attention head in ONE cocotb simulation and
checks its integers against golden-fixed bit for bit (`bit_exact`, `mismatched_sentences`).
"""

from __future__ import annotations

import time

import numpy as np

from .sva_data import sva_splits
from .sva_model import ENGINES, MODELS, SvaModel, attention_cases, load_model, run_engine

__all__ = ["eval_sva", "SPLITS"]

SPLITS = ("train", "validation", "test")


def _say(progress, message):
    if progress is not None:
        progress(message)


def _accuracy(pred, split) -> dict:
    correct = pred == split.label
    hard = split.hard
    return {"accuracy": float(correct.mean()) if len(correct) else float("nan"),
            "accuracy_hard": float(correct[hard].mean()) if hard.any() else float("nan"),
            "accuracy_easy": float(correct[~hard].mean()) if (~hard).any() else float("nan"),
            "correct": int(correct.sum()), "correct_hard": int(correct[hard].sum())}


def eval_sva(model, engine: str, limit: int | None = None, progress=None, *,
             split: str = "test", sim: str | None = None, build_root=None,
             max_tokens: int = 16, max_d_h: int = 32) -> dict:
    """Evaluate a trained classifier with its attention on `engine`.

    model: "oscillator" | "softmax" (the shipped weights, oscarray/data/sva_<model>.npz) or an
    SvaModel. engine: "golden-float" | "golden-fixed" | "rtl". limit: the first N sentences
    of the split (None: all; the split's order is shuffled at generation, so a prefix mixes
    kinds and labels). progress: a callable receiving one-line messages, or None. split:
    "test" (default), "validation" or "train". sim, build_root, max_tokens, max_d_h: the
    rtl engine's simulator (verilator default), build folder (default ./build/sim) and head
    capacity (one cached build per capacity and mechanism).

    Returns a JSON-ready dict: model, engine, split, sentences, hard_sentences, accuracy,
    accuracy_hard, accuracy_easy, correct, correct_hard (this engine), float_accuracy,
    float_accuracy_hard (golden-float on the same sentences), delta_pp (accuracy minus
    float_accuracy, percentage points), agreement_with_float (fraction of predictions equal
    to golden-float's), disagreements, recorded (the golden-float / golden-fixed test
    accuracy recorded when the weights were trained, or None), elapsed_s; for "rtl" also
    bit_exact (every sentence's attention integers equal golden-fixed's), mismatched_sentences,
    mismatches (integers differing in all), fixed_agreement (predictions equal to
    golden-fixed's), cycles (total clocks of the heads), sim.
    Raises ValueError for an unknown model, engine or split, or a limit < 1.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"--limit must be >= 1, not {limit}")
    if not isinstance(model, SvaModel):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        model = load_model(model)
    start = time.perf_counter()
    meta = model.meta
    data = sva_splits(meta.get("data_seed", 0), meta.get("data_sizes"))[split].subset(limit)
    _say(progress, f"{model.mechanism} model, {engine}: {len(data)} {split} sentences "
                   f"({int(data.hard.sum())} hard)")
    front = model.front(data.tokens)
    cases = attention_cases(model, front)
    float_out = run_engine(model, cases, "golden-float")["out"]
    float_logits = model.back(front["x"], np.stack([o[0] for o in float_out]), data.lengths)
    float_pred = (float_logits > 0).astype(np.int64)
    if engine == "golden-float":
        pred, extra = float_pred, {}
    else:
        result = run_engine(model, cases, engine, progress=progress, sim=sim,
                            build_root=build_root, max_tokens=max_tokens, max_d_h=max_d_h)
        logits = model.back(front["x"], np.stack([o[0] for o in result["out"]]), data.lengths)
        pred = (logits > 0).astype(np.int64)
        extra = {}
        if engine == "rtl":
            fixed_out = np.stack([f["out"][0] for f in result["fixed"]])
            fixed_pred = (model.back(front["x"], fixed_out, data.lengths) > 0).astype(np.int64)
            mismatches = np.asarray(result["mismatches"])
            extra = {"bit_exact": bool((mismatches == 0).all()),
                     "mismatched_sentences": int(np.count_nonzero(mismatches)),
                     "mismatches": int(mismatches.sum()),
                     "fixed_agreement": float((pred == fixed_pred).mean()),
                     "cycles": int(sum(result["cycles"])), "sim": result["sim"]}
    ours, reference = _accuracy(pred, data), _accuracy(float_pred, data)
    recorded = meta.get("recorded", {}).get(split) if limit is None else None
    summary = {"model": model.mechanism, "engine": engine, "split": split,
               "sentences": len(data), "hard_sentences": int(data.hard.sum()),
               "limit": limit, **ours,
               "float_accuracy": reference["accuracy"],
               "float_accuracy_hard": reference["accuracy_hard"],
               "delta_pp": 100.0 * (ours["accuracy"] - reference["accuracy"]),
               "delta_hard_pp": 100.0 * (ours["accuracy_hard"] - reference["accuracy_hard"]),
               "agreement_with_float": float((pred == float_pred).mean()),
               "disagreements": int(np.count_nonzero(pred != float_pred)),
               "recorded": recorded, **extra,
               "elapsed_s": time.perf_counter() - start}
    _say(progress, f"accuracy {100 * ours['accuracy']:.2f} % (hard "
                   f"{100 * ours['accuracy_hard']:.2f} %), agreement with golden-float "
                   f"{100 * summary['agreement_with_float']:.2f} %"
                   + ("" if engine != "rtl" else
                      f", rtl bit-exact on {len(data) - extra['mismatched_sentences']} of "
                      f"{len(data)} sentences"))
    return summary
