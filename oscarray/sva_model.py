"""The subject-verb agreement classifier (issue 8) in NumPy, with a pluggable attention engine.

Paper A's configuration for this task: d_model 32, one attention layer with 1 head, d_h 32,
d_osc 2, mean-pool readout, a linear head. One pre-LayerNorm transformer block:

    x   = tok_emb[tokens] + pos_emb                       (N, T, 32); <pad>'s embedding is 0
    y   = LN1(x);  q, k, v = y wq + bq, y wk + bk, y wv + bv      (one head, d_h = 32)
    a   = attention(q, k, v)            by the engine, causal (token i sees j <= i)
    h   = x + a wo + bo
    h   = h + relu(LN2(h) w1 + b1) w2 + b2                 (feed-forward, d_ff 64; meta
                                                            d_ff = 0: none, the ablation)
    z   = LNf(h);  pooled = mean of z over the sentence's real tokens
    logit = pooled wc + bc;  prediction 1 (the verb agrees) when logit > 0

The attention is paper A's oscillator attention (golden/attention.py: relu_eps coupling,
p = 1, analytic fixed point, d_osc = 2 anchors a_j = (cos phi_j, sin phi_j) learned per
position) or softmax attention (golden/softmax.py). Causal, because the sentences are padded
at the end and the engines have no key mask: with a causal mask no real token ever sees a
pad, so the padded T = 9 case computes exactly what the unpadded sentence would; pad rows
are left out of the mean.

The engine sees one case per sentence, (H, T, d_h) = (1, 9, 32), and chooses its own
power-of-two scales per tensor (golden-fixed, rtl); everything else is NumPy float64.
Engines (`ENGINES`): "golden-float" (attention_float / softmax_float), "golden-fixed"
(attention_fixed / softmax_fixed, the bit-exact specification of the RTL), "rtl" (every
sentence's head in one cocotb simulation, sim/attention.run_attention_rtl_batch; its
integers decoded with golden-fixed's scales, which the host chose).

The weights are npz files in oscarray/data (sva_<mechanism>.npz), written by
train/train_sva.py; `meta` (a JSON string) records the configuration and the training run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .sva_data import T, VOCAB

__all__ = ["MODELS", "ENGINES", "LN_EPS", "PARAMETERS", "SvaModel", "load_model",
           "model_path", "attention_cases", "run_engine", "layer_norm"]

MODELS = ("oscillator", "softmax")
ENGINES = ("golden-float", "golden-fixed", "rtl")
LN_EPS = 1e-5
D_MODEL, D_H, D_FF, D_OSC = 32, 32, 64, 2

# name -> shape (V = vocabulary size, F = d_ff); anchor_phase only in the oscillator model,
# ln2_*, w1, b1, w2, b2 only with a feed-forward block (d_ff > 0).
PARAMETERS = {
    "tok_emb": ("V", D_MODEL), "pos_emb": (T, D_MODEL),
    "ln1_g": (D_MODEL,), "ln1_b": (D_MODEL,),
    "wq": (D_MODEL, D_H), "bq": (D_H,), "wk": (D_MODEL, D_H), "bk": (D_H,),
    "wv": (D_MODEL, D_H), "bv": (D_H,), "wo": (D_H, D_MODEL), "bo": (D_MODEL,),
    "ln2_g": (D_MODEL,), "ln2_b": (D_MODEL,),
    "w1": (D_MODEL, "F"), "b1": ("F",), "w2": ("F", D_MODEL), "b2": (D_MODEL,),
    "lnf_g": (D_MODEL,), "lnf_b": (D_MODEL,),
    "wc": (D_MODEL,), "bc": (),
    "anchor_phase": (T,),
}
FFN_PARAMETERS = ("ln2_g", "ln2_b", "w1", "b1", "w2", "b2")


def layer_norm(x, g, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LN_EPS) * g + b


def model_path(mechanism: str) -> Path:
    if mechanism not in MODELS:
        raise ValueError(f"unknown model {mechanism!r}; choose one of {', '.join(MODELS)}")
    return Path(str(resources.files("oscarray") / "data" / f"sva_{mechanism}.npz"))


@dataclass
class SvaModel:
    """The classifier's weights (float64) and meta: mechanism ("oscillator" | "softmax"),
    causal, sigma, p, vocab, data_seed, data_sizes, and the training record."""

    mechanism: str
    params: dict
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mechanism not in MODELS:
            raise ValueError(f"unknown model {self.mechanism!r}")
        if list(self.meta.get("vocab", VOCAB)) != list(VOCAB):
            raise ValueError("the weights were trained on another vocabulary")
        for name, shape in PARAMETERS.items():
            if name == "anchor_phase" and self.mechanism != "oscillator":
                continue
            if name in FFN_PARAMETERS and not self.d_ff:
                continue
            sizes = {"V": len(VOCAB), "F": self.d_ff}
            want = tuple(sizes.get(s, s) for s in shape)
            got = np.shape(self.params.get(name))
            if got != want:
                raise ValueError(f"parameter {name}: shape {got}, expected {want}")
        self.params = {k: np.asarray(v, np.float64) for k, v in self.params.items()}

    @property
    def d_ff(self) -> int:
        return int(self.meta.get("d_ff", D_FF))

    @property
    def causal(self) -> bool:
        return bool(self.meta.get("causal", True))

    def anchors(self) -> np.ndarray:
        """(1, T, 2) unit anchors (cos phi_j, sin phi_j); ones for softmax (ignored)."""
        if self.mechanism != "oscillator":
            return np.ones((1, T, D_OSC))
        phase = self.params["anchor_phase"]
        return np.stack([np.cos(phase), np.sin(phase)], -1)[np.newaxis]

    def front(self, tokens) -> dict:
        """Everything before the attention: x (N, T, 32) and q, k, v (N, T, 32)."""
        p = self.params
        tokens = np.asarray(tokens, np.int64)
        x = p["tok_emb"][tokens] * (tokens != 0)[..., None] + p["pos_emb"]
        y = layer_norm(x, p["ln1_g"], p["ln1_b"])
        return {"x": x, "q": y @ p["wq"] + p["bq"], "k": y @ p["wk"] + p["bk"],
                "v": y @ p["wv"] + p["bv"]}

    def back(self, x, attention_out, lengths) -> np.ndarray:
        """Everything after the attention: the logits (N,) from x and the attention's
        out (N, T, 32)."""
        p = self.params
        h = x + attention_out @ p["wo"] + p["bo"]
        if self.d_ff:
            hidden = np.maximum(layer_norm(h, p["ln2_g"], p["ln2_b"]) @ p["w1"] + p["b1"], 0.0)
            h = h + hidden @ p["w2"] + p["b2"]
        z = layer_norm(h, p["lnf_g"], p["lnf_b"])
        mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
        pooled = (z * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled @ p["wc"] + p["bc"]

    def logits(self, tokens, lengths, engine: str = "golden-float", **options) -> np.ndarray:
        """The logits (N,) with the attention on `engine` (see `run_engine`)."""
        front = self.front(tokens)
        outs = run_engine(self, attention_cases(self, front), engine, **options)["out"]
        return self.back(front["x"], np.stack([o[0] for o in outs]), lengths)

    def predict(self, tokens, lengths, engine: str = "golden-float", **options) -> np.ndarray:
        return (self.logits(tokens, lengths, engine, **options) > 0).astype(np.int64)


def load_model(mechanism: str, path=None) -> SvaModel:
    """The shipped weights of `mechanism` (oscarray/data/sva_<mechanism>.npz) or `path`."""
    path = model_path(mechanism) if path is None else Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("mechanism", mechanism) != mechanism:
        raise ValueError(f"{path}: weights of the {meta['mechanism']} model, not {mechanism}")
    return SvaModel(mechanism, arrays, meta)


def attention_cases(model: SvaModel, front: dict) -> list[dict]:
    """One attention case per sentence: q, k, v (1, T, 32), anchors (1, T, 2), and the
    model's sigma, p, causal (golden/attention.py's keys; mode "analytic")."""
    anchors = model.anchors()
    common = {"anchors": anchors, "causal": np.array(model.causal)}
    if model.mechanism == "oscillator":
        common.update(sigma=np.array(model.meta.get("sigma", "relu_eps")),
                      p=np.array(int(model.meta.get("p", 1))), mode=np.array("analytic"))
    return [dict(common, q=q[None], k=k[None], v=v[None])
            for q, k, v in zip(front["q"], front["k"], front["v"])]


def _float(model, case):
    if model.mechanism == "oscillator":
        from .golden.attention import attention_float
        return attention_float(case)
    from .golden.softmax import softmax_float
    return softmax_float(case)


def _fixed(model, case):
    if model.mechanism == "oscillator":
        from .golden.attention_fixed import attention_fixed
        return attention_fixed(case)
    from .golden.softmax import softmax_fixed
    return softmax_fixed(case)


def _validated(model, case):
    if model.mechanism == "oscillator":
        from .golden.attention import validate_case
        return validate_case(case)
    from .golden.softmax import softmax_case
    return softmax_case(case)


# The integers compared between rtl and golden-fixed (those the RTL returns for the mode).
RTL_INTEGERS = {"oscillator": ("attn_int", "out_int", "theta_int", "x_int", "h_int"),
                "softmax": ("attn_int", "out_int")}


def run_engine(model: SvaModel, cases: list[dict], engine: str, *, progress=None,
               max_tokens: int = 16, max_d_h: int = 32, sim=None, build_root=None,
               fixed: list | None = None) -> dict:
    """Run the attention cases on `engine`: {"out": [(1, T, 32) float per case], ...}.

    "rtl" also returns "fixed" (golden-fixed's result per case, computed or passed in as
    `fixed`), "mismatches" (per case, how many of RTL_INTEGERS differ from golden-fixed's),
    "cycles" (per case) and "sim". The RTL's out integers are decoded with golden-fixed's
    scales (the host's exponents)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "golden-float":
        return {"out": [_float(model, c)["out"] for c in cases]}
    if engine == "golden-fixed":
        results = [_fixed(model, c) for c in cases]
        return {"out": [r["out"] for r in results], "results": results}
    from .sim.attention import run_attention_rtl_batch
    if fixed is None:
        fixed = [_fixed(model, c) for c in cases]
    modes = ("analytic",) if model.mechanism == "oscillator" else ("softmax",)
    validated = [_validated(model, c) for c in cases]
    if progress is not None:
        progress(f"rtl: {len(cases)} sentences in one simulation of the {modes[0]} head "
                 f"(T <= {max_tokens}, d_h <= {max_d_h}; the first run builds it)")
    rtl = run_attention_rtl_batch(validated, max_tokens=max_tokens, max_d_h=max_d_h,
                                  modes=modes, sim=sim, build_root=build_root)
    keys = RTL_INTEGERS[model.mechanism]
    mismatches = [int(sum(np.count_nonzero(np.asarray(r[key]) != np.asarray(g[key]))
                          for key in keys)) + int(np.asarray(r["error"]).any())
                  for r, g in zip(rtl, fixed)]
    outs = [r["out_int"] * 2.0 ** -g["scales"]["out"] for r, g in zip(rtl, fixed)]
    return {"out": outs, "fixed": fixed, "mismatches": mismatches,
            "cycles": [int(np.sum(r["cycles"])) for r in rtl],
            "sim": rtl[0]["sim"] if rtl else None}
