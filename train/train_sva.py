"""Train the subject-verb agreement classifiers of issue 8 (PyTorch, CPU, float64, one thread).

    .venv/bin/pip install -e ".[train]"      # torch==2.13.0 (a CPU build here)
    .venv/bin/python train/train_sva.py      # both models, 5 seeds each, and the ablation

For each model ("oscillator", "softmax") and each seed 0..4 it trains the classifier of
oscarray/sva_model.py (the same mathematics as the NumPy inference, written again in torch:
the oscillator attention's analytic fixed point exactly as golden/attention.py computes it),
keeps the epoch with the best validation accuracy, and reports validation and test accuracy
(overall and hard). A run *fails* when its best validation accuracy is below FAIL_BELOW
(0.9: a model that gets the easy sentences right and guesses on the hard ones reaches 0.75).
The seed with the best validation accuracy is shipped (oscarray/data/sva_<model>.npz, with
its record in `meta`), and the NumPy engines' test accuracy of the shipped weights
(golden-float, golden-fixed) is recorded there too; train/sva_results.json has everything.
The test split chooses nothing: epochs and seeds are chosen on validation.

Ablation (reported in sva_results.json, not shipped): the same 5 seeds per model without the
feed-forward block (d_ff = 0: embeddings, attention with its residual, final LayerNorm,
mean-pool, linear head), where the attention is the only place subject and verb meet.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


from oscarray.golden.attention import RELU_EPS, ZERO_DRIVE_RTOL  # noqa: E402
from oscarray.sva_data import SEED as DATA_SEED  # noqa: E402
from oscarray.sva_data import SIZES, T, VOCAB, sva_splits  # noqa: E402
from oscarray.sva_model import D_FF, D_H, D_MODEL, LN_EPS, MODELS, SvaModel  # noqa: E402

FAIL_BELOW = 0.9
SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 40
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 0.01
CAUSAL = True
SIGMA, P = "relu_eps", 1

torch.set_default_dtype(torch.float64)


class Classifier(nn.Module):
    """oscarray/sva_model.py's model in torch (same parameter names, x @ W convention)."""

    def __init__(self, mechanism: str, d_ff: int = D_FF):
        super().__init__()
        self.mechanism = mechanism
        self.d_ff = d_ff
        V = len(VOCAB)

        def param(*shape, scale):
            return nn.Parameter(torch.randn(*shape) * scale)

        def linear(n_in, n_out):
            bound = 1 / math.sqrt(n_in)
            return (nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound)),
                    nn.Parameter(torch.empty(n_out).uniform_(-bound, bound)))

        self.tok_emb = param(V, D_MODEL, scale=1.0)
        self.pos_emb = param(T, D_MODEL, scale=1.0)
        for name in ("ln1", "ln2", "lnf") if d_ff else ("ln1", "lnf"):
            setattr(self, f"{name}_g", nn.Parameter(torch.ones(D_MODEL)))
            setattr(self, f"{name}_b", nn.Parameter(torch.zeros(D_MODEL)))
        self.wq, self.bq = linear(D_MODEL, D_H)
        self.wk, self.bk = linear(D_MODEL, D_H)
        self.wv, self.bv = linear(D_MODEL, D_H)
        self.wo, self.bo = linear(D_H, D_MODEL)
        if d_ff:
            self.w1, self.b1 = linear(D_MODEL, d_ff)
            self.w2, self.b2 = linear(d_ff, D_MODEL)
        wc, bc = linear(D_MODEL, 1)
        self.wc, self.bc = nn.Parameter(wc.data[:, 0].clone()), nn.Parameter(bc.data[0].clone())
        if mechanism == "oscillator":   # evenly spread at the start, learned
            self.anchor_phase = nn.Parameter(2 * math.pi * torch.arange(T) / T)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool)) if CAUSAL \
            else torch.ones(T, T, dtype=torch.bool)
        self.register_buffer("mask", mask)

    @staticmethod
    def _ln(x, g, b):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + LN_EPS) * g + b

    def oscillator(self, q, k, v):
        """golden/attention.py, analytic mode: W = relu_eps(q k / sqrt d), masked; h = W a;
        x* = h / |h| (e_1 for a zero drive); A = max(0, 1 + x* . a)^p masked, row-normalized."""
        raw = q @ k.transpose(-1, -2) / math.sqrt(D_H)
        w = (torch.relu(raw) + RELU_EPS) * self.mask
        a = torch.stack([torch.cos(self.anchor_phase), torch.sin(self.anchor_phase)], -1)
        a = a / a.norm(dim=-1, keepdim=True)
        h = w @ a
        norm = h.norm(dim=-1, keepdim=True)
        zero = norm <= ZERO_DRIVE_RTOL * w.sum(-1, keepdim=True)
        e1 = torch.tensor([1.0, 0.0])
        x = torch.where(zero, e1, h / torch.where(zero, torch.ones_like(norm), norm))
        scores = torch.clamp(1.0 + x @ a.T, min=0.0) ** P * self.mask
        attn = scores / scores.sum(-1, keepdim=True)
        return attn @ v

    def softmax(self, q, k, v):
        raw = q @ k.transpose(-1, -2) / math.sqrt(D_H)
        raw = raw.masked_fill(~self.mask, float("-inf"))
        return torch.softmax(raw, -1) @ v

    def forward(self, tokens, lengths):
        x = self.tok_emb[tokens] * (tokens != 0).unsqueeze(-1) + self.pos_emb
        y = self._ln(x, self.ln1_g, self.ln1_b)
        q, k, v = y @ self.wq + self.bq, y @ self.wk + self.bk, y @ self.wv + self.bv
        a = self.oscillator(q, k, v) if self.mechanism == "oscillator" else self.softmax(q, k, v)
        h = x + a @ self.wo + self.bo
        if self.d_ff:
            hidden = torch.relu(self._ln(h, self.ln2_g, self.ln2_b) @ self.w1 + self.b1)
            h = h + hidden @ self.w2 + self.b2
        z = self._ln(h, self.lnf_g, self.lnf_b)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).unsqueeze(-1)
        pooled = (z * mask).sum(1) / mask.sum(1)
        return pooled @ self.wc + self.bc


def _tensors(split):
    return (torch.as_tensor(np.array(split.tokens)), torch.as_tensor(np.array(split.lengths)),
            torch.as_tensor(np.array(split.label), dtype=torch.float64),
            np.array(split.hard))


def _accuracy(model, data) -> tuple[float, float]:
    tokens, lengths, label, hard = data
    with torch.no_grad():
        pred = (model(tokens, lengths) > 0).double()
    correct = (pred == label).numpy()
    return float(correct.mean()), float(correct[hard].mean())


def train_one(mechanism: str, seed: int, splits, log, d_ff: int = D_FF) -> dict:
    torch.manual_seed(seed)
    model = Classifier(mechanism, d_ff)
    train, val, test = (_tensors(splits[s]) for s in ("train", "validation", "test"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(train[0]) / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, epochs=EPOCHS,
                                                   steps_per_epoch=steps_per_epoch,
                                                   pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    best = {"val": -1.0}
    start = time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(train[0]), generator=generator)
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            logits = model(train[0][idx], train[1][idx])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, train[2][idx])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        val_acc, val_hard = _accuracy(model, val)
        if val_acc > best["val"]:
            best = {"val": val_acc, "val_hard": val_hard, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.named_parameters()}}
        log(f"  {mechanism} seed {seed} epoch {epoch:2d}: loss {total / len(order):.4f} "
            f"val {val_acc:.4f} (hard {val_hard:.4f})")
    model.load_state_dict(best.pop("state"), strict=False)
    test_acc, test_hard = _accuracy(model, test)
    params = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    record = {"seed": seed, "best_epoch": best["epoch"], "val_accuracy": best["val"],
              "val_accuracy_hard": best["val_hard"], "test_accuracy": test_acc,
              "test_accuracy_hard": test_hard, "failed": best["val"] < FAIL_BELOW,
              "train_s": time.perf_counter() - start}
    return {"record": record, "params": params}


def _summary(records, key):
    values = np.array([r[key] for r in records])
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "min": float(values.min()), "max": float(values.max())}


def _train_seeds(mechanism, seeds, splits, log, d_ff, label):
    runs = []
    for seed in seeds:
        run = train_one(mechanism, seed, splits, log, d_ff)
        r = run["record"]
        print(f"{label} {mechanism} seed {seed}: val {r['val_accuracy']:.4f} "
              f"(hard {r['val_accuracy_hard']:.4f}) test {r['test_accuracy']:.4f} "
              f"(hard {r['test_accuracy_hard']:.4f}) epoch {r['best_epoch']}"
              f"{' FAILED' if r['failed'] else ''}, {r['train_s']:.0f} s", flush=True)
        runs.append(run)
    return runs


def _report(records) -> dict:
    return {"seeds": records, "failures": sum(r["failed"] for r in records),
            "test_accuracy": _summary(records, "test_accuracy"),
            "test_accuracy_hard": _summary(records, "test_accuracy_hard"),
            "val_accuracy": _summary(records, "val_accuracy")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--no-ablation", action="store_true",
                        help="skip the ablation without the feed-forward block (reported, "
                             "not shipped)")
    parser.add_argument("--out-dir", default=str(ROOT / "oscarray" / "data"))
    parser.add_argument("--results", default=str(ROOT / "train" / "sva_results.json"))
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def log(message):
        if args.verbose:
            print(message, flush=True)

    from oscarray.sva_eval import eval_sva

    splits = sva_splits(DATA_SEED, SIZES)
    config = {"epochs": EPOCHS, "batch": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY,
              "optimizer": "AdamW, one-cycle schedule, gradient clip 1.0, float64",
              "selection": "per seed the epoch of best validation accuracy; shipped: the "
                           "seed of best validation accuracy",
              "fail_below_val_accuracy": FAIL_BELOW, "torch": torch.__version__,
              "data_seed": DATA_SEED, "data_sizes": SIZES, "seeds": list(args.seeds)}
    results = {"config": config, "models": {}, "ablation_no_ffn": {}}
    started = time.perf_counter()
    for mechanism in args.models:
        runs = _train_seeds(mechanism, args.seeds, splits, log, D_FF, "d_ff 64")
        records = [run["record"] for run in runs]
        chosen = max(range(len(runs)), key=lambda i: (records[i]["val_accuracy"], -i))
        meta = {"mechanism": mechanism, "causal": CAUSAL, "sigma": SIGMA, "p": P,
                "d_model": D_MODEL, "d_h": D_H, "d_ff": D_FF, "d_osc": 2, "heads": 1,
                "readout": "mean-pool", "vocab": list(VOCAB), "data_seed": DATA_SEED,
                "data_sizes": SIZES, "training": config, "seeds": records,
                "chosen_seed": records[chosen]["seed"]}
        model = SvaModel(mechanism, runs[chosen]["params"], meta)
        recorded = {}
        for engine in ("golden-float", "golden-fixed"):
            r = eval_sva(model, engine)
            recorded[engine] = {"accuracy": r["accuracy"], "accuracy_hard": r["accuracy_hard"],
                                "sentences": r["sentences"],
                                "agreement_with_float": r["agreement_with_float"]}
            print(f"{mechanism} (seed {meta['chosen_seed']}) {engine}: test "
                  f"{r['accuracy']:.4f} (hard {r['accuracy_hard']:.4f}), agreement with "
                  f"float {r['agreement_with_float']:.4f}", flush=True)
        meta["recorded"] = {"test": recorded}
        out = Path(args.out_dir) / f"sva_{mechanism}.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, meta=np.array(json.dumps(meta)), **runs[chosen]["params"])
        results["models"][mechanism] = {
            **_report(records), "chosen_seed": meta["chosen_seed"], "shipped_test": recorded,
            "weights": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)}
    if not args.no_ablation:
        for mechanism in args.models:
            runs = _train_seeds(mechanism, args.seeds, splits, log, 0, "no FFN")
            results["ablation_no_ffn"][mechanism] = _report([r["record"] for r in runs])
    results["elapsed_s"] = time.perf_counter() - started
    Path(args.results).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.results} ({results['elapsed_s']:.0f} s)")
    for name, group in (("d_ff 64 (shipped)", results["models"]),
                        ("no FFN (ablation)", results["ablation_no_ffn"])):
        for mechanism, r in group.items():
            print(f"{name:18s} {mechanism:10s} test {100 * r['test_accuracy']['mean']:.2f} "
                  f"+- {100 * r['test_accuracy']['std']:.2f} %, hard "
                  f"{100 * r['test_accuracy_hard']['mean']:.2f} +- "
                  f"{100 * r['test_accuracy_hard']['std']:.2f} %, failures "
                  f"{r['failures']}/{len(r['seeds'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
