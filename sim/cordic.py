"""Run the CORDIC RTL in cocotb on a set of vectors and compare it with the golden model."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..golden.cordic import CIRCULAR, CordicConfig, cordic_fixed, error_budget, error_stats, \
    promised_errors, check_inputs
from ..hdl.cordic import Cordic
from .runner import run_cocotb

__all__ = ["CordicRun", "run_cordic_rtl", "compare_cordic", "save_vectors"]


@dataclass
class CordicRun:
    """What one RTL run of the CORDIC produced, and how it compares.

    x_out, y_out, z_out: the RTL's outputs. mismatches: vectors where the RTL differs from the
    golden fixed-point model (any output). stats: error versus the float ideal (output LSBs).
    """

    config: CordicConfig
    arch: str
    sim: str
    x_in: np.ndarray
    y_in: np.ndarray
    z_in: np.ndarray
    x_out: np.ndarray
    y_out: np.ndarray
    z_out: np.ndarray
    mismatches: int
    first_mismatches: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    cycles: int = 0
    wall_s: float = 0.0
    waves_path: Path | None = None

    def summary(self) -> dict:
        budget = error_budget(self.config)
        return {
            "mode": self.config.mode, "arch": self.arch, "sim": self.sim,
            "vectors": int(self.x_in.size), "mismatches": int(self.mismatches),
            "max_err_lsb": self.stats["max_err_lsb"], "rms_err_lsb": self.stats["rms_err_lsb"],
            "budget_lsb": budget["total_lsb"], "within_budget":
                self.stats["max_err_lsb"] <= budget["total_lsb"],
            "per_output": self.stats["per_output"],
            "cycles": int(self.cycles), "wall_s": round(float(self.wall_s), 3),
            "data_width": self.config.data_width, "data_frac_bits": self.config.data_frac_bits,
            "phase_bits": self.config.phase_bits, "iterations": self.config.iterations,
            "guard_bits": self.config.guard_bits,
            "angle_guard_bits": self.config.angle_guard_bits,
            "first_mismatches": self.first_mismatches,
            "waves": str(self.waves_path) if self.waves_path else None,
        }


def compare_cordic(config: CordicConfig, inputs, outputs, limit: int = 5):
    """Mismatch count and the first few mismatching vectors of outputs versus golden fixed."""
    expected = cordic_fixed(config, *inputs)
    differ = np.zeros(np.asarray(inputs[0]).shape, dtype=bool)
    for got, want in zip(outputs, expected):
        differ |= np.asarray(got) != want
    first = [{"index": int(i), "in": [int(v[i]) for v in inputs],
              "rtl": [int(v[i]) for v in outputs], "golden": [int(v[i]) for v in expected]}
             for i in np.flatnonzero(differ)[:limit]]
    return int(differ.sum()), first


def run_cordic_rtl(config: CordicConfig, arch: str, x, y, z, *, sim: str | None = None,
                   waves: bool = False, build_root: Path | None = None,
                   valid_prob: float = 1.0, ready_prob: float = 1.0, seed: int = 0,
                   verbose: bool = False, split_stages: bool = False) -> CordicRun:
    """Stream vectors through the RTL on a simulator and compare with golden and ideal.

    Inputs are checked against their formats before anything is built. Random input gaps
    (valid_prob < 1) and output backpressure (ready_prob < 1) exercise the handshake.
    `split_stages`: the pipelined variant with two stages per micro-op (`CordicPipelined`).
    """
    x, y, z = check_inputs(config, x, y, z)
    component = Cordic.create(config, arch, split_stages=split_stages)
    name = f"cordic_{config.mode}_{arch}" + ("_split" if split_stages else "")
    with tempfile.TemporaryDirectory(prefix="oscarray-cordic-") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(in_path, x=x, y=y, z=z)
        result = run_cocotb(
            component, name=name, test_module="oscarray.sim.cordic_tb", sim=sim, waves=waves,
            build_root=build_root, verbose=verbose,
            params={"in_path": str(in_path), "out_path": str(out_path),
                    "widths": [config.data_width, config.data_width, config.z_in_width],
                    "z_signed": config.coordinates != CIRCULAR, "valid_prob": valid_prob,
                    "ready_prob": ready_prob, "seed": seed})
        out = np.load(out_path)
        x_out, y_out, z_out = (out[k].astype(np.int64) for k in "xyz")
        cycles, wall_s = int(out["cycles"]), float(out["wall_s"])
    mismatches, first = compare_cordic(config, (x, y, z), (x_out, y_out, z_out))
    stats = error_stats(promised_errors(config, x, y, z, (x_out, y_out, z_out)))
    return CordicRun(config, arch, result.sim, x, y, z, x_out, y_out, z_out, mismatches, first,
                     stats, cycles, wall_s, result.waves_path)


def save_vectors(run: CordicRun, path: Path):
    """The --out file: integer arrays and the scalars that say what the integers mean."""
    np.savez(path, x_in=run.x_in, y_in=run.y_in, z_in=run.z_in, x_out=run.x_out,
             y_out=run.y_out, z_out=run.z_out,
             data_frac_bits=np.int64(run.config.data_frac_bits),
             phase_bits=np.int64(run.config.phase_bits), mode=np.str_(run.config.mode),
             arch=np.str_(run.arch))
