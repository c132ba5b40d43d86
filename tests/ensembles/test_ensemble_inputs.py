"""ensembles/inputs.py: layouts, the recorded normalisation (and the legacy fallback), refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from freetickets.data.api import data_normalization
from freetickets.data.cifar import CIFAR_STATS, cifar_normalize
from freetickets.ensembles.inputs import InputNormalization, prepare_inputs, run_normalization
from freetickets.errors import UserError

CIFAR = {"input_shape": [3, 4, 5], "data": "cifar10", "normalization": cifar_normalize("cifar10").record()}


def test_uint8_chw_and_hwc_give_the_data_sets_normalisation():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (6, 3, 4, 5), dtype=np.uint8)
    expected = cifar_normalize("cifar10")(torch.from_numpy(raw))  # what training and evaluate use
    chw = prepare_inputs(raw, CIFAR)
    hwc = prepare_inputs(raw.transpose(0, 2, 3, 1), CIFAR)
    single = prepare_inputs(raw[2].transpose(1, 2, 0), CIFAR)
    torch.testing.assert_close(chw, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(chw, hwc) and chw.dtype == torch.float32 and chw.shape == (6, 3, 4, 5)
    torch.testing.assert_close(single, expected[2:3], rtol=1e-6, atol=1e-6)
    # whole-number floats in 0..255 are raw values too
    torch.testing.assert_close(prepare_inputs(raw.astype(np.float64), CIFAR), expected, rtol=1e-6, atol=1e-6)
    # normalized=True: only layout and dtype
    assert torch.equal(prepare_inputs(expected.numpy(), CIFAR, normalized=True), expected)


def test_already_normalised_images_without_the_flag_are_refused():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
    with pytest.raises(UserError, match=r"raw uint8 pixel values 0\.\.255.*--normalized"):
        prepare_inputs(x, CIFAR)
    with pytest.raises(UserError, match=r"raw uint8"):
        prepare_inputs(np.full((1, 3, 4, 5), 256, np.int32), CIFAR)


def test_mnist1d_identity_and_layouts():
    m = {"input_shape": [1, 40], "data": "mnist1d", "normalization": data_normalization("mnist1d")}
    x = np.random.default_rng(2).normal(size=(5, 40)).astype(np.float32)
    out = prepare_inputs(x, m)
    assert out.shape == (5, 1, 40) and torch.equal(out[:, 0], torch.from_numpy(x))
    assert torch.equal(prepare_inputs(x[:, None], m), out)
    assert prepare_inputs(x[0], m).shape == (1, 1, 40)
    with pytest.raises(UserError, match=r"expected \(N, 1, 40\) or \(N, 40\).*got \(5, 41\)"):
        prepare_inputs(np.zeros((5, 41), np.float32), m)


def test_non_finite_rows_are_counted():
    x = np.zeros((10, 3, 4, 5), np.float32)
    x[1, 0, 0, 0] = np.nan
    x[1, 2, 3, 4] = np.inf  # the same row twice: one row
    x[8, 1, 1, 1] = -np.inf
    with pytest.raises(UserError, match=r"^in: 2 of 10 rows hold NaN or infinite values"):
        prepare_inputs(x, CIFAR, normalized=True, what="in")
    with pytest.raises(UserError, match=r"2 of 10 rows"):
        prepare_inputs(x, CIFAR)  # refused before any normalisation


def test_legacy_null_record_uses_the_data_sets_normalisation():
    legacy = {"input_shape": [3, 32, 32], "data": "cifar100", "normalization": None}
    mean, std = CIFAR_STATS["cifar100"]
    assert run_normalization(legacy) == InputNormalization(tuple(mean), tuple(std), 255.0, "uint8")
    assert run_normalization({"input_shape": [1, 40], "normalization": None}) is None  # nothing known
    with pytest.raises(UserError, match="normalization"):
        run_normalization({"input_shape": [3, 32, 32], "normalization": {"mean": [0.5, 0.5], "std": [1, 1]}})
