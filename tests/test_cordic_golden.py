"""The CORDIC golden model: its error budget, measured against an independent float oracle."""

import math

import numpy as np
import pytest

from oscarray.golden.cordic import (MODES, CordicConfig, CordicConfigError, cordic_fixed,
                                    error_budget, error_stats, promised_errors)
from oscarray.sim.cordic_vectors import cordic_vectors, edge_vectors

N = 100_000


@pytest.fixture(scope="module", params=list(MODES))
def mode_run(request):
    config = CordicConfig(request.param)
    inputs = cordic_vectors(config, N, seed=7)
    return config, inputs, cordic_fixed(config, *inputs)


def test_defaults_meet_the_issue_accuracy():
    # The issue's promise at the default formats: 2 LSB rotation, 2 LSB magnitude, 2 phase LSB.
    for mode in ("rotate", "vector"):
        config = CordicConfig(mode)
        assert (config.data_width, config.phase_bits, config.data_frac_bits) == (18, 16, 16)
        budget = error_budget(config)
        assert budget["total_lsb"] <= 2.0
    assert error_budget(CordicConfig("vector"))["angle_lsb"] <= 2.0


def test_measured_error_within_budget(mode_run):
    config, inputs, outputs = mode_run
    stats = error_stats(promised_errors(config, *inputs, outputs))
    assert stats["max_err_lsb"] <= error_budget(config)["total_lsb"]
    # The budget is a bound, not a description: typical errors are well below it.
    assert stats["rms_err_lsb"] < 0.6


def test_rotation_against_independent_oracle():
    config = CordicConfig("rotate")
    x, y, z = cordic_vectors(config, N, seed=3)
    xo, yo, _ = cordic_fixed(config, x, y, z)
    theta = 2 * math.pi * z / 2 ** 16
    want_x = np.clip(x * np.cos(theta) - y * np.sin(theta), -2 ** 17, 2 ** 17 - 1)
    want_y = np.clip(x * np.sin(theta) + y * np.cos(theta), -2 ** 17, 2 ** 17 - 1)
    assert np.abs(xo - want_x).max() <= 2 and np.abs(yo - want_y).max() <= 2


def test_vectoring_against_independent_oracle():
    config = CordicConfig("vector")
    x, y, z = cordic_vectors(config, N, seed=4)
    xo, _, zo = cordic_fixed(config, x, y, z)
    magnitude = np.hypot(x, y)
    assert np.abs(xo - np.minimum(magnitude, 2 ** 17 - 1)).max() <= 2
    turns = (z / 2 ** 16 + np.arctan2(y, x) / (2 * math.pi)) % 1
    error = np.abs((zo / 2 ** 16 - turns + 0.5) % 1 - 0.5) * 2 ** 16
    large = magnitude >= 2 ** (16 - 8)
    assert large.sum() > N // 4
    assert error[large].max() <= 2


def test_zero_vector_keeps_its_angle():
    config = CordicConfig("vector")
    z = np.arange(0, 2 ** 16, 4099)
    xo, yo, zo = cordic_fixed(config, np.zeros_like(z), np.zeros_like(z), z)
    assert (xo == 0).all() and (yo == 0).all() and (zo == z).all()


def test_quadrant_boundaries_are_exact_for_exact_rotations():
    # Rotating (1, 0) by a multiple of a quarter turn lands on an axis.
    config = CordicConfig("rotate")
    one = 1 << 16
    z = np.array([0, 1 << 14, 2 << 14, 3 << 14])
    xo, yo, _ = cordic_fixed(config, np.full(4, one), np.zeros(4, np.int64), z)
    np.testing.assert_allclose(xo, [one, 0, -one, 0], atol=2)
    np.testing.assert_allclose(yo, [0, one, 0, -one], atol=2)


def test_division_and_exp_against_numpy():
    divide = CordicConfig("divide")
    x = np.array([1 << 15, -(1 << 16), 3 << 15]); y = np.array([1 << 15, 1 << 15, -(1 << 16)])
    _, _, q = cordic_fixed(divide, x, y, np.zeros(3, np.int64))
    np.testing.assert_allclose(q / 2 ** 16, y / x, atol=2 / 2 ** 16)
    hyper = CordicConfig("hyperbolic")
    z = np.array([-(2 ** 17), -(1 << 16), 0, 1 << 15, 45000])
    c, s, e = cordic_fixed(hyper, np.zeros(5, np.int64), np.zeros(5, np.int64), z)
    zr = z / 2 ** 16
    top = (2 ** 17 - 1) / 2 ** 16          # outputs saturate at the top of Q2.16
    np.testing.assert_allclose(e / 2 ** 16, np.minimum(np.exp(zr), top), atol=2 / 2 ** 16)
    np.testing.assert_allclose(c / 2 ** 16, np.minimum(np.cosh(zr), top), atol=2 / 2 ** 16)
    np.testing.assert_allclose(s / 2 ** 16, np.clip(np.sinh(zr), -2, top), atol=2 / 2 ** 16)
    assert c[0] == 2 ** 17 - 1                # cosh(-2) = 3.76 saturates, never wraps


def test_saturation_instead_of_wrap():
    # The corner (max, max) has magnitude 2.83 > 2: the magnitude saturates, never wraps.
    config = CordicConfig("vector")
    hi = 2 ** 17 - 1
    xo, _, zo = cordic_fixed(config, np.array([hi, -hi - 1]), np.array([hi, -hi - 1]),
                             np.zeros(2, np.int64))
    assert (xo == hi).all()
    np.testing.assert_allclose(zo, [2 ** 13, 5 * 2 ** 13], atol=2)


@pytest.mark.parametrize("width,phase_bits", [(12, 10), (16, 14), (24, 20)])
def test_other_widths_resolve_and_meet_their_budget(width, phase_bits):
    for mode in MODES:
        config = CordicConfig(mode, data_width=width, phase_bits=phase_bits)
        inputs = cordic_vectors(config, 20_000, seed=1)
        stats = error_stats(promised_errors(config, *inputs, cordic_fixed(config, *inputs)))
        assert stats["max_err_lsb"] <= error_budget(config)["total_lsb"] <= 2.0


def test_budget_terms_sum_to_total():
    budget = error_budget(CordicConfig("rotate"))
    assert budget["total_lsb"] == pytest.approx(sum(budget["terms"].values()))


def test_gain_factors_compensate_the_gain():
    config = CordicConfig("rotate")
    product = math.prod(1 + s * 2.0 ** -k for s, k in config.gain_factors)
    assert abs(product * config.rotation_gain - 1) < 2.0 ** -config.x_frac_bits


def test_too_few_iterations_is_refused_with_the_reason():
    with pytest.raises(CordicConfigError, match="cannot reach 2.0 LSB"):
        CordicConfig("rotate", iterations=10)
    with pytest.raises(CordicConfigError, match="cannot reach"):
        CordicConfig("vector", guard_bits=2)


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "spin"}, "unknown CORDIC mode"),
    ({"data_width": 4}, "data_width"),
    ({"phase_bits": 64}, "phase_bits"),
    ({"target_lsb": 0.25}, "target_lsb"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(CordicConfigError, match=message):
        CordicConfig(**kwargs)


def test_bad_inputs_are_refused():
    config = CordicConfig("rotate")
    with pytest.raises(ValueError, match="outside the 18-bit"):
        cordic_fixed(config, [2 ** 17], [0], [0])
    with pytest.raises(ValueError, match="outside the 16-bit"):
        cordic_fixed(config, [0], [0], [2 ** 16])
    with pytest.raises(TypeError, match="integer array"):
        cordic_fixed(config, [0.5], [0], [0])


def test_edge_vectors_cover_the_boundaries():
    config = CordicConfig("rotate")
    x, y, z = edge_vectors(config)
    assert {0, 2 ** 15, 2 ** 15 - 1, 2 ** 15 + 1, 2 ** 14, 2 ** 13, 65535}.issubset(set(z))
    assert ((x == 2 ** 17 - 1) & (y == 2 ** 17 - 1)).any() and ((x == 0) & (y == 0)).any()
    assert (x == -(2 ** 17)).any()
