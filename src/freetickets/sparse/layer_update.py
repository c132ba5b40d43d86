"""One layer's prune-and-regrow, the finiteness check of grow scores, and fast CPU helpers.

Split out of :mod:`freetickets.sparse.engine` (which orchestrates: schedule, counters, state);
everything here works on one parameter, its bool mask and its optimizer state.

**Regrowth policy** (``regrow_pruned``), for a layer with ``n_active`` of ``n`` weights active
and update fraction ``p``:

* ``True`` (the released FreeTickets code and RigL): ``k = ceil(p * n_active)`` weights are
  pruned, then ``k`` positions are grown among *all* positions inactive after pruning, so a
  weight pruned in this update may be regrown in the same update; it then restarts at exactly 0
  (weight and optimizer state), like every regrown weight.
* ``False``: only positions inactive *before* the update are eligible, so every update really
  moves ``k`` weights; hence ``k = min(ceil(p * n_active), n - n_active)``.

In both modes a layer at density 1 (e.g. made dense by ERK) is never updated, and the active
count of every layer never changes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from freetickets.sparse.rules import GrowContext, GrowRule, PruneRule, grow_momentum, grow_random, momentum_buffer
from freetickets.sparse.selection import ceil_product

__all__ = ["check_selection", "grow_score", "layer_k", "nonfinite_layers", "pack_bits_fast", "update_layer", "zero_at"]

_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)


def pack_bits_fast(mask: torch.Tensor) -> torch.Tensor:
    """:func:`~freetickets.sparse.masks.pack_bits`, with ``numpy.packbits`` on CPU (a SIMD byte
    scan, hundreds of times faster than the generic multiply-and-sum)."""
    from freetickets.sparse.masks import pack_bits

    if mask.device.type != "cpu":
        return pack_bits(mask)
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy(), bitorder="little"))


@torch.no_grad()
def zero_at(tensor: torch.Tensor, where: torch.Tensor) -> None:
    """``tensor.masked_fill_(where, 0)``; on CPU written in place by ``numpy.copyto`` (no
    intra-op thread-pool wake-up), then an empty in-place torch op on a view moves autograd's
    version counter exactly as ``masked_fill_`` would."""
    if tensor.device.type != "cpu" or where.device.type != "cpu" or tensor.dtype not in _NUMPY_DTYPES:
        tensor.masked_fill_(where, 0)
        return
    t_np, w_np = tensor.detach().numpy(), where.numpy()
    if t_np.dtype == np.float32 and t_np.flags.c_contiguous and w_np.flags.c_contiguous:
        # Branch-free: AND the bit patterns with 0 (selected) or all ones (kept), so selected
        # entries become +0.0 and the others keep their exact bits (NaN, inf and -0.0 included).
        keep = np.subtract(w_np.view(np.uint8), 1, dtype=np.int32)
        np.bitwise_and(t_np.view(np.int32), keep, out=t_np.view(np.int32))
    else:
        np.copyto(t_np, 0, where=w_np)
    tensor.as_strided((0,), (1,)).zero_()


def layer_k(fraction: float, n_active: int, n: int, regrow_pruned: bool) -> int:
    """Weights pruned (= regrown) in one layer by an update of ``fraction`` (module docstring)."""
    if n_active >= n:
        return 0
    k = ceil_product(fraction, n_active)
    return k if regrow_pruned else min(k, n - n_active)


def grow_score(rule: GrowRule, param: torch.Tensor, state: dict[str, Any]) -> torch.Tensor | None:
    """The tensor the grow rule ranks: the momentum buffer for :func:`grow_momentum`, nothing for
    :func:`grow_random`, the gradient otherwise (:func:`grow_gradient` and custom rules)."""
    if rule is grow_random:
        return None
    if rule is grow_momentum:
        return momentum_buffer(state)
    return param.grad


def nonfinite_layers(scores: list[tuple[str, torch.Tensor | None]]) -> list[str]:
    """Names whose score tensor has an inf or NaN entry (``None`` scores are skipped). On CPU one
    ``isfinite`` pass per layer; on accelerators all layers are read back together (one sync)."""
    present = [(n, t) for n, t in scores if t is not None]
    if not present:
        return []
    if all(t.device.type == "cpu" for _, t in present):
        return [n for n, t in present if not bool(torch.isfinite(t).all())]
    flags = torch.stack([torch.isfinite(t).all().to(present[0][1].device) for _, t in present]).tolist()
    return [n for (n, _), ok in zip(present, flags) if not ok]


def check_selection(selected: Any, allowed: torch.Tensor, k: int, name: str, what: str) -> None:
    """``RuntimeError`` unless ``selected`` is a bool tensor of ``allowed``'s shape with exactly
    ``k`` True entries, all inside ``allowed``."""
    if not isinstance(selected, torch.Tensor) or selected.dtype != torch.bool or selected.shape != allowed.shape:
        raise RuntimeError(f"{what} rule for {name}: must return a bool tensor of shape {tuple(allowed.shape)}")
    if selected.device.type == "cpu" and allowed.device.type == "cpu":
        sel_np = selected.numpy()
        exact = int(np.count_nonzero(sel_np)) == k and int(np.count_nonzero(sel_np & allowed.numpy())) == k
    else:
        # both counts in one device-to-host read
        exact = torch.stack([selected.sum(), (selected & allowed).sum()]).tolist() == [k, k]
    if not exact:
        raise RuntimeError(f"{what} rule for {name}: must select exactly {k} allowed positions")


@torch.no_grad()
def update_layer(
    param: torch.Tensor,
    mask: torch.Tensor,
    ever_active: torch.Tensor,
    k: int,
    prune_rule: PruneRule,
    grow_rule: GrowRule,
    state: dict[str, Any],
    generator: torch.Generator,
    name: str,
    regrow_pruned: bool,
) -> int | torch.Tensor:
    """Prune ``k`` active weights of ``param`` and regrow ``k`` positions, in place.

    ``mask`` (bool, ``param``'s shape) and ``ever_active`` (bit-packed, see
    :func:`pack_bits_fast`) are updated in place; pruned weights are set to 0; every optimizer
    ``state`` tensor of ``param``'s shape is zeroed at the grown positions (grown weights are
    already 0: inactive before, or just pruned). Returns how many grown positions were pruned in
    this same update (always 0 unless ``regrow_pruned``): an int on CPU, a 0-d tensor elsewhere
    (so the engine reads all layers back at once).
    """
    removed = prune_rule(param, mask, k)
    check_selection(removed, mask, k, name, "prune")
    on_cpu = mask.device.type == "cpu"
    if not regrow_pruned:  # eligible = inactive before this update
        eligible = torch.from_numpy(np.logical_not(mask.numpy())) if on_cpu else ~mask
    if on_cpu:  # numpy on zero-copy views: no intra-op thread-pool wake-ups (see selection)
        mask_np = mask.numpy()
        np.logical_xor(mask_np, removed.numpy(), out=mask_np)  # removed is a subset of mask
    else:
        mask.logical_xor_(removed)  # removed is a subset of mask: this clears exactly those
    if regrow_pruned:  # eligible = inactive after pruning (just-pruned positions included)
        eligible = torch.from_numpy(np.logical_not(mask.numpy())) if on_cpu else ~mask
    context = GrowContext(grad=param.grad, optimizer_state=state, generator=generator, name=name)
    grown = grow_rule(param, eligible, k, context)
    check_selection(grown, eligible, k, name, "grow")
    del eligible
    if on_cpu:
        np.logical_or(mask_np, grown.numpy(), out=mask_np)
    else:
        mask.logical_or_(grown)
    zero_at(param, removed)  # grown positions are inactive before or just pruned: now exactly 0
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            zero_at(value, grown)
    if on_cpu:
        ever = ever_active.numpy()
        np.bitwise_or(ever, pack_bits_fast(grown).numpy(), out=ever)
    else:
        ever_active.bitwise_or_(pack_bits_fast(grown))
    if not regrow_pruned:
        return 0
    if on_cpu:
        return int(np.count_nonzero(np.logical_and(removed.numpy(), grown.numpy())))
    return (removed & grown).sum()

