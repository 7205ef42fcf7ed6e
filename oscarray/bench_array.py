"""`oscarray bench array`: the array engine on UP5K and ECP5-85F against NumPy on this machine.

Per device: the largest N whose dense 16-bit coupling matrix fits the device's memory, a real
build of the engine (utilization, Fmax), clocks per Euler step from `cycles_per_step` (which
the cocotb tests check cycle for cycle against the RTL), coupling terms per second at Fmax, and NumPy float64 doing the same steps, naive and
in its fastest form, measured in the same run.
"""

from __future__ import annotations

from . import flows
from .bench_common import DEVICES, check_names, header

__all__ = ["DEVICES", "DEVICE_BUILDS", "header", "largest_dense_n", "ideal_cycles",
           "numpy_reference", "bench_row", "bench_array", "ARRAY_BENCH_COLUMNS"]

# Memory for the coupling matrix. Bank l holds rows l, l + P, ...: ceil(N / P) N words
# (`k_bank_depth`). UP5K: four 256 kbit SPRAMs of 16384 16-bit words; each of the P banks must
# fill whole SPRAMs, so P is 1, 2 or 4. ECP5-85F: 208 DP16KD blocks of 1024 16-bit words; each
# bank takes whole blocks, and the engine's other memories (acc, w, theta, the columns, drive)
# take 5 (measured: 197 blocks at N = 432, 48 lanes).
SPRAM_WORDS, SPRAMS = 16384, 4
DP16KD_WORDS, DP16KDS, OTHER_DP16KDS = 1024, 208, 5


def largest_dense_n(board: str, lanes: int) -> int:
    """The largest N whose N**2 16-bit couplings, banked over `lanes`, fit the memory."""
    def fits(n):
        per_bank = -(-n // lanes) * n
        if board == "icebreaker":
            return SPRAMS % lanes == 0 and per_bank <= SPRAMS // lanes * SPRAM_WORDS
        blocks = -(-per_bank // DP16KD_WORDS)
        return lanes * blocks + OTHER_DP16KDS <= DP16KDS
    n = 1
    while fits(n + 1):
        n += 1
    return n


def ideal_cycles(n: int, lanes: int, form: str) -> int:
    """The issue's ideal: N**2 / P coupling evaluations (pairwise), 2 N**2 MACs over 2 P
    multipliers (matvec), 2N CORDIC items (drive), plus the pipeline latency (two CORDIC
    passes): `cycles_per_step(..., ideal=True)`."""
    from .golden.array_fixed import ArrayFixedConfig
    from .hdl.array import cycles_per_step
    return cycles_per_step(ArrayFixedConfig(capacity=max(2, n)), n, form, ideal=True,
                           lanes=lanes)


def numpy_reference(n: int, progress=None) -> dict:
    flows._say(progress, f"NumPy float64 Euler steps at N = {n}")
    naive = flows.numpy_euler_rate(n, "naive")
    fastest = flows.numpy_euler_rate(n, "matvec")
    return {"numpy_naive_terms_per_s": naive["terms_per_s"],
            "numpy_matvec_terms_per_s": fastest["terms_per_s"],
            "numpy_naive_step_us": naive["step_us"],
            "numpy_matvec_step_us": fastest["step_us"]}


def bench_row(board: str, n: int, lanes: int, form: str, built: dict, cycles_per_step: int,
              numpy: dict) -> dict:
    """One table row from a build, a measured step and the NumPy figures."""
    step_s = cycles_per_step / (built["fmax_mhz"] * 1e6)
    # Coupling terms per step: N**2 sin(theta_j - theta_i) terms; the drive form has N.
    terms = (n if form == "drive" else n * n) / step_s
    ideal = ideal_cycles(n, lanes, form)
    return {"board": board, "device": built["device"], "form": form, "n": n, "lanes": lanes,
            "lut": built["lut"], "ff": built["ff"], "dsp": built["dsp"], "bram": built["bram"],
            "fmax_mhz": built["fmax_mhz"], "cycles_per_step": cycles_per_step,
            "ideal_cycles": ideal, "overhead": cycles_per_step / ideal - 1,
            "step_us": step_s * 1e6, "terms_per_s": terms,
            "vs_numpy_fastest": None if form == "drive"
            else terms / numpy["numpy_matvec_terms_per_s"], **numpy}


# What each device builds: capacity (the largest dense N its memory holds), MAC lanes, the
# CORDIC architecture that fits, and the forms (the pairwise lanes' CORDICs do not fit at N
# this large: matvec and drive).
DEVICE_BUILDS = {
    # UP5K: 4 lanes need 9 SB_MAC16 (2 per lane and the update's; the device has 8): 2 lanes,
    # iterative CORDIC.
    "up5k": {"board": "icebreaker", "lanes": 2, "cordic_arch": "iterative"},
    # ECP5-85F: 64 systolic lanes (128 of the 156 multipliers); the banks of N = 438 fill
    # three block RAMs each (7 rows x 438 = 3066 of 3072 words).
    "ecp5-85f": {"board": "ulx3s-85f", "lanes": 64, "cordic_arch": "pipelined"},
}


def bench_array(devices=("up5k", "ecp5-85f"), *, n=None, lanes=None,
                build_root="build/bench_array", progress=None) -> dict:
    """Build the matvec-and-drive engine per device and compare its coupling rate with
    NumPy's."""
    from .boards.array_build import build_array_engine

    rows = []
    for device in check_names("devices", devices, DEVICE_BUILDS, "('up5k', 'ecp5-85f')"):
        spec = DEVICE_BUILDS[device]
        board = spec["board"]
        width = lanes or spec["lanes"]
        size = n or largest_dense_n(board, width)
        flows._say(progress, f"{device}: building the array engine, N = {size}, "
                             f"{width} lanes, {spec['cordic_arch']} CORDIC")
        built = build_array_engine(board, size, width, ("matvec", "drive"),
                                   spec["cordic_arch"], build_root, progress)
        numpy = numpy_reference(size, progress)
        for form in ("matvec", "drive"):
            row = bench_row(board, size, width, form, built, built["cycles_per_step"][form],
                            numpy)
            row.update(cordic_arch=spec["cordic_arch"], spram=built.get("spram"),
                       build_s=built.get("seconds"))
            rows.append(row)
    return {**header(), "rows": rows}


ARRAY_BENCH_COLUMNS = [
    ("device", "device"), ("form", "form"), ("n", "N"), ("lanes", "lanes"), ("lut", "LC/LUT4"),
    ("ff", "FF"), ("dsp", "DSP"), ("bram", "BRAM"), ("spram", "SPRAM"),
    ("fmax_mhz", "Fmax MHz"), ("cycles_per_step", "clocks/step"),
    ("ideal_cycles", "ideal"), ("step_us", "us/step"), ("terms_per_s", "terms/s"),
    ("numpy_matvec_terms_per_s", "NumPy fastest"), ("numpy_naive_terms_per_s", "NumPy naive"),
    ("vs_numpy_fastest", "x NumPy"),
]
