"""Stimulus for the CORDIC: random vectors and the edge cases of each mode.

Vectors are integer arrays in the input formats of `oscarray.golden.cordic` (x, y: signed
data_width bits; z: unsigned phase_bits-bit binary angle in the circular modes, else signed).
"""

from __future__ import annotations

import numpy as np

from ..golden.cordic import CIRCULAR, CordicConfig, DEFAULT_MIN_DIVISOR

__all__ = ["random_vectors", "edge_vectors", "cordic_vectors"]


def _limits(config: CordicConfig):
    w = config.data_width
    return -(1 << (w - 1)), (1 << (w - 1)) - 1


def random_vectors(config: CordicConfig, n: int, rng: np.random.Generator):
    """n random vectors: uniform over the input ranges, plus, where a mode's accuracy depends
    on magnitude (vectoring) or domain (division), half of them drawn across that domain."""
    lo, hi = _limits(config)
    x = rng.integers(lo, hi + 1, n)
    y = rng.integers(lo, hi + 1, n)
    if config.coordinates == CIRCULAR:
        z = rng.integers(0, 1 << config.phase_bits, n)
    else:
        z = rng.integers(lo, hi + 1, n)
    half = n // 2
    lsb = 2.0 ** config.data_frac_bits
    if config.mode == "vector":
        # Log-uniform magnitudes from 2**-10 to full scale: small vectors stress the angle.
        magnitude = 2.0 ** rng.uniform(-10, 1, half) * lsb
        angle = rng.uniform(0, 2 * np.pi, half)
        x[:half] = np.clip(np.round(magnitude * np.cos(angle)), lo, hi)
        y[:half] = np.clip(np.round(magnitude * np.sin(angle)), lo, hi)
    elif config.mode == "divide":
        divisor = rng.uniform(DEFAULT_MIN_DIVISOR, 2, half) * rng.choice([-1, 1], half)
        quotient = rng.uniform(-1.99, 1.99, half)
        x[:half] = np.clip(np.round(divisor * lsb), lo, hi)
        y[:half] = np.clip(np.round(quotient * x[:half]), lo, hi)
        z[:half] = rng.integers(lo // 4, hi // 4, half)
    return x.astype(np.int64), y.astype(np.int64), z.astype(np.int64)


def edge_vectors(config: CordicConfig):
    """Every combination of edge data values with edge angles (or edge z values)."""
    lo, hi = _limits(config)
    one = 1 << config.data_frac_bits
    data_edges = [(0, 0), (hi, 0), (lo, 0), (0, hi), (0, lo), (hi, hi), (lo, lo), (lo, hi),
                  (hi, lo), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (one, 0),
                  (-one, 0), (one, one), (-one, one), (one, -1), (-one, 1), (one // 256, 0)]
    if config.coordinates == CIRCULAR:
        p = config.phase_bits
        octant = 1 << (p - 3)
        z_edges = sorted({(k * octant + d) % (1 << p) for k in range(8) for d in (-1, 0, 1)})
    else:
        z_edges = [lo, lo + 1, -one, -1, 0, 1, one // 2, one, hi - 1, hi,
                   round(np.log(2) / 2 * one), -round(np.log(2) / 2 * one)]
    xs, ys, zs = [], [], []
    for x, y in data_edges:
        for z in z_edges:
            xs.append(x), ys.append(y), zs.append(z)
    return tuple(np.array(v, dtype=np.int64) for v in (xs, ys, zs))


def cordic_vectors(config: CordicConfig, n: int, seed: int):
    """The edge cases followed by n random vectors (seeded)."""
    edges = edge_vectors(config)
    rand = random_vectors(config, n, np.random.default_rng(seed))
    return tuple(np.concatenate([e, r]) for e, r in zip(edges, rand))
