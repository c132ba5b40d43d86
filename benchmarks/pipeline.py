"""Throughput of the tensor data pipeline vs. a per-sample PIL + DataLoader pipeline.

Both pipelines do the CIFAR training transform (random crop with 4-pixel zero padding,
horizontal flip, conversion to float, per-channel normalisation) on synthetic uint8 images of
CIFAR's shape, batch 128, on the CPU. Prints batches per second and the speed-up.

    python benchmarks/pipeline.py [--images 50000] [--batches 60] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from freetickets.data import BatchIterator, TensorSplit
from freetickets.data.cifar import CIFAR_STATS, cifar_normalize
from freetickets.data.transforms import RandomCropFlip

MEAN, STD = (np.array(v, dtype=np.float32) for v in CIFAR_STATS["cifar10"])


class PILCifar(Dataset):
    """The classic torchvision-style per-sample pipeline, written with PIL and NumPy."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images_hwc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        img = ImageOps.expand(img, border=4, fill=0)
        dy, dx = random.randint(0, 8), random.randint(0, 8)
        img = img.crop((dx, dy, dx + 32, dy + 32))
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), int(self.labels[i])


def _rate(batches, n: int, repeats: int, warmup: int = 2) -> float:
    """Median over ``repeats`` passes of batches/s (the machine is shared: medians are steadier)."""
    rates = []
    for _ in range(repeats):
        it = iter(batches)
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(n):
            x, y = next(it)
        rates.append(n / (time.perf_counter() - t0))
        del it
    return float(np.median(rates))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--batches", type=int, default=60, help="timed batches per pipeline")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="passes per pipeline (median reported)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    need = (args.batches + 2) * args.batch_size
    if args.images < need:
        raise SystemExit(f"--images must be at least {need} for {args.batches} timed batches")

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    print(f"synthetic CIFAR-shaped data: {tuple(x.shape)} uint8, batch {args.batch_size}, "
          f"{args.batches} timed batches x {args.repeats} passes (median), torch threads {torch.get_num_threads()}")

    tensor_it = BatchIterator(TensorSplit(x, y), args.batch_size, shuffle=True, seed=0, epoch=0,
                              augment=RandomCropFlip(4), normalize=cifar_normalize("cifar10"))
    results = {"tensor (freetickets BatchIterator)": _rate(tensor_it, args.batches, args.repeats)}

    ds = PILCifar(x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy())
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                            persistent_workers=False)
        results[f"PIL per-sample + DataLoader(num_workers={workers})"] = _rate(loader, args.batches, args.repeats)

    base = results["tensor (freetickets BatchIterator)"]
    width = max(map(len, results))
    for name, r in results.items():
        print(f"{name:<{width}}  {r:9.1f} batches/s  {r * args.batch_size:10.0f} images/s")
    for workers in (0, 2):
        ref = results[f"PIL per-sample + DataLoader(num_workers={workers})"]
        print(f"speed-up vs PIL num_workers={workers}: {base / ref:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
