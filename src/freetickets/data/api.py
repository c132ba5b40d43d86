"""Entry points: :func:`load_data`, :func:`ood_sets`, :func:`corruption_sets` and their lists."""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import torch

from freetickets.data.base import CorruptedSplit, DataBundle

logger = logging.getLogger(__name__)

__all__ = ["list_data", "load_data", "data_normalization", "list_ood", "ood_sets", "list_corruptions", "corruption_sets"]

_DATA = ("mnist1d", "cifar10", "cifar100", "imagenet")
_OOD = {
    "mnist1d": ("shuffled", "noise", "class_mix"),
    "cifar10": ("svhn", "cifar100"),
    "cifar100": ("svhn", "cifar10"),
    "imagenet": (),
}
# Hendrycks & Dietterich's CIFAR-10-C / CIFAR-100-C types (15 benchmark + 4 extra).
CIFAR_C_TYPES = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost",
    "gaussian_blur", "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression",
    "motion_blur", "pixelate", "saturate", "shot_noise", "snow", "spatter", "speckle_noise",
    "zoom_blur",
)


def list_data() -> list[str]:
    """Data set names accepted by :func:`load_data` (``mnist1d`` is the default)."""
    return list(_DATA)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"data name must be a string; valid: {', '.join(_DATA)}")
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in _DATA:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(_DATA)}")
    return key


def data_normalization(name: str) -> Optional[dict]:
    """The normalisation record of data set ``name`` (:attr:`DataBundle.normalization`) without
    loading it; None for an unknown name. For runs whose manifest predates the record."""
    try:
        key = _canonical(name)
    except ValueError:
        return None
    if key == "mnist1d":
        from freetickets.data.transforms import ToFloat

        return ToFloat().record()
    if key == "imagenet":
        from freetickets.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
        from freetickets.data.transforms import Normalize

        return Normalize(IMAGENET_MEAN, IMAGENET_STD, scale=255.0).record()
    from freetickets.data.cifar import cifar_normalize

    return cifar_normalize(key).record()


def load_data(
    name: str = "mnist1d",
    data_dir: str | os.PathLike | None = None,
    *,
    num_samples: Optional[int] = None,
    seed: int = 0,
    device: Any = "cpu",
    download: bool = False,
) -> DataBundle:
    """Load a data set as a :class:`DataBundle`.

    Args:
        name: one of :func:`list_data` (case and ``-``/``_`` are ignored: ``CIFAR-10`` works).
        data_dir: folder holding file-backed sets (CIFAR: ``cifar-10-batches-py/`` or
            ``cifar-100-python/``; ImageNet: ``train/`` and ``val/``); default
            ``cache_dir()/datasets``. Ignored by ``mnist1d``.
        num_samples: MNIST-1D only: samples generated (default 10000; 80% train+val, 20% test).
        seed: MNIST-1D only: the *data* generation seed. Keep it fixed across the members and
            methods you compare; it is not the training seed.
        device: where tensor splits live (``"cpu"``, ``"cuda"``, a ``torch.device``).
        download: fetch missing CIFAR archives from the official sites (MD5-checked).

    Raises:
        ValueError: unknown name or an argument that does not apply.
        UserError: missing or malformed data files (one line saying what to put where).
    """
    key = _canonical(name)
    if num_samples is not None and key != "mnist1d":
        raise ValueError(f"num_samples applies only to mnist1d, not {key}")
    if key == "mnist1d":
        if data_dir is not None:
            logger.debug("mnist1d is generated; data_dir %s is not used", data_dir)
        from freetickets.data.mnist1d import load_mnist1d

        return load_mnist1d(num_samples=num_samples, seed=seed, device=device)
    if key in ("cifar10", "cifar100"):
        from freetickets.data.cifar import load_cifar

        return load_cifar(key, data_dir, device=device, download=download)
    from freetickets.data.imagenet import load_imagenet

    if download:
        raise ValueError("ImageNet cannot be downloaded automatically; put train/ and val/ in data_dir")
    return load_imagenet(data_dir, device=device)


# --------------------------------------------------------------------------------------- OoD
def list_ood(data_name: str) -> list[str]:
    """OoD set names available for ``data_name``."""
    return list(_OOD[_canonical(data_name)])


def _check_names(kind: str, requested: Optional[Sequence[str]], valid: Sequence[str], data_name: str) -> list[str]:
    if requested is None:
        return list(valid)
    if isinstance(requested, str):
        requested = [requested]
    bad = [n for n in requested if n not in valid]
    if bad:
        raise ValueError(
            f"unknown {kind} {bad[0]!r} for {data_name}; valid: {', '.join(valid) if valid else '(none)'}"
        )
    return list(dict.fromkeys(requested))


def ood_sets(
    data_name: str,
    data_dir: str | os.PathLike | None = None,
    names: Optional[Sequence[str]] = None,
    seed: int = 0,
    *,
    num_samples: Optional[int] = None,
    device: Any = "cpu",
    download: bool = False,
) -> dict[str, torch.Tensor]:
    """Out-of-distribution inputs, normalised like ``data_name``'s test set (float32).

    MNIST-1D sets are generated from the test set of ``load_data("mnist1d",
    num_samples=num_samples, seed=seed)`` (``seed`` is the data seed, also seeding the OoD
    randomness). CIFAR-10: ``svhn`` (``data_dir/test_32x32.mat``) and ``cifar100`` (its test
    set); CIFAR-100: ``svhn`` and ``cifar10``; both normalised with the in-distribution stats.
    """
    key = _canonical(data_name)
    selected = _check_names("OoD set", names, _OOD[key], key)
    out: dict[str, torch.Tensor] = {}
    if key == "mnist1d":
        from freetickets.data.mnist1d import load_mnist1d
        from freetickets.data.mnist1d_shift import mnist1d_ood

        bundle = load_mnist1d(num_samples=num_samples, seed=seed)
        x_train = bundle.train.x[:, 0].numpy()
        x_test, y_test = bundle.test.x[:, 0].numpy(), bundle.test.y.numpy()
        for n in selected:
            out[n] = torch.from_numpy(mnist1d_ood(n, x_train, x_test, y_test, seed)).unsqueeze(1).to(device)
        return out
    if key in ("cifar10", "cifar100"):
        if num_samples is not None:
            raise ValueError(f"num_samples applies only to mnist1d, not {key}")
        from freetickets.data.cifar import cifar_normalize, read_cifar, read_svhn_test

        normalize = cifar_normalize(key)
        for n in selected:
            if n == "svhn":
                x, _ = read_svhn_test(data_dir, download=download)
            else:
                x = read_cifar(n, data_dir, download=download, train=False)[2]
            out[n] = normalize(torch.from_numpy(x).to(device))
        return out
    return out


# ------------------------------------------------------------------------------- corruptions
def list_corruptions(data_name: str, source: str | os.PathLike | None = None) -> list[str]:
    """Corruption types for ``data_name``: the built-in MNIST-1D-C types, or for CIFAR the types
    present in ``source`` (a CIFAR-10-C/100-C folder), or Hendrycks' 19 names without one."""
    key = _canonical(data_name)
    if key == "mnist1d":
        from freetickets.data.mnist1d_shift import MNIST1D_CORRUPTIONS

        return list(MNIST1D_CORRUPTIONS)
    if key in ("cifar10", "cifar100"):
        if source is None or str(source) == "builtin":
            return list(CIFAR_C_TYPES)
        from freetickets.data.cifar import list_cifar_c

        return list_cifar_c(key, source)
    return []


def corruption_sets(
    data_name: str,
    source: str | os.PathLike = "builtin",
    seed: int = 0,
    *,
    num_samples: Optional[int] = None,
    types: Optional[Sequence[str]] = None,
    device: Any = "cpu",
) -> list[CorruptedSplit]:
    """Corrupted test sets, one :class:`CorruptedSplit` per (type, severity 1..5), ordered by
    type then severity; ``x`` normalised like the test set.

    ``source="builtin"``: MNIST-1D-C, generated from the test set of ``load_data("mnist1d",
    num_samples=num_samples, seed=seed)``. A directory: Hendrycks' CIFAR-10-C/100-C layout
    (every ``.npy`` except ``labels.npy`` is a corruption type, 5 x 10000 rows, severity 1
    first), loaded lazily split by split.
    """
    from freetickets.errors import UserError

    key = _canonical(data_name)
    builtin = str(source) == "builtin"
    if key == "mnist1d":
        if not builtin:
            raise ValueError("MNIST-1D-C is generated: use source='builtin'")
        from freetickets.data.mnist1d import load_mnist1d
        from freetickets.data.mnist1d_shift import MNIST1D_CORRUPTIONS, mnist1d_corrupt

        chosen = _check_names("corruption", types, MNIST1D_CORRUPTIONS, key)
        bundle = load_mnist1d(num_samples=num_samples, seed=seed)
        x_test, y_test = bundle.test.x[:, 0].numpy(), bundle.test.y.to(device)
        splits = []
        for t in chosen:
            for s in range(1, 6):
                x = torch.from_numpy(mnist1d_corrupt(t, s, x_test, seed)).unsqueeze(1).to(device)
                splits.append(CorruptedSplit(t, s, x, y_test))
        return splits
    if key in ("cifar10", "cifar100"):
        pretty = "CIFAR-10-C" if key == "cifar10" else "CIFAR-100-C"
        if builtin:
            raise UserError(f"{pretty} is not built in: pass the folder holding Hendrycks' {pretty} .npy files as the source")
        from freetickets.data.cifar import cifar_c_splits

        splits = cifar_c_splits(key, source, device=device)
        if types is not None:
            chosen = _check_names("corruption", types, sorted({s.type for s in splits}), key)
            splits = [s for s in splits if s.type in chosen]
        return splits
    raise ValueError(f"no corruption sets for {key}; available for mnist1d, cifar10, cifar100")
