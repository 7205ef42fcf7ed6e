"""The pieces of `oscarray bench array` that need no build: memory limits and row arithmetic."""

import pytest

from oscarray.bench_array import bench_array, bench_row, ideal_cycles, largest_dense_n


def test_largest_dense_n_matches_the_memories():
    # UP5K: 4 SPRAMs x 16384 16-bit words = 256**2 couplings, in 1, 2 or 4 banks.
    assert largest_dense_n("icebreaker", 1) == largest_dense_n("icebreaker", 4) == 256
    assert largest_dense_n("icebreaker", 3) < 256         # 3 banks cannot share 4 SPRAMs
    # ECP5-85F: 208 DP16KD of 1024 words; bank l holds ceil(N / P) rows of N words; the
    # other memories take 5 (measured: 197 blocks at N = 432, 48 lanes).
    assert largest_dense_n("ulx3s-85f", 48) == 432      # 9 rows x 432 = 3888 words: 4 blocks
    assert largest_dense_n("ulx3s-85f", 64) == 438      # 7 rows x 438 = 3066 words: 3 blocks
    for lanes in (8, 16, 48, 64):
        n = largest_dense_n("ulx3s-85f", lanes)

        def blocks(n, lanes=lanes):
            return lanes * -(-(-(-n // lanes) * n) // 1024) + 5
        assert blocks(n) <= 208 < blocks(n + 1)


def test_row_arithmetic():
    built = {"device": "LFE5U-85F", "lut": 1, "ff": 1, "dsp": 1, "bram": 1, "fmax_mhz": 100.0}
    numpy = {"numpy_matvec_terms_per_s": 1e9, "numpy_naive_terms_per_s": 1e7,
             "numpy_naive_step_us": 1.0, "numpy_matvec_step_us": 1.0}
    row = bench_row("ulx3s-85f", 100, 4, "matvec", built, 2600, numpy)
    assert row["step_us"] == pytest.approx(26.0)
    assert row["terms_per_s"] == pytest.approx(100 * 100 / 26e-6)
    latency = 2 * 32                                     # two CORDIC passes
    assert row["ideal_cycles"] == ideal_cycles(100, 4, "matvec") == 2500 + latency
    assert row["overhead"] == pytest.approx(2600 / (2500 + latency) - 1)
    assert row["vs_numpy_fastest"] == pytest.approx(row["terms_per_s"] / 1e9)
    drive = bench_row("ulx3s-85f", 100, 4, "drive", built, 200, numpy)
    assert drive["terms_per_s"] == pytest.approx(100 / 2e-6)      # N terms, not N**2
    assert drive["vs_numpy_fastest"] is None


def test_unknown_device_refused_before_any_build(tmp_path):
    with pytest.raises(ValueError, match="unknown device"):
        bench_array(["up5k", "tpu"], build_root=tmp_path)
    assert not any(tmp_path.iterdir())
