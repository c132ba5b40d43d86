"""ImageNet from the ``train/`` and ``val/`` class-folder layout (optional ``vision`` extra).

torchvision is imported only here and only when ImageNet is requested; the core package and its
tests never need it. The splits are map-style datasets for ``torch.utils.data.DataLoader`` with
the standard transforms (RandomResizedCrop(224) + flip for training; Resize(256) +
CenterCrop(224) for evaluation; ImageNet mean/std). Validation for checkpoint selection is a
fixed held-out subset of the training folder (every 128th image, about 10000 images, shown with
evaluation transforms and removed from training); the official ``val/`` folder is the test set.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from freetickets.data.base import DataBundle, default_data_dir
from freetickets.errors import UserError

__all__ = ["load_imagenet", "IMAGENET_MEAN", "IMAGENET_STD", "HOLDOUT_STRIDE"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOLDOUT_STRIDE = 128


def _torchvision() -> Any:
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets, transforms
    except ImportError:
        raise UserError(
            "ImageNet needs torchvision: install freetickets[vision] (pip install 'freetickets[vision]')"
        ) from None
    return datasets, transforms


def load_imagenet(data_dir: str | os.PathLike | None = None, *, device: Any = "cpu",
                  image_size: int = 224) -> DataBundle:
    """The ImageNet :class:`DataBundle` (datasets, not tensors; ``device`` is not used: the
    training loop moves batches)."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir() / "imagenet"
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise UserError(
            f"ImageNet not found: put train/ and val/ (one sub-folder of images per class) under {root}"
        )
    datasets, transforms = _torchvision()
    from torch.utils.data import Subset

    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize,
    ])
    eval_tf = transforms.Compose([
        transforms.Resize(int(round(image_size * 256 / 224))), transforms.CenterCrop(image_size),
        transforms.ToTensor(), normalize,
    ])
    try:
        train_full = datasets.ImageFolder(str(train_dir), transform=train_tf)
        train_eval = datasets.ImageFolder(str(train_dir), transform=eval_tf)
        test = datasets.ImageFolder(str(val_dir), transform=eval_tf)
    except (FileNotFoundError, RuntimeError) as exc:  # no class folders / no images
        raise UserError(f"ImageNet layout problem under {root}: {exc}") from None
    if train_full.classes != test.classes:
        raise UserError(f"{root}: train/ and val/ must have the same class folders")
    n = len(train_full)
    held = [i for i in range(n) if i % HOLDOUT_STRIDE == HOLDOUT_STRIDE - 1]
    keep = [i for i in range(n) if i % HOLDOUT_STRIDE != HOLDOUT_STRIDE - 1]
    return DataBundle(
        name="imagenet",
        num_classes=len(train_full.classes),
        input_shape=(3, image_size, image_size),
        train=Subset(train_full, keep),
        val=Subset(train_eval, held),
        test=test,
        augment=None,
        normalize=None,
        # raw form for predict: uint8 images after Resize + CenterCrop(image_size), CHW or HWC
        meta={"data_dir": str(root), "classes": list(train_full.classes),
              "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": 255.0,
                                "raw_dtype": "uint8"}},
    )
