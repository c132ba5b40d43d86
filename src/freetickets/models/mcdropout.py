"""MC dropout (Gal & Ghahramani, ICML 2016): dropout kept on at test time, M seeded samples as members.

Placement: dropout on the *input of every Conv/Linear layer except the first* (the first reads
the raw data; dropping input pixels/samples is not what the baseline does). In a WRN this puts
dropout before every block convolution, every shortcut convolution and the classifier; in
``cnn1d`` before the 2nd and 3rd convolutions and the classifier. Masks are element-wise (one
keep/drop decision per feature position) with inverted scaling by ``1 / (1 - rate)``.

Training: ordinary dropout (fresh masks from torch's RNG every call). Test
(:meth:`MCDropout.member_logits`): member ``k`` uses a *fixed* mask per layer, drawn from a CPU
``torch.Generator`` seeded from ``(seed, k, layer index)`` and shared by every example of the
batch; so member predictions are deterministic, the same after a reload (the masks depend only
on the constructor arguments, not on the state dict) and independent of which other examples
are in the batch (with BatchNorm in eval mode). Without a member selected and in eval mode,
dropout is off (the usual deterministic network).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from freetickets.data.base import derive_seed
from freetickets.errors import UserError
from freetickets.models._efficient_common import check_members, set_submodule, weight_layers

__all__ = ["MCDropout", "MCDropoutInput", "mask_seed"]


def mask_seed(seed: int, member: int, layer_index: int) -> int:
    """The 63-bit generator seed of member ``member``'s mask at layer ``layer_index``.

    The package's seed hash (:func:`freetickets.data.base.derive_seed`, not e.g. ``seed + member``)
    so that neighbouring seeds, members and layers give unrelated masks; stable across runs,
    machines and Python versions.
    """
    return derive_seed("mcdropout-mask", seed, member, layer_index)


class MCDropoutInput(nn.Module):
    """Dropout on the input of ``layer``, then ``layer``.

    ``member = None``: dropout with fresh masks in training mode, identity in eval mode.
    ``member = k``: the fixed mask of member ``k`` (shape = one example's input to the layer,
    broadcast over the batch), in either mode. Masks are cached per (member, shape, device,
    dtype); the cache is not part of the state dict.
    """

    def __init__(self, layer: nn.Module, rate: float, layer_index: int, seed: int) -> None:
        super().__init__()
        self.layer = layer
        self.rate = rate
        self.layer_index = layer_index
        self.seed = seed
        self.member: int | None = None
        self._masks: dict[tuple, torch.Tensor] = {}

    def mask(self, member: int, shape: tuple[int, ...], device: torch.device,
             dtype: torch.dtype) -> torch.Tensor:
        """Member ``member``'s fixed mask for one example of shape ``shape``: 0 or ``1/(1-rate)``."""
        key = (member, tuple(shape), device, dtype)
        cached = self._masks.get(key)
        if cached is None:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(mask_seed(self.seed, member, self.layer_index))
            keep = torch.rand(tuple(shape), generator=generator) >= self.rate
            cached = (keep.to(torch.float64) / (1.0 - self.rate)).to(device=device, dtype=dtype)
            self._masks[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> ``layer(dropout(x))``."""
        if self.member is not None:
            x = x * self.mask(self.member, x.shape[1:], x.device, x.dtype)
        elif self.training and self.rate > 0:
            x = F.dropout(x, p=self.rate, training=True)
        return self.layer(x)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, layer_index={self.layer_index}"


class MCDropout(nn.Module):
    """``base`` with dropout of probability ``rate`` before every Conv/Linear layer but the first (in place).

    ``forward(x)``: ``(B, ...)`` -> ``(B, C)``, ordinary dropout in training, none in eval.
    :meth:`member_logits`: ``(B, ...)`` -> ``(M, B, C)``, member ``k`` with its fixed masks
    (module docstring). ``rate`` outside [0, 1) raises ``ValueError`` naming ``dropout rate``.
    """

    def __init__(self, base: nn.Module, rate: float, members: int, seed: int = 0) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise UserError(f"dropout rate: expected a probability in [0, 1), got {rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed: expected an int, got {seed!r}")
        self.num_members = check_members(members)
        self.rate = float(rate)
        self.seed = seed
        layers = weight_layers(base)
        if len(layers) < 2:
            raise UserError("MC dropout needs a model with at least two Conv/Linear layers "
                            "(dropout goes on the input of every such layer but the first)")
        self.dropout_layers: list[str] = []
        for index, (name, layer) in enumerate(layers[1:], start=1):
            set_submodule(base, name, MCDropoutInput(layer, self.rate, index, seed))
            self.dropout_layers.append(name)
        self.model = base

    def _sites(self) -> list[MCDropoutInput]:
        return [m for m in self.model.modules() if isinstance(m, MCDropoutInput)]

    @contextlib.contextmanager
    def use_member(self, member: int | None) -> Iterator[None]:
        """Within the block, every dropout site uses member ``member``'s fixed masks."""
        if member is not None and not 0 <= member < self.num_members:
            raise ValueError(f"member: expected 0 <= member < {self.num_members}, got {member!r}")
        sites = self._sites()
        previous = [site.member for site in sites]
        for site in sites:
            site.member = member
        try:
            yield
        finally:
            for site, value in zip(sites, previous):
                site.member = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> ``(B, C)`` (dropout active only in training mode)."""
        return self.model(x)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time form: ``(B, ...)`` -> ``(M, B, C)``, M forwards with fixed seeded masks.

        Call it in eval mode (BatchNorm running statistics), as for every ensemble prediction.
        """
        outputs = []
        for member in range(self.num_members):
            with self.use_member(member):
                outputs.append(self.model(x))
        return torch.stack(outputs)
