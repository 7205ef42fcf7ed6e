"""The pieces of `oscarray bench array` that need no build: memory limits and row arithmetic."""

import pytest

from oscarray.bench_array import bench_array, bench_row, ideal_cycles, largest_dense_n


def test_largest_dense_n_matches_the_memories():
    # UP5K: 4 SPRAMs x 16384 16-bit words = 256**2 couplings, in 1, 2 or 4 banks.
    assert largest_dense_n("icebreaker", 1) == largest_dense_n("icebreaker", 4) == 256
    assert largest_dense_n("icebreaker", 3) < 256         # 3 banks cannot share 4 SPRAMs
    # ECP5-85F: 208 DP16KD; 16 lanes measured to fit N = 424 (16 cos/sin copies + 4 others).
    assert largest_dense_n("ulx3s-85f", 16) == 424
    n = largest_dense_n("ulx3s-85f", 8)
    assert 8 * -(-(-(-n * n // 8)) // 1024) + 12 <= 208
    assert 8 * -(-(-(-(n + 1) * (n + 1) // 8)) // 1024) + 12 > 208


def test_row_arithmetic():
    built = {"device": "LFE5U-85F", "lut": 1, "ff": 1, "dsp": 1, "bram": 1, "fmax_mhz": 100.0}
    numpy = {"numpy_matvec_terms_per_s": 1e9, "numpy_naive_terms_per_s": 1e7,
             "numpy_naive_step_us": 1.0, "numpy_matvec_step_us": 1.0}
    row = bench_row("ulx3s-85f", 100, 4, "matvec", built, 2600, numpy)
    assert row["step_us"] == pytest.approx(26.0)
    assert row["terms_per_s"] == pytest.approx(100 * 100 / 26e-6)
    assert row["ideal_cycles"] == ideal_cycles(100, 4, "matvec") == 2500
    assert row["overhead"] == pytest.approx(0.04)
    assert row["vs_numpy_fastest"] == pytest.approx(row["terms_per_s"] / 1e9)
    drive = bench_row("ulx3s-85f", 100, 4, "drive", built, 200, numpy)
    assert drive["terms_per_s"] == pytest.approx(100 / 2e-6)      # N terms, not N**2
    assert drive["vs_numpy_fastest"] is None


def test_unknown_device_refused_before_any_build(tmp_path):
    with pytest.raises(ValueError, match="unknown device"):
        bench_array(["up5k", "tpu"], build_root=tmp_path)
    assert not any(tmp_path.iterdir())
