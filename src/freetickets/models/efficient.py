"""Efficient-ensemble model forms (baselines, docs/algorithms.md): MIMO, BatchEnsemble, MC dropout,
Packed-Ensembles and Masksembles.

Each wraps a registry model (``create_model(...)``), which it takes over and edits in place,
and exposes ``num_members`` and ``member_logits(x)``: a plain test batch ``(B, ...)`` ->
member logits ``(M, B, C)``. Their training forms differ:

* :class:`MIMO`: ``forward((B', M * C_in, ...)) -> (M, B', C)`` on batches from
  :func:`mimo_training_batch` (targets ``(M, B')``);
* :class:`BatchEnsemble`: ``forward((M * B, ...)) -> (M * B, C)`` on :func:`tile_batch` (x and y);
* :class:`MCDropout`: ``forward((B, ...)) -> (B, C)`` with ordinary dropout;
* :class:`Packed`: ``forward((B, ...)) -> (M, B, C)`` (grouped layers, every member sees every row);
* :class:`Masksembles`: ``forward((N, ...)) -> (N, C)``, row slice ``k`` through fixed mask ``k``.

FLOPs of each form: :mod:`freetickets.flops.efficient`.
"""
from freetickets.models.batchensemble import BATCHENSEMBLE_INITS, BatchEnsemble, BatchEnsembleLayer, tile_batch
from freetickets.models.mcdropout import MCDropout, MCDropoutInput, mask_seed
from freetickets.models.masksembles import Masksembles, generate_masks
from freetickets.models.mimo import MIMO, mimo_training_batch
from freetickets.models.packed import Packed, PackedLinear, packed_width

__all__ = [
    "BATCHENSEMBLE_INITS",
    "BatchEnsemble",
    "BatchEnsembleLayer",
    "MCDropout",
    "MCDropoutInput",
    "MIMO",
    "Masksembles",
    "Packed",
    "PackedLinear",
    "generate_masks",
    "packed_width",
    "mask_seed",
    "mimo_training_batch",
    "tile_batch",
    "FORMS",
    "build_form",
]

#: The efficient forms by the name a run manifest records (``manifest["model_form"]["kind"]``).
FORMS = ("mimo", "batchensemble", "mcdropout", "packed", "masksembles")


def build_form(form: dict, base):
    """Wrap the registry model ``base`` into the efficient form a manifest describes.

    ``form``: ``{"kind": "mimo", "members": M}``, ``{"kind": "batchensemble", "members": M,
    "init": ...}``, ``{"kind": "mcdropout", "members": M, "rate": p, "seed": s}``, ``{"kind":
    "packed", "members": M, "alpha": a, "gamma": g}`` or ``{"kind": "masksembles", "members": M,
    "scale": s, "seed": seed}`` (what the
    method recipes write into ``manifest["model_form"]``). Randomness of the wrapping (fresh
    MIMO end layers, BatchEnsemble factors, packed layers) comes from torch's global RNG; loading
    a ticket overwrites it. MC dropout's and Masksembles' masks are functions of their seed.
    """
    from freetickets.errors import UserError

    kind = form.get("kind") if isinstance(form, dict) else None
    if kind == "mimo":
        return MIMO(base, int(form["members"]))
    if kind == "batchensemble":
        return BatchEnsemble(base, int(form["members"]), init=str(form.get("init", "random_sign")))
    if kind == "mcdropout":
        return MCDropout(base, float(form["rate"]), int(form["members"]), seed=int(form.get("seed", 0)))
    if kind == "packed":
        return Packed(base, int(form["members"]), alpha=float(form["alpha"]), gamma=int(form["gamma"]))
    if kind == "masksembles":
        return Masksembles(base, int(form["members"]), scale=float(form["scale"]), seed=int(form.get("seed", 0)))
    raise UserError(f"model_form: unknown kind {kind!r}; expected one of {', '.join(FORMS)}")
