"""Which parameters are sparse, and how they are named.

**Default selection.** Sparse ("sparsifiable") parameters are

* the ``weight`` of every ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d`` (grouped and depthwise
  convolutions included) and ``nn.Linear`` module, subclasses included (so the ``out_proj`` of
  ``nn.MultiheadAttention``, a ``Linear`` subclass, is sparse), and
* the input projections of every ``nn.MultiheadAttention``: the packed Q/K/V weight
  ``in_proj_weight`` of shape ``(3 * embed_dim, embed_dim)``, or, when ``kdim``/``vdim`` differ
  from ``embed_dim``, the separate ``q_proj_weight`` ``(embed_dim, embed_dim)``,
  ``k_proj_weight`` ``(embed_dim, kdim)`` and ``v_proj_weight`` ``(embed_dim, vdim)``.

Biases, normalisation layers, embeddings and everything else stay dense: they are a small share
of the parameters and pruning them hurts accuracy far more than it saves. Every sparse parameter
is one "layer" for the layer-wise distributions (ERK, ER, uniform), which see only its shape: the
packed ``in_proj_weight`` is one layer of shape ``(3d, d)`` (ERK density ∝ (3d + d) / (3d · d)),
separate projections are three layers of their own shapes.

**include / exclude** (:func:`sparsifiable_parameters`): sequences of ``fnmatch`` patterns
(``fnmatch.fnmatchcase``: case-sensitive, ``*`` matches dots too) on the parameter names of the
unwrapped model. ``exclude`` removes matching names from the default set (e.g. ``"conv1.weight"``
keeps ResNet-50's first convolution dense, as RigL does); ``include`` adds any matching parameter
with at least 2 dimensions (e.g. ``"emb.weight"``). A name matched by both is excluded. A pattern
that matches nothing it could act on is a ``ValueError`` naming the pattern and a few names that
exist, so a typo never silently changes what is sparse.

Names are those of the *unwrapped* model (:func:`unwrap_model`), so that masks, tickets and
checkpoints written by a DDP run or a ``torch.compile``-d model use the same keys as a plain
single-process run.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

__all__ = [
    "ATTENTION_PROJECTIONS",
    "SPARSE_MODULE_TYPES",
    "default_sparse_parameters",
    "normalise_patterns",
    "sparsifiable_parameters",
    "unwrap_model",
]

#: Module types whose ``weight`` is made sparse.
SPARSE_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: ``nn.MultiheadAttention`` parameters made sparse (those that exist: packed or separate).
ATTENTION_PROJECTIONS: tuple[str, ...] = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip wrappers that only add a name prefix: DDP/DataParallel ``.module`` and
    ``torch.compile``'s ``._orig_mod`` (in any nesting order)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def normalise_patterns(patterns: str | Sequence[str] | None, what: str) -> tuple[str, ...]:
    """``None`` -> ``()``; a sequence of non-empty strings -> tuple. A bare string is refused
    (``exclude="conv1.weight"`` would otherwise be read as 12 one-character patterns)."""
    if patterns is None:
        return ()
    if isinstance(patterns, str) or not isinstance(patterns, Sequence):
        raise ValueError(f"{what} must be a list of fnmatch patterns (e.g. [{patterns!r}]), got {type(patterns).__name__}")
    out = tuple(patterns)
    for p in out:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{what}: every pattern must be a non-empty string, got {p!r}")
    return out


def default_sparse_parameters(model: nn.Module) -> set[int]:
    """``id``s of the parameters sparse by default (see the module docstring)."""
    wanted: set[int] = set()
    for module in unwrap_model(model).modules():
        if isinstance(module, SPARSE_MODULE_TYPES) and isinstance(module.weight, nn.Parameter):
            wanted.add(id(module.weight))
        elif isinstance(module, nn.MultiheadAttention):
            for attr in ATTENTION_PROJECTIONS:
                p = getattr(module, attr, None)
                if isinstance(p, nn.Parameter):
                    wanted.add(id(p))
    return wanted


def _unmatched(pattern: str, what: str, candidates: list[str]) -> ValueError:
    close = [n for n in candidates if fnmatch.fnmatchcase(n, f"*{pattern.strip('*')}*")] or candidates
    shown = ", ".join(close[:5]) + (" ..." if len(close) > 5 else "")
    return ValueError(f"{what} pattern {pattern!r} matches no {'sparse parameter' if what == 'exclude' else 'parameter with >= 2 dimensions'}; "
                      f"names that exist: {shown or '(none)'}")


def sparsifiable_parameters(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[tuple[str, nn.Parameter]]:
    """Return ``[(name, weight), ...]`` of every sparse weight, in ``named_parameters`` order.

    ``name`` is the parameter's name in ``unwrap_model(model).named_parameters()`` (e.g.
    ``"block1.conv.weight"``, ``"encoder.layers.0.self_attn.in_proj_weight"``). A parameter
    shared by several modules appears once, under its first name. ``include``/``exclude``: see
    the module docstring. Raises ``ValueError`` for a pattern that matches nothing, an included
    parameter with fewer than 2 dimensions, or when no parameter is left sparse.
    """
    include = normalise_patterns(include, "include")
    exclude = normalise_patterns(exclude, "exclude")
    base = unwrap_model(model)
    wanted = default_sparse_parameters(base)
    named = list(base.named_parameters())  # deduplicates shared parameters itself
    selected = {name for name, p in named if id(p) in wanted}
    for pattern in include:
        hits = [(n, p) for n, p in named if fnmatch.fnmatchcase(n, pattern)]
        eligible = [n for n, p in hits if p.dim() >= 2]
        if not eligible:
            if hits:
                raise ValueError(f"include pattern {pattern!r} matches only parameters with fewer than 2 dimensions "
                                 f"({', '.join(n for n, _ in hits[:5])}); only weights of >= 2 dimensions can be sparse")
            raise _unmatched(pattern, "include", [n for n, p in named if p.dim() >= 2])
        selected.update(eligible)
    for pattern in exclude:
        hits = {n for n in selected if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise _unmatched(pattern, "exclude", [n for n, _ in named if n in selected])
        selected -= hits
    out = [(name, p) for name, p in named if name in selected]
    if not out:
        raise ValueError(
            "model: no sparsifiable layer left; sparse training needs at least one nn.Conv1d/2d/3d, "
            "nn.Linear or nn.MultiheadAttention weight (or an `include` pattern), and `exclude` "
            "must leave at least one"
        )
    return out
