"""2**-y for y >= 0 in fixed point: the exponential of every softmax in the house.

Decided instead of the hyperbolic CORDIC (golden/cordic.py's "hyperbolic" mode): a softmax
needs exp(s - max s) <= 1 only, so after one multiply by log2(e) folded into the score
constant the argument is a base-2 exponent y >= 0, and

    2**-y = 2**-n * 2**-a/2**8 * 2**-b/2**16      y = n + a 2**-8 + b 2**-16 (Y_FRAC = 16)

is a shift and two 256-entry tables multiplied once: one DSP multiply and two small ROMs,
one result per clock at a constant latency, against 18 CORDIC micro-rotations, a range
reduction and a gain-compensated cosh + sinh. Relative error of the product is below
2**-15 (each table entry within half an LSB of 2**16 scale and >= 2**15); the CORDIC's is
about 2**-15 too at 18 bits, so nothing is lost.

Formats
-------
    y        unsigned, Y_FRAC = 16 fraction bits (value y / 2**16), saturated by the caller at
             Y_MAX = 2**Y_BITS - 1 (y < 64: 2**-64 is 0 at every output width here)
    tables   EXP2_HI[a] = R(2**16 2**(-a / 2**8)), EXP2_LO[b] = R(2**16 2**(-b / 2**16)),
             a, b in 0 .. 255: 17-bit unsigned, in [2**15, 2**16]
    output   e = R(EXP2_HI[a] EXP2_LO[b], 32 - out_frac + n), value e / 2**out_frac, so
             e = 2**out_frac exactly at y = 0 and e in [0, 2**out_frac]; shifts clamp at 63
             (the product is below 2**33, so every shift >= 34 gives 0 already)

R(v, s) = floor((v + 2**(s-1)) / 2**s), round half up (golden/cordic.py's round_shift).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Y_FRAC", "Y_BITS", "Y_MAX", "TABLE_BITS", "EXP2_HI", "EXP2_LO", "exp2_neg",
           "exp2_relative_error"]

Y_FRAC = 16                     # fraction bits of the exponent y
Y_BITS = Y_FRAC + 6             # y < 64
Y_MAX = (1 << Y_BITS) - 1
TABLE_INDEX_BITS = 8
TABLE_BITS = 17                 # entries in [2**15, 2**16]: 17 bits unsigned
TABLE_ONE = 1 << 16
MAX_RIGHT_SHIFT = 63


def _table(step: float) -> tuple[int, ...]:
    """R(2**16 2**(-index step)) for index 0 .. 255, computed from the exact float."""
    return tuple(math.floor(TABLE_ONE * 2.0 ** (-index * step) + 0.5)
                 for index in range(1 << TABLE_INDEX_BITS))


EXP2_HI = _table(2.0 ** -TABLE_INDEX_BITS)
EXP2_LO = _table(2.0 ** -Y_FRAC)


def exp2_neg(y, out_frac: int = 17) -> np.ndarray:
    """e = 2**-(y / 2**16) in units of 2**-out_frac, bit for bit as the RTL (module docstring).

    y: integer array, 0 <= y <= Y_MAX. out_frac: 1 .. 31."""
    y = np.asarray(y, dtype=np.int64)
    if y.size and (int(y.min()) < 0 or int(y.max()) > Y_MAX):
        raise ValueError(f"exp2_neg: y must be in 0 .. {Y_MAX}, got {int(y.min())} .. "
                         f"{int(y.max())}")
    if not 1 <= out_frac <= 31:
        raise ValueError(f"exp2_neg: out_frac must be 1 .. 31, not {out_frac}")
    n = y >> Y_FRAC
    a = (y >> (Y_FRAC - TABLE_INDEX_BITS)) & ((1 << TABLE_INDEX_BITS) - 1)
    b = y & ((1 << (Y_FRAC - TABLE_INDEX_BITS)) - 1)
    product = np.asarray(EXP2_HI, np.int64)[a] * np.asarray(EXP2_LO, np.int64)[b]
    shift = np.minimum(2 * 16 - out_frac + n, MAX_RIGHT_SHIFT)
    return (product + (np.int64(1) << (shift - 1))) >> shift


def exp2_relative_error() -> float:
    """The tables' worst relative error of the product before the output rounding:
    (1 + rel_hi)(1 + rel_lo) - 1, rel_* the largest |entry - exact| / exact of each table."""
    def worst(table, step):
        return max(abs(entry - TABLE_ONE * 2.0 ** (-i * step)) / (TABLE_ONE * 2.0 ** (-i * step))
                   for i, entry in enumerate(table))
    hi = worst(EXP2_HI, 2.0 ** -TABLE_INDEX_BITS)
    lo = worst(EXP2_LO, 2.0 ** -Y_FRAC)
    return (1 + hi) * (1 + lo) - 1
