"""Throughput of the tensor data pipeline vs. a per-sample PIL + DataLoader pipeline.

Both pipelines do the CIFAR training transform (random crop with 4-pixel zero padding,
horizontal flip, conversion to float, per-channel normalisation) on synthetic uint8 images of
CIFAR's shape, batch 128, on the CPU. Prints batches per second and the speed-up.

    python benchmarks/pipeline.py [--images 50000] [--batches 60] [--threads 2] [--repeats 3]
    python benchmarks/pipeline.py --gpu [--gpu-model wrn-28-10] [--batch-size 128] [--gpu-steps 50]

``--gpu`` (CUDA only) times WRN-28-10 training steps instead: fp32 vs bf16 autocast +
channels_last (+ torch.compile), each with and without the SparseEngine.
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


def _gpu_step_rate(model_name: str, batch_size: int, steps: int, *, bf16: bool, channels_last: bool,
                   compile_model: bool, engine: bool) -> float:
    """Training samples/s of one configuration on CUDA (synthetic CIFAR batches already on the GPU)."""
    import torch.nn.functional as F

    from freetickets import SparseEngine, create_model

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    eng = SparseEngine(model, opt, sparsity=0.8, update_interval=1000) if engine else None
    train_model = torch.compile(model) if compile_model else model
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = train_model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        if eng is not None:
            eng.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(10 if compile_model else 3):  # warm-up (and compilation)
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def gpu_benchmark(model_name: str, batch_size: int, steps: int) -> None:
    """WRN-28-10 (default) training throughput: fp32 vs bf16 + channels_last (+ torch.compile),
    each without and with the sparse engine (its per-step masking; one update in 1000 steps)."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device available")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    print(f"{model_name}, batch {batch_size}, {steps} timed steps on {torch.cuda.get_device_name()}")
    configs = [("fp32", False, False, False), ("bf16 + channels_last", True, True, False),
               ("bf16 + channels_last + compile", True, True, True)]
    base = None
    for name, bf16, cl, comp in configs:
        for engine in (False, True):
            try:
                rate = _gpu_step_rate(model_name, batch_size, steps, bf16=bf16, channels_last=cl,
                                      compile_model=comp, engine=engine)
            except Exception as exc:  # e.g. torch.compile unavailable on this platform
                print(f"{name:<32} {'engine' if engine else 'dense':<7} failed: {type(exc).__name__}: {exc}")
                continue
            base = base or rate
            print(f"{name:<32} {'engine' if engine else 'dense':<7} {rate:10.0f} samples/s  {rate / base:5.2f}x")
            torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--batches", type=int, default=60, help="timed batches per pipeline")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="passes per pipeline (median reported)")
    p.add_argument("--gpu", action="store_true",
                   help="instead: CUDA training throughput of --gpu-model, fp32 vs bf16 + channels_last (+ compile), "
                        "with and without the sparse engine")
    p.add_argument("--gpu-model", default="wrn-28-10")
    p.add_argument("--gpu-steps", type=int, default=50)
    args = p.parse_args()
    if args.gpu:
        gpu_benchmark(args.gpu_model, args.batch_size, args.gpu_steps)
        return
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
