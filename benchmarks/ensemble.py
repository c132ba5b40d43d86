"""Ensemble inference cost and ticket storage versus one dense model (CPU or CUDA).

Prints, measured in one run, for M = 3 members at sparsity 0.8 (random masks of exact density):

* inference time of the ensemble per batch / one dense model's time, for every execution path
  of :class:`freetickets.Ensemble` (fused channel-stacked, vmap, sequential); goal for the
  batched path <= 1.6 (the members run dense kernels, so 3 members cost ~3x the FLOPs of one
  dense model; going below needs a fused path that uses the hardware better than 3 separate
  passes);
* the same ratio for the efficient ensembles with M members in one network (MIMO: one forward of
  the widened network; BatchEnsemble: one pass over the M-tiled batch; MC dropout: M dropout
  forwards), untrained (latency does not depend on the weights);
* bytes of the three tickets / bytes of one dense ``torch.save(state_dict)``; goal <= 0.8.

Timings are the minimum over interleaved rounds (robust to other processes on a shared CPU).

    python benchmarks/ensemble.py [--threads 2] [--rounds 5] [--device cuda] [--batches 1 256]

On CUDA the timers synchronise the device, the cases use batch 256 and add ``wrn-28-10``.

``--structure channel`` measures slim channel tickets instead (issue 22): M members with the
channel masks the sparse engine gives at sparsity S (``SparseEngine(structure="channel")``: ERK,
exact channel counts, residual groups pruned jointly, the logits layer keeps its outputs), exported slim and
run as one packed forward through ``Ensemble(PackedMembers(...))``. Per case and batch it prints the ensemble's latency over one
dense model of the architecture run as a user runs it (eager, BatchNorm separate; the goal
<= 1.0 applies here), the route the packing rule took, and the ratio over the same dense model
with the inference optimisations the packed forward applies (BatchNorm folded into its
convolutions / linears, convolutions on channels-last memory), plus both sides of the packing
rule forced (small inputs: the packed graph, im2col + one batched matmul per layer, or for
Conv2d models the grouped convolutions; large inputs: the BatchNorm-folded slim members one
after another) and the eager slim members one after another:

    python benchmarks/ensemble.py --structure channel --rounds 10 --batches 1 256 --cases mlp cnn1d wrn-16-8
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.tickets import save_ticket, ticket_nbytes
from freetickets.models.registry import create_model

CASES = [("cnn1d", (1, 40), 256), ("wrn-16-8", (3, 32, 32), 32)]


def sparse_member(name, shape, density, gen):
    model = create_model(name, num_classes=10, input_shape=shape).eval()
    masks = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            n = mod.weight.numel()
            flat = torch.zeros(n, dtype=torch.bool)
            flat[torch.randperm(n, generator=gen)[: round(density * n)]] = True
            masks[f"{mod_name}.weight"] = flat.reshape(mod.weight.shape)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname in masks:
                p.masked_fill_(~masks[pname], 0.0)
    return model, masks


def slim_members(name, shape, members, sparsity, gen, distribution="erk"):
    """``members`` slim channel tickets as training makes them: ``SparseEngine(structure="channel")``
    masks (ERK, exact channel counts; residual groups pruned jointly, the logits layer keeps its outputs) with
    BatchNorm statistics from random batches, exported slim (eval mode)."""
    from freetickets.ensembles.slim import slim_member
    from freetickets.sparse import SparseEngine

    out = []
    for k in range(members):
        model = create_model(name, num_classes=10, input_shape=shape)
        engine = SparseEngine(model, None, sparsity=sparsity, structure="channel", seed=k,
                              distribution=distribution, example_inputs=torch.zeros(2, *shape))
        with torch.no_grad():
            model.train()(torch.randn(16, *shape, generator=gen))
        out.append(slim_member(model.eval(), engine.masks, shape))
    return out


def time_interleaved(fns, rounds, device, min_s=0.05):
    """Minimum seconds of one call of each function over ``rounds`` interleaved rounds.

    A round calls a fast function repeatedly for about ``min_s`` seconds, timing every call on
    its own, so the minimum is a call that no other process interrupted (the shared CPU)."""
    best = {k: float("inf") for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()  # warm-up (and the packed form's one-time self-check)
        for _ in range(rounds):
            for k, f in fns.items():
                start = time.perf_counter()
                while True:
                    _sync(device)
                    t0 = time.perf_counter()
                    f()
                    _sync(device)
                    t1 = time.perf_counter()
                    best[k] = min(best[k], t1 - t0)
                    if t1 - start >= min_s:
                        break
    return best


def channel_main(args, device) -> None:
    """The slim channel-ticket latency table (see the module docstring)."""
    from torch.fx.experimental.optimization import fuse

    from freetickets.ensembles.layouts import channels_last
    from freetickets.ensembles.packed import PackedMembers
    from freetickets.ensembles.slim import slim_cost

    shapes = {"mlp": (1, 40), "cnn1d": (1, 40), "wrn-16-8": (3, 32, 32), "wrn-28-10": (3, 32, 32)}
    print("case | batch | dense eager ms | ensemble / dense eager (goal <= 1.0) | route | ensemble / dense "
          "BN-folded, channels-last | FLOPs ensemble / dense | small-input route forced | folded members forced "
          "| slim members one after another, eager")
    for name in args.cases:
        shape = shapes[name]
        gen = torch.Generator().manual_seed(0)
        slims = slim_members(name, shape, args.members, args.sparsity, gen, args.distribution)
        dense = create_model(name, num_classes=10, input_shape=shape).train()
        with torch.no_grad():
            dense(torch.randn(16, *shape, generator=gen))
        dense = dense.eval()
        flops = slim_cost(slims, shape)["inference_flops"] / slim_cost([dense], shape)["inference_flops"]
        dense = dense.to(device)
        folded = fuse(dense)  # a copy: the same inference optimisations as the packed forward
        channels_last(folded)
        slims = [s.to(device) for s in slims]
        ens = Ensemble([PackedMembers(slims)])
        small = PackedMembers(slims, small_inputs=10**12)
        per_member = PackedMembers(slims, small_inputs=0)
        for batch in args.batches or [1, 256]:
            x = torch.randn(batch, *shape, generator=gen).to(device)
            with torch.no_grad():
                ref = torch.stack([s(x) for s in slims])
                diff = (ens.member_logits(x) - ref).abs().max().item()
            assert ens.form.path == "packed" and diff < 1e-3, (ens.form.path, diff)
            fns = {"dense": lambda: dense(x), "folded": lambda: folded(x), "ensemble": lambda: ens.member_logits(x),
                   "per_member": lambda: per_member.member_logits(x), "sequential": lambda: [s(x) for s in slims]}
            best = time_interleaved(fns, args.rounds, device)
            small_route = small.route(x)
            if not (small_route == "graph" and name.startswith("wrn") and batch > 64):  # im2col: gigabytes
                # Rounds of its own, after the others: interleaved with them, the packed graph's large
                # im2col matrices (tens of MB at batch 256) slowed every other function timed in the
                # same rounds by up to 3x on the 2-core CPU, the ensemble and the dense model alike.
                forced = time_interleaved({"dense": fns["dense"], "small": lambda: small.member_logits(x)},
                                          args.rounds, device)
                best["small"] = forced["small"] * best["dense"] / forced["dense"]
            r = {k: f"{v / best['dense']:.2f}" for k, v in best.items()}
            print(f"{name} | {batch} | {best['dense'] * 1e3:.3f} | {r['ensemble']} | {ens.form.route(x)} | "
                  f"{best['ensemble'] / best['folded']:.2f} | {flops:.2f} | {r.get('small', '—')} ({small_route}) | "
                  f"{r['per_member']} | {r['sequential']}", flush=True)


def efficient_forms(name, shape, members):
    """MIMO, BatchEnsemble and MC dropout networks of ``members`` members on model ``name`` (eval mode)."""
    from freetickets.models.efficient import build_form

    forms = {"mimo": {"kind": "mimo", "members": members},
             "batchensemble": {"kind": "batchensemble", "members": members},
             "mcdropout": {"kind": "mcdropout", "members": members, "rate": 0.1, "seed": 0}}
    return {k: build_form(f, create_model(name, num_classes=10, input_shape=shape)).eval() for k, f in forms.items()}


def fixed_malloc_thresholds() -> bool:
    """Pin glibc's mmap and trim thresholds at 32 MiB (its maximum); True if that worked.

    glibc raises its mmap threshold as a process frees large blocks, so from one process to the next a
    call's activations (5 MiB for cnn1d at batch 256) are either heap memory reused across calls or
    fresh mmap'd pages faulted in on every call. Measured here: one dense cnn1d forward at batch 256
    took 6.8 ms in some processes and 15 ms in others, and the ensemble-over-dense ratio swung
    between 0.42 and 1.77 from process to process. Fixed thresholds (the same for the dense model and
    the ensemble) make a run's ratio reproducible; outside glibc this does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers (malloc.h)
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 32 << 20))
    except (OSError, AttributeError):
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--distribution", choices=["erk", "er", "uniform"], default="erk",
                    help="layer densities of the channel tickets (--structure channel): erk (default) gives "
                         "small, FLOP-heavy early layers most channels; uniform is a width multiplier")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--batches", type=int, nargs="+", help="batch sizes to time (default: each case's)")
    ap.add_argument("--structure", choices=["unstructured", "channel"], default="unstructured",
                    help="channel: slim channel tickets in one packed forward (issue 22)")
    ap.add_argument("--cases", nargs="+", default=["mlp", "cnn1d", "wrn-16-8"],
                    choices=["mlp", "cnn1d", "wrn-16-8", "wrn-28-10"], help="models of --structure channel")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    malloc = "glibc malloc thresholds fixed" if fixed_malloc_thresholds() else "malloc as is"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU threads {args.threads}"
    print(f"torch {torch.__version__}, {where}, M={args.members}, "
          f"sparsity {args.sparsity}, min over {args.rounds} interleaved rounds, {malloc}")
    if args.structure == "channel":
        channel_main(args, device)
        return
    cases = CASES if device.type == "cpu" else [("cnn1d", (1, 40), 1024), ("wrn-16-8", (3, 32, 32), 256),
                                                  ("wrn-28-10", (3, 32, 32), 256)]
    if args.batches:
        cases = [(name, shape, b) for name, shape, _ in cases for b in args.batches]
    for name, shape, batch in cases:
        gen = torch.Generator().manual_seed(0)
        built = [sparse_member(name, shape, 1 - args.sparsity, gen) for _ in range(args.members)]
        dense = create_model(name, num_classes=10, input_shape=shape).eval().to(device)
        x = torch.randn(batch, *shape, generator=gen).to(device)

        def copies():
            out = []
            for m, _ in built:
                c = create_model(name, num_classes=10, input_shape=shape).eval()
                c.load_state_dict(m.state_dict())
                out.append(c.to(device))
            return out

        ens = {"fused": Ensemble(copies(), batched=True)}
        vm = Ensemble(copies(), batched=True)
        vm._build("vmap")  # force the vmap path for comparison
        ens["vmap"] = vm
        ens["sequential"] = Ensemble(copies(), batched=False)
        fns = {"dense": lambda: dense(x)}
        for k, e in ens.items():
            fns[k] = (lambda e=e: e.member_logits(x))
        for kind, form in efficient_forms(name, shape, args.members).items():
            fns[kind] = (lambda form=form.to(device): form.member_logits(x))
        best = {k: float("inf") for k in fns}
        with torch.no_grad():
            for f in fns.values():
                f()  # warm-up (and the ensembles' one-time self-check)
            ref = ens["sequential"].member_logits(x)
            for k in ("fused", "vmap"):
                assert ens[k].path == k, (k, ens[k].path)
                diff = (ens[k].member_logits(x) - ref).abs().max().item()
                print(f"  {name}: {k} vs sequential max |logit diff| = {diff:.2e}")
            for _ in range(args.rounds):
                for k, f in fns.items():
                    _sync(device)
                    t0 = time.perf_counter()
                    f()
                    _sync(device)
                    best[k] = min(best[k], time.perf_counter() - t0)
        ratio = {k: best[k] / best["dense"] for k in best}
        print(f"{name} input {shape} batch {batch}: dense {best['dense'] * 1e3:.1f} ms/batch; "
              f"ensemble/dense: fused {ratio['fused']:.2f}, vmap {ratio['vmap']:.2f}, "
              f"sequential {ratio['sequential']:.2f}  (goal batched <= 1.6); "
              f"MIMO {ratio['mimo']:.2f}, BatchEnsemble {ratio['batchensemble']:.2f}, "
              f"MC dropout {ratio['mcdropout']:.2f}")

        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            total = sum(ticket_nbytes(save_ticket(tmp / f"member_{k}.pt", m, masks, {"seed": k}))
                        for k, (m, masks) in enumerate(built))
            torch.save(dense.state_dict(), tmp / "dense.pt")
            dense_bytes = ticket_nbytes(tmp / "dense.pt")
        print(f"{name}: {args.members} tickets {total / 1e6:.3f} MB / dense checkpoint "
              f"{dense_bytes / 1e6:.3f} MB = {total / dense_bytes:.3f}  (goal <= 0.8)")


if __name__ == "__main__":
    main()
