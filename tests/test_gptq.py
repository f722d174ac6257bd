"""GPTQ rounding of the q8 recipe on random matrices: fewer output errors than rounding to nearest, the same
codes when inputs are uncorrelated, codes in range, dead inputs zeroed; the inverse factor and the block size
change no code."""
from __future__ import annotations

import numpy as np

from edgembed.export.q8_recipe import _inverse_upper_factor, gptq_int8


def correlated_inputs(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    mixing = rng.normal(size=(width, width)) / np.sqrt(width)
    return (rng.normal(size=(rows, width)) @ mixing + 0.05 * rng.normal(size=(rows, width))).astype(np.float32)


def nearest(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8)


def test_gptq_output_error_is_below_round_to_nearest():
    rng = np.random.default_rng(0)
    inputs = correlated_inputs(rng, 2048, 96)
    weight = rng.normal(size=(96, 64)).astype(np.float32)
    codes, scale = gptq_int8(weight, inputs.T.astype(np.float64) @ inputs, block=32)
    exact = inputs @ weight
    gptq_error = np.linalg.norm(exact - inputs @ (codes * scale))
    nearest_error = np.linalg.norm(exact - inputs @ (nearest(weight, scale) * scale))
    assert gptq_error < 0.8 * nearest_error, (gptq_error, nearest_error)


def test_codes_and_scales_are_symmetric_int8_per_column():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(40, 24)).astype(np.float32)
    inputs = correlated_inputs(rng, 512, 40)
    codes, scale = gptq_int8(weight, inputs.T.astype(np.float64) @ inputs, block=16)
    assert codes.dtype == np.int8 and codes.min() >= -127
    np.testing.assert_allclose(scale, np.abs(weight).max(axis=0) / 127.0, rtol=1e-6)


def test_uncorrelated_inputs_give_round_to_nearest():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(32, 16)).astype(np.float32)
    codes, scale = gptq_int8(weight, np.diag(rng.uniform(0.5, 2.0, size=32)), block=8)
    np.testing.assert_array_equal(codes, nearest(weight, scale))


def test_an_input_that_is_always_zero_gets_zero_weights():
    rng = np.random.default_rng(3)
    inputs = correlated_inputs(rng, 512, 24)
    inputs[:, 5] = 0.0
    weight = rng.normal(size=(24, 8)).astype(np.float32)
    codes, _ = gptq_int8(weight, inputs.T.astype(np.float64) @ inputs)
    assert not codes[5].any()


def test_the_inverse_factor_is_the_upper_cholesky_factor_of_the_inverse_hessian():
    rng = np.random.default_rng(4)
    inputs = correlated_inputs(rng, 256, 48).astype(np.float64)
    hessian = inputs.T @ inputs + 0.1 * np.eye(48)
    upper = _inverse_upper_factor(hessian)
    np.testing.assert_array_equal(upper, np.triu(upper))
    np.testing.assert_allclose(upper, np.linalg.cholesky(np.linalg.inv(hessian)).T, rtol=1e-9, atol=1e-12)


def test_the_block_size_does_not_change_the_codes():
    rng = np.random.default_rng(5)
    inputs = correlated_inputs(rng, 1024, 80)
    weight = rng.normal(size=(80, 24)).astype(np.float32)
    gram = inputs.T.astype(np.float64) @ inputs
    codes = [gptq_int8(weight, gram, block=block)[0] for block in (8, 32, 80)]
    np.testing.assert_array_equal(codes[0], codes[1])
    np.testing.assert_array_equal(codes[0], codes[2])
