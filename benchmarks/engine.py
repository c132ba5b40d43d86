"""Benchmark of the sparse training engine (CPU or CUDA). Prints ratios measured in this one run.

(a) training-step time with the engine / without it, for ``cnn1d`` (batch 128, input (1, 40)),
    ``wrn-16-8`` (batch 32, CIFAR input (3, 32, 32)) and a small ``transformer`` (4-layer
    ``nn.TransformerEncoder``, d_model 128, 4 heads, feed-forward 512, batch 32 x 64 tokens; its
    attention in-projections are sparse too). Both variants run on the *same* model
    and optimizer, interleaved step by step (so cache state and machine load affect both alike);
    "with" calls ``engine.step()`` (re-masking; no update happens because update_interval=1000),
    "without" does not. Reported: the measured end-to-end ratio of medians, the masking-only ratio
    (base + median ``apply_masks`` time) / base, and the amortised ratio that adds the cost of
    one ``update_topology(0.5)`` spread over update_interval=1000 steps. Goal <= 1.05.
(b) one ``update_topology(0.5)`` on ``wrn-28-10`` at sparsity 0.8 / one SGD-momentum
    ``optimizer.step()`` on the same model, interleaved; medians and minima (the minimum is the
    least sensitive to other processes on a shared machine). Goal <= 15.
(c) engine memory (bool masks + bit-packed ever-active masks) / parameter memory. Goal <= 0.3.

Usage: ``python benchmarks/engine.py [--quick] [--threads N] [--device cuda] [--only transformer]``
(``--only``: just those cases of (a), and no (b)/(c)). On CUDA every timer
synchronises the device first, and (a) also times ``wrn-28-10`` at batch 128.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from freetickets import create_model
from freetickets.sparse import SparseEngine


DEVICE = torch.device("cpu")


class SmallTransformer(torch.nn.Module):
    """Token features (B, T, d) -> 4-layer nn.TransformerEncoder -> mean over T -> Linear(d, 10)."""

    def __init__(self, d: int = 128, heads: int = 4, ff: int = 512, layers: int = 4) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=ff, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def _build(name: str, input_shape: tuple[int, ...]) -> torch.nn.Module:
    if name == "transformer":
        return SmallTransformer(d=input_shape[-1])
    return create_model(name, num_classes=10, input_shape=input_shape)


def _now() -> float:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter()


def bench_training_step(name: str, input_shape: tuple[int, ...], batch_size: int, steps: int,
                        update_interval: int = 1000) -> dict[str, float]:
    torch.manual_seed(0)
    model = _build(name, input_shape).to(DEVICE)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    engine = SparseEngine(model, opt, sparsity=0.8, update_interval=update_interval)
    x = torch.randn(batch_size, *input_shape, device=DEVICE)
    y = torch.randint(0, 10, (batch_size,), device=DEVICE)

    def one_step(with_engine: bool) -> float:
        t0 = _now()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if with_engine:
            engine.step()
        opt.zero_grad()
        return _now() - t0

    one_step(True)
    one_step(False)  # warm-up
    with_t, without_t = [], []
    for i in range(steps):
        # alternate the order so that neither variant always follows the other
        if i % 2:
            with_t.append(one_step(True))
            without_t.append(one_step(False))
        else:
            without_t.append(one_step(False))
            with_t.append(one_step(True))
    assert engine.step_count < update_interval, "no update may happen inside the measured steps"

    mask_t = []
    for _ in range(max(20, steps)):
        t0 = _now()
        engine.apply_masks()
        mask_t.append(_now() - t0)

    F.cross_entropy(model(x), y).backward()  # the gradient RigL growth uses
    update_t = []
    for _ in range(3):
        t0 = _now()
        engine.update_topology(0.5)
        update_t.append(_now() - t0)
    opt.zero_grad()

    base = statistics.median(without_t)
    measured = statistics.median(with_t)
    masking = statistics.median(mask_t)
    update = statistics.median(update_t)
    return {
        "base_s": base,
        "with_engine_s": measured,
        "apply_masks_s": masking,
        "update_s": update,
        "ratio_measured": measured / base,
        "ratio_masking": (base + masking) / base,
        "ratio_amortised": (base + masking + update / update_interval) / base,
        "ratio_measured_amortised": (measured + update / update_interval) / base,
    }


def _model_with_gradients(name: str):
    """``name`` at sparsity 0.8 ERK with SGD momentum, a random dense gradient in every ``.grad``
    (as after ``backward()``, without a 36M-parameter backward) and one step taken, so the
    momentum buffers exist. Returns ``(model, optimizer, engine)``."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=(3, 32, 32)).to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    engine = SparseEngine(model, opt, sparsity=0.8, update_interval=1000)
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(DEVICE)
    opt.step()
    engine.step()
    return model, opt, engine


def bench_update_vs_optimizer(name: str, repeats: int) -> dict[str, float]:
    model, opt, engine = _model_with_gradients(name)
    opt_t, upd_t = [], []
    for _ in range(repeats):
        t0 = _now()
        opt.step()
        opt_t.append(_now() - t0)
        engine.apply_masks()
        t0 = _now()
        engine.update_topology(0.5)
        upd_t.append(_now() - t0)
    params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "params": params,
        "optimizer_step_s": statistics.median(opt_t),
        "update_s": statistics.median(upd_t),
        "ratio": statistics.median(upd_t) / statistics.median(opt_t),
        "ratio_min": min(upd_t) / min(opt_t),
        "engine_bytes": engine.memory_bytes(),
        "param_bytes": param_bytes,
        "memory_ratio": engine.memory_bytes() / param_bytes,
    }


def profile_update(name: str, rows: int = 18) -> None:
    """torch.profiler table of three ``update_topology(0.5)`` calls on ``name`` (``--profile``)."""
    from torch.profiler import ProfilerActivity, profile

    model, opt, engine = _model_with_gradients(name)
    engine.update_topology(0.5)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            engine.update_topology(0.5)
        _now()
    key = "self_cuda_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="only these (a) cases (cnn1d, wrn-16-8, transformer, ...)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: a torch.profiler table of update_topology on wrn-28-10")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    if args.profile:
        profile_update("wrn-28-10")
        return
    steps_small = 30 if args.quick else 100
    steps_wrn = 3 if args.quick else 8
    repeats = 3 if args.quick else 5

    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, quick={args.quick}")
    print("(a) training step with engine / without (sparsity 0.8 ERK, SGD momentum, update_interval=1000)")
    cases = [("cnn1d", (1, 40), 128, steps_small), ("wrn-16-8", (3, 32, 32), 32, steps_wrn),
             ("transformer", (64, 128), 32, steps_small)]
    if DEVICE.type == "cuda":
        cases = [("cnn1d", (1, 40), 128, steps_small), ("wrn-16-8", (3, 32, 32), 128, steps_small),
                 ("wrn-28-10", (3, 32, 32), 128, steps_small), ("transformer", (64, 128), 32, steps_small)]
    if args.only:
        cases = [c for c in cases if c[0] in args.only]
        if not cases:
            parser.error(f"--only: no case among {args.only}")
    for name, shape, bs, steps in cases:
        r = bench_training_step(name, shape, bs, steps)
        print(
            f"  {name:11s} batch {bs:3d}: base {r['base_s'] * 1e3:9.2f} ms, with engine {r['with_engine_s'] * 1e3:9.2f} ms, "
            f"apply_masks {r['apply_masks_s'] * 1e3:7.3f} ms, update {r['update_s'] * 1e3:8.2f} ms"
        )
        print(
            f"  {'':11s} ratios: measured {r['ratio_measured']:.4f}, masking-only {r['ratio_masking']:.4f}, "
            f"amortised (masking + update/1000) {r['ratio_amortised']:.4f}, "
            f"measured+amortised update {r['ratio_measured_amortised']:.4f}  (goal <= 1.05)"
        )
    if args.only:
        return
    print("(b) update_topology(0.5) / SGD-momentum optimizer.step() on wrn-28-10, sparsity 0.8 ERK")
    r = bench_update_vs_optimizer("wrn-28-10", repeats)
    print(
        f"  {r['params']:,} params: update {r['update_s'] * 1e3:.1f} ms, optimizer.step {r['optimizer_step_s'] * 1e3:.1f} ms, "
        f"ratio of medians {r['ratio']:.2f}, ratio of minima {r['ratio_min']:.2f}  (goal <= 15)"
    )
    print("(c) engine memory / parameter memory on wrn-28-10")
    print(
        f"  engine {r['engine_bytes'] / 2**20:.1f} MiB / parameters {r['param_bytes'] / 2**20:.1f} MiB = "
        f"{r['memory_ratio']:.4f}  (goal <= 0.3)"
    )


if __name__ == "__main__":
    main()
