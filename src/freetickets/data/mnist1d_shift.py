"""Generated out-of-distribution and corrupted versions of the MNIST-1D test set.

Everything is a deterministic function of the test set and a seed (``numpy.random.Generator``
seeded through :func:`derive_seed`; global RNGs are not touched). The outputs are in the
model's input space (MNIST-1D needs no further normalisation).

OoD sets (why each is out of distribution):

* ``shuffled``: each sequence's 40 positions permuted at random (its own permutation). Keeps
  every value of a real signal but destroys the temporal structure the classes are made of
  (a spatially shuffled MNIST-1D; far OoD).
* ``noise``: i.i.d. Gaussian noise with the per-position mean and standard deviation of the
  training inputs: matches first and second moments, has no template at all (far OoD).
* ``class_mix``: the average of two test signals of *different* classes, rescaled to the test
  set's standard deviation. Every local feature is realistic, but the signal carries two
  overlapping digit templates, so no label is correct (near OoD). Sign-flipped or time-reversed
  signals were rejected: a negated or reversed template resembles another digit's template
  (e.g. the 0 and 6 bumps are mirror images), so they are partly *in* distribution.

Corruptions (severity 1..5 increases the parameter; units are the data's standard deviation,
which is 1): ``gaussian_noise``, ``correlated_noise`` (smoothed noise, like the generator's
background noise), ``spikes`` (impulse noise of amplitude 3), ``dropout`` (random samples set to
0), ``blur`` (Gaussian smoothing), ``shear`` (a linear trend stronger than the generator's),
``translation`` (non-circular shift with edge fill), ``scale`` (amplitude multiplied or divided
by a factor) and ``time_stretch`` (dilation or compression about the centre). Time reversal is
not a corruption here: it maps some digits onto others, i.e. it changes the label.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from freetickets.data.base import derive_seed

__all__ = ["MNIST1D_OOD", "MNIST1D_CORRUPTIONS", "mnist1d_ood", "mnist1d_corrupt", "SEVERITY_PARAMS"]

MNIST1D_OOD = ("shuffled", "noise", "class_mix")


def _rng(*parts: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def mnist1d_ood(name: str, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int) -> np.ndarray:
    """One OoD set ``(N_test, 40)`` float32 from 2-D arrays ``(N, 40)``."""
    rng = _rng("mnist1d-ood", name, seed)
    if name == "shuffled":
        return rng.permuted(x_test, axis=1).astype(np.float32)
    if name == "noise":
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = x_train.std(axis=0, dtype=np.float64)
        return (mean + std * rng.standard_normal(x_test.shape)).astype(np.float32)
    if name == "class_mix":
        n = len(y_test)
        # Partner of i: a random sample among those of another class.
        partner = np.empty(n, dtype=np.int64)
        for c in np.unique(y_test):
            mine = np.flatnonzero(y_test == c)
            others = np.flatnonzero(y_test != c)
            if others.size == 0:
                raise ValueError("class_mix needs at least two classes in the test set")
            partner[mine] = others[rng.integers(0, others.size, size=mine.size)]
        mix = 0.5 * (x_test.astype(np.float64) + x_test[partner])
        mix = (mix - mix.mean()) / max(mix.std(), 1e-12) * x_test.std() + x_test.mean()
        return mix.astype(np.float32)
    raise ValueError(f"unknown MNIST-1D OoD set {name!r}; valid: {', '.join(MNIST1D_OOD)}")


# ------------------------------------------------------------------------------------ corruptions
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.1, 0.2, 0.3, 0.45, 0.6),        # noise std
    "correlated_noise": (0.1, 0.2, 0.3, 0.45, 0.6),      # noise std after smoothing (sigma 2)
    "spikes": (0.025, 0.05, 0.1, 0.15, 0.2),             # fraction of positions hit
    "dropout": (0.05, 0.1, 0.2, 0.3, 0.4),               # fraction of positions zeroed
    "blur": (0.5, 0.75, 1.0, 1.5, 2.0),                  # Gaussian sigma in positions
    "shear": (0.5, 1.0, 1.5, 2.0, 3.0),                  # trend from -c/2 to +c/2 (generator: |c| <= 0.375)
    "translation": (1, 2, 3, 5, 8),                      # shift in positions
    "scale": (1.25, 1.5, 1.75, 2.0, 2.5),                # amplitude factor (or its inverse)
    "time_stretch": (1.1, 1.2, 1.3, 1.45, 1.6),          # dilation factor (or its inverse)
}
MNIST1D_CORRUPTIONS = tuple(SEVERITY_PARAMS)
_SPIKE_AMPLITUDE = 3.0


def _random_sign(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def _resample(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row of ``x`` at fractional positions ``pos`` (clamped)."""
    length = x.shape[1]
    pos = np.clip(pos, 0, length - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, length - 1)
    w = pos - i0
    rows = np.arange(x.shape[0])[:, None]
    return (1 - w) * x[rows, i0] + w * x[rows, i1]


def _corrupt(kind: str, x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    n, length = x.shape
    t = np.arange(length, dtype=np.float64)
    if kind == "gaussian_noise":
        return x + p * rng.standard_normal(x.shape)
    if kind == "correlated_noise":
        noise = gaussian_filter1d(rng.standard_normal(x.shape), sigma=2.0, axis=1, mode="wrap")
        return x + p * noise / noise.std()
    if kind == "spikes":
        hit = rng.random(x.shape) < p
        return x + hit * _SPIKE_AMPLITUDE * np.where(rng.random(x.shape) < 0.5, -1.0, 1.0)
    if kind == "dropout":
        return x * (rng.random(x.shape) >= p)
    if kind == "blur":
        return gaussian_filter1d(x, sigma=p, axis=1, mode="nearest")
    if kind == "shear":
        coeff = p * _random_sign(rng, n)
        return x - coeff[:, None] * np.linspace(-0.5, 0.5, length)[None, :]
    if kind == "translation":
        shift = p * _random_sign(rng, n)
        return _resample(x, t[None, :] - shift[:, None])
    if kind == "scale":
        factor = np.where(rng.random(n) < 0.5, p, 1.0 / p)
        return x * factor[:, None]
    if kind == "time_stretch":
        factor = np.where(rng.random(n) < 0.5, p, 1.0 / p)
        centre = (length - 1) / 2
        return _resample(x, centre + (t[None, :] - centre) / factor[:, None])
    raise ValueError(f"unknown MNIST-1D corruption {kind!r}; valid: {', '.join(MNIST1D_CORRUPTIONS)}")


def mnist1d_corrupt(kind: str, severity: int, x_test: np.ndarray, seed: int) -> np.ndarray:
    """The test inputs ``(N, 40)`` corrupted by ``kind`` at ``severity`` (1..5), float32."""
    if kind not in SEVERITY_PARAMS:
        raise ValueError(f"unknown MNIST-1D corruption {kind!r}; valid: {', '.join(MNIST1D_CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = _rng("mnist1d-c", kind, int(severity), int(seed))
    out = _corrupt(kind, np.asarray(x_test, dtype=np.float64), SEVERITY_PARAMS[kind][severity - 1], rng)
    return out.astype(np.float32)

