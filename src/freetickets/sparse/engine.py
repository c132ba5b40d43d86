"""``SparseEngine``: dynamic sparse training attached to any model and optimizer.

Usage (design §2.2)::

    engine = SparseEngine(model, optimizer, sparsity=0.8)
    for x, y in loader:
        loss_fn(model(x), y).backward()
        optimizer.step()
        engine.step()            # re-zero masked weights; every update_interval steps prune + regrow
        optimizer.zero_grad()

How it works and why:

* **Masks** are ``torch.bool`` tensors (1 byte per weight) on the parameter's device, one per
  sparse layer (:func:`~freetickets.sparse.params.sparsifiable_parameters`: Conv/Linear weights
  and ``nn.MultiheadAttention`` input projections by default; ``include``/``exclude``
  patterns change the set). The engine keeps no
  float copies of masks and no dense buffers; the only other per-weight state is the
  "ever active" set, bit-packed (1 bit per weight), for the explored fraction / ITOP rate.
  Engine memory is therefore about 0.28x the memory of float32 sparse weights.
* **Exact sparsity.** The engine masks the *weights*, after ``optimizer.step()``: momentum,
  Nesterov, weight decay and Adam moments may move masked weights, and ``step()`` puts them back
  to exactly 0 with one in-place multiply by the mask per layer (``Tensor.mul_`` by a uint8 view of
  the bool mask; measured on CPU: several times faster than ``torch._foreach_mul_`` with bool
  masks, which promotes them to float temporaries, and than ``masked_fill_``, which needs the
  inverted mask). Layers that are fully dense (e.g. made dense by ERK) are skipped. Gradients are
  not masked, so the *dense* gradient of the current mini-batch is available to RigL growth.
* **Updates.** At optimizer steps t with ``t % update_interval == 0`` and ``t < end_step`` (when
  given), with p_t from the prune schedule, each layer with n_active active weights out of n
  prunes ``k = ceil(p_t * n_active)`` weights by the prune rule and regrows exactly ``k`` by the
  grow rule. ``regrow_pruned=True`` (default; the released FreeTickets code and RigL): every
  position inactive after pruning is eligible, so a weight pruned in an update may be regrown in
  the same update (restarting at 0). ``regrow_pruned=False``: only positions inactive *before*
  the update are eligible, so every update really moves k weights; then
  ``k = min(ceil(p_t * n_active), n - n_active)``. Layers at density 1 never change; active
  counts per layer never change (:mod:`~freetickets.sparse.layer_update`).
* **Non-finite grow scores.** When an update is due and the grow score of a sparse layer (its
  gradient for ``grow='gradient'`` and custom rules, its momentum buffer for ``'momentum'``) has
  an inf/NaN entry -- e.g. a step that ``torch.amp.GradScaler`` skipped because fp16 gradients
  overflowed -- no update happens on that step (masks and counters unchanged, a warning logged);
  the update is performed at the next step whose scores are all finite (with the fraction of
  the step it was due at). The step counter counts every step.
* **Gradient accumulation.** ``update_interval`` and ``end_step`` count ``engine.step()`` calls,
  i.e. optimizer steps: call it after each ``optimizer.step()``, not after each micro-batch's
  ``backward()``. Gradient growth then ranks ``param.grad``, the gradient accumulated over the
  micro-batches of that optimizer step.
* **Regrown weights** are set to exactly 0 and every optimizer-state tensor with the
  parameter's shape (SGD ``momentum_buffer``; Adam/AdamW ``exp_avg``, ``exp_avg_sq``,
  ``max_exp_avg_sq``; the same for other optimizers) is zeroed at the regrown positions, so a new
  connection starts fresh and is not pushed by stale momentum.
* **Determinism.** All randomness (initial masks, ``grow='random'``) comes from the engine's own
  CPU ``torch.Generator`` seeded with ``seed``; ties are broken by lower flat index. Masks are
  therefore identical on every DDP rank by construction (gradients are all-reduced before
  ``optimizer.step()``), on CPU and CUDA, and a resumed run (``state_dict``) continues bitwise.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from freetickets.sparse.engine_args import channel_structure, check_arguments, initial_masks, validate_fraction
from freetickets.sparse.layer_update import grow_score, layer_k, nonfinite_layers, update_layer
from freetickets.sparse.layer_update import pack_bits_fast as _pack_bits_fast  # noqa: F401 (old name)
from freetickets.sparse.layer_update import zero_at as _zero_at  # noqa: F401 (old name)
from freetickets.sparse.masks import count_bits, pack_bits, unpack_bits
from freetickets.sparse.params import normalise_patterns, sparsifiable_parameters, unwrap_model
from freetickets.sparse.rules import GrowContext, GrowRule, PruneRule, get_grow_rule, get_prune_rule
from freetickets.sparse.schedules import get_schedule

__all__ = ["SparseEngine"]

logger = logging.getLogger(__name__)

_STATE_FORMAT = "freetickets-sparse-engine"
_STATE_VERSION = 2


class SparseEngine:
    """Dynamic sparse training engine (masks, exact sparsity, prune-and-regrow updates).

    Args:
        model: any ``nn.Module`` (DDP- or ``torch.compile``-wrapped is fine); the weights of its
            Conv1d/2d/3d and Linear layers and the input projections of its
            ``nn.MultiheadAttention`` modules become sparse (:mod:`~freetickets.sparse.params`);
            names are those of the unwrapped model.
        optimizer: the optimizer stepping ``model``'s parameters (its state is zeroed at regrown
            positions); may be ``None`` for fixed masks without an optimizer.
        sparsity: overall fraction S in [0, 1) of zero weights over the sparse layers. May be
            ``None`` when ``masks`` is given (the masks then define it).
        distribution: ``"erk"`` | ``"er"`` | ``"uniform"`` (:mod:`~freetickets.sparse.distributions`).
        prune: name in :data:`~freetickets.sparse.rules.PRUNE_RULES` (``"magnitude"``, ``"set"``)
            or a prune-rule function.
        grow: name in :data:`~freetickets.sparse.rules.GROW_RULES` (``"gradient"``, ``"random"``,
            ``"momentum"``) or a grow-rule function.
        prune_fraction: p in [0, 1], fraction of each layer's active weights moved per update.
        prune_schedule: name in :data:`~freetickets.sparse.schedules.SCHEDULES` (``"constant"``,
            ``"cosine"``; cosine needs ``end_step``).
        update_interval: optimizer steps between updates; ``None`` = static masks.
        end_step: no update at steps >= ``end_step``; ``None`` = updates never stop.
        seed: seed of the engine's CPU generator (initial masks, random growth).
        sparse_init: ``"none"`` or ``"rescale"`` (multiply each sparse layer's initial weights by
            1/sqrt(density), the sparsity-aware initialisation of Evci et al. 2020).
        masks: optional ``name -> bool tensor`` to start from (PF ensembles, static runs); a
            sparse layer missing from it is dense.
        include: ``fnmatch`` patterns of parameter names (>= 2 dimensions) to make sparse as
            well, e.g. ``["emb.weight"]``.
        exclude: ``fnmatch`` patterns of parameter names to keep dense, e.g. ``["conv1.weight"]``
            (wins over ``include``). A pattern matching nothing is a ``ValueError``.
        regrow_pruned: ``True`` (default, the released code and RigL): a weight pruned in an
            update may be regrown in the same update; ``False``: it may not (see above).
        check_consistency: when ``torch.distributed`` is initialised, all-reduce
            :meth:`mask_checksum` after each update and raise ``RuntimeError`` if ranks differ.
        structure: ``"unstructured"`` (default: single weights) or ``"channel"``: whole output
            channels/neurons, masks ``outer(keep_out, keep_in)``, channel prune-and-regrow
            (:mod:`~freetickets.sparse.channels`); ``prune`` must then be ``"magnitude"`` and
            ``grow`` ``"gradient"`` or ``"random"`` (both: random channel regrowth).
        example_inputs: for ``structure="channel"``: a batch the model accepts (e.g.
            ``torch.zeros(2, *input_shape)`` on its device), traced once by torch-pruning's
            ``DependencyGraph`` to find which tensors index each channel.

    Attributes:
        masks: ``name -> torch.bool`` tensor of the parameter's shape and device (True = active).
            Live tensors, updated in place; treat them as read-only (to replace masks, build a new
            engine with ``masks=`` or use :meth:`load_state_dict`).
        topology_version: increases by one whenever an update changes at least one mask.
        last_step_was_update: True iff the previous :meth:`step` performed a prune-and-regrow
            (with ``grow='gradient'`` that update used the dense gradient of that step: RigL's
            FLOPs accounting counts a dense weight gradient for such steps).
        step_count / update_count: optimizer steps counted and updates performed.
        pruned_total / regrown_total: weights pruned / regrown by all updates so far (always equal).
        reactivated_total: regrown positions that were pruned in the same update
            (``regrow_pruned=True`` only; always 0 otherwise).
        postponed_steps: steps on which a due update was postponed (non-finite grow scores).
        sparsity_target: the requested overall sparsity (from the masks when ``sparsity=None``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        sparsity: float | None = None,
        distribution: str = "erk",
        prune: str | PruneRule = "magnitude",
        grow: str | GrowRule = "gradient",
        prune_fraction: float = 0.5,
        prune_schedule: str = "constant",
        update_interval: int | None = 1000,
        end_step: int | None = None,
        seed: int = 0,
        sparse_init: str = "none",
        masks: Mapping[str, torch.Tensor] | None = None,
        check_consistency: bool = False,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        regrow_pruned: bool = True,
        structure: str = "unstructured",
        example_inputs: Any = None,
    ) -> None:
        # ---- validate arguments (ValueError naming the argument and the allowed values)
        sparsity = check_arguments(sparsity=sparsity, masks=masks, distribution=distribution,
                                   update_interval=update_interval, end_step=end_step, prune_schedule=prune_schedule,
                                   sparse_init=sparse_init, grow=grow, optimizer=optimizer, seed=seed,
                                   regrow_pruned=regrow_pruned)
        self._prune_rule: PruneRule = prune if callable(prune) else get_prune_rule(prune)
        self._grow_rule: GrowRule = grow if callable(grow) else get_grow_rule(grow)
        self.prune_fraction = validate_fraction(prune_fraction, "prune_fraction")
        self._schedule = get_schedule(prune_schedule)

        self.model = unwrap_model(model)
        self.optimizer = optimizer
        self.distribution = distribution
        self.prune = prune if isinstance(prune, str) else getattr(prune, "__name__", "custom")
        self.grow = grow if isinstance(grow, str) else getattr(grow, "__name__", "custom")
        self.prune_schedule = prune_schedule
        self.update_interval = update_interval
        self.end_step = end_step
        self.seed = seed
        self.sparse_init = sparse_init
        self.check_consistency = bool(check_consistency)
        self.regrow_pruned = regrow_pruned
        self.include = list(normalise_patterns(include, "include"))
        self.exclude = list(normalise_patterns(exclude, "exclude"))

        named = sparsifiable_parameters(self.model, include=self.include, exclude=self.exclude)
        self._names: list[str] = [name for name, _ in named]
        self._params: list[nn.Parameter] = [p for _, p in named]
        sparse_ids = {id(p) for p in self._params}
        self._dense_numel = sum(p.numel() for p in self.model.parameters() if id(p) not in sparse_ids)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)

        # ---- initial masks (channel structure: freetickets.sparse.channels)
        self.structure = structure
        self._channels = channel_structure(self.model, named, structure=structure, example_inputs=example_inputs,
                                           masks=masks, sparsity=sparsity, distribution=distribution,
                                           prune=prune, grow=grow, generator=self._generator)
        if self._channels is not None and masks is None:
            masks = {n: self._channels.mask(j) for j, n in enumerate(self._names)}
        self.masks: dict[str, torch.Tensor] = initial_masks(named, masks, sparsity, distribution, self._generator)
        self._refresh_layer_state()
        self._ever_active: list[torch.Tensor] = [pack_bits(self.masks[n]) for n in self._names]
        self.sparsity_target = sparsity if sparsity is not None else self.sparsity()

        self._step_count = 0
        self._update_count = 0
        self.topology_version = 0
        self.pruned_total = 0
        self.regrown_total = 0
        self.reactivated_total = 0
        self.last_step_was_update = False
        self._pending: tuple[int, float] | None = None  # (due step, fraction) of a postponed update
        self.postponed_steps = 0

        with torch.no_grad():
            if sparse_init == "rescale":
                for name, p in named:
                    density = self._counts[self._names.index(name)] / p.numel()
                    if 0.0 < density < 1.0:
                        p.mul_(1.0 / math.sqrt(density))
        self.apply_masks()
        logger.info(
            "SparseEngine: %d sparse layers, %d of %d sparse weights active (sparsity %.4f), %s/%s/%s",
            len(self._names), sum(self._counts), sum(self._numels), self.sparsity(),
            distribution, self.prune, self.grow,
        )

    # ------------------------------------------------------------------ internal bookkeeping
    def _refresh_layer_state(self) -> None:
        """Recompute per-layer counts and the list of layers that need masking (not fully dense)."""
        self._numels = [p.numel() for p in self._params]
        self._counts = [int(torch.count_nonzero(self.masks[n])) for n in self._names]
        # uint8 views of the bool masks (same storage, so they follow in-place mask updates):
        # ``w.mul_(uint8)`` measured about 1.5x faster than ``w.mul_(bool)`` on CPU.
        self._masked_pairs = [
            (p, self.masks[n].view(torch.uint8))
            for n, p, c, numel in zip(self._names, self._params, self._counts, self._numels)
            if c < numel
        ]

    # ------------------------------------------------------------------ per-step API
    @torch.no_grad()
    def apply_masks(self) -> None:
        """Set every masked weight to exactly 0 (in place; one ``mul_`` by the mask per layer)."""
        for p, m in self._masked_pairs:
            # Multiplying a negative weight by 0 gives -0.0; adding +0.0 turns it into +0.0
            # (IEEE 754), so masked entries are bitwise zero and tickets need no sign bits.
            p.mul_(m).add_(0.0)
        if self._channels is not None:  # removed channels' bias/BN affine and optimizer state
            self._channels.apply(self.optimizer, [self.masks[n] for n in self._names])

    def _update_due(self, step: int) -> bool:
        if self.update_interval is None or step % self.update_interval != 0:
            return False
        return self.end_step is None or step < self.end_step

    def step(self) -> None:
        """Call once per optimizer step, after ``optimizer.step()`` and before ``zero_grad()``.

        Re-zeros masked weights; when an update is due (see the module docstring), prunes and
        regrows with the scheduled fraction using the current mini-batch's dense gradient. An
        update whose grow scores are not all finite is postponed to the next step where they are.
        """
        self._step_count += 1
        self.apply_masks()
        self.last_step_was_update = False
        if self._update_due(self._step_count):
            if self._pending is not None:
                logger.warning("SparseEngine: the update due at step %d was never performed (grow scores stayed "
                               "non-finite); the update due at step %d replaces it", self._pending[0], self._step_count)
            fraction = self._schedule(self._step_count, self.prune_fraction, self.end_step)
            self._pending = (self._step_count, fraction)
        if self._pending is None:
            return
        bad = self._nonfinite_layers()
        if bad:
            self.postponed_steps += 1
            log = logger.warning if self._pending[0] == self._step_count else logger.debug
            log("SparseEngine: step %d: non-finite grow scores in %d layer(s) (%s%s); the topology update due at "
                "step %d is postponed to the next step with finite scores", self._step_count, len(bad),
                ", ".join(bad[:3]), " ..." if len(bad) > 3 else "", self._pending[0])
            return
        fraction = self._pending[1]
        self._pending = None
        self._update(fraction)
        self.last_step_was_update = True

    def _nonfinite_layers(self) -> list[str]:
        """Names of the layers an update would change whose grow score has an inf/NaN entry."""
        scores = []
        for i, (name, p) in enumerate(zip(self._names, self._params)):
            if self._counts[i] < self._numels[i]:
                state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
                scores.append((name, grow_score(self._grow_rule, p, state)))
        return nonfinite_layers(scores)

    @property
    def update_pending(self) -> bool:
        """True while a due update waits for finite grow scores."""
        return self._pending is not None

    def update_topology(self, fraction: float) -> None:
        """One prune-and-regrow of ``fraction`` of each layer's active weights now (the EDST jump),
        independent of ``update_interval``; does not advance the step counter.

        With ``grow='gradient'`` call it while ``param.grad`` holds a gradient (after
        ``backward()``); without gradients it grows at random (and logs a warning).
        """
        fraction = validate_fraction(fraction, "fraction")
        self.apply_masks()
        self._update(fraction)

    @torch.no_grad()
    def _update(self, fraction: float) -> None:
        if self._channels is not None:
            self._update_channels(fraction)
            return
        moved = 0
        reactivated: list[int | torch.Tensor] = []
        for i, (name, p) in enumerate(zip(self._names, self._params)):
            k = layer_k(fraction, self._counts[i], self._numels[i], self.regrow_pruned)
            if k <= 0:
                continue
            state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
            reactivated.append(update_layer(p, self.masks[name], self._ever_active[i], k, self._prune_rule,
                                            self._grow_rule, state, self._generator, name, self.regrow_pruned))
            moved += k
        self._update_count += 1
        self.pruned_total += moved
        self.regrown_total += moved
        tensors = [r for r in reactivated if isinstance(r, torch.Tensor)]
        again = sum(int(r) for r in reactivated if not isinstance(r, torch.Tensor))
        if tensors:
            again += int(torch.stack([t.to(tensors[0].device) for t in tensors]).sum())
        self.reactivated_total += again
        if moved:
            self.topology_version += 1
        logger.debug("topology update %d at step %d: fraction %.4f, %d weights moved (%d regrown where pruned)",
                     self._update_count, self._step_count, fraction, moved, again)
        if self.check_consistency:
            self._check_ranks()

    def _update_channels(self, fraction: float) -> None:
        """Channel prune-and-regrow (:meth:`~freetickets.sparse.channels.ChannelStructure.update`)."""
        moved, again, fresh = self._channels.update(fraction, [self.masks[n] for n in self._names], self.optimizer,
                                                    self._generator, self.regrow_pruned)
        for i, grown in enumerate(fresh):
            self._ever_active[i] |= pack_bits(grown)
        self._update_count += 1
        self.pruned_total += moved
        self.regrown_total += moved
        self.reactivated_total += again
        if moved:
            self.topology_version += 1
        self._refresh_layer_state()
        self.apply_masks()
        logger.debug("channel update %d at step %d: fraction %.4f, %d weights moved", self._update_count,
                     self._step_count, fraction, moved)
        if self.check_consistency:
            self._check_ranks()

    # ------------------------------------------------------------------ introspection
    @property
    def step_count(self) -> int:
        """Optimizer steps counted by :meth:`step`."""
        return self._step_count

    @property
    def update_count(self) -> int:
        """Topology updates performed (by :meth:`step` and :meth:`update_topology`)."""
        return self._update_count

    def densities(self) -> dict[str, float]:
        """``name -> active / numel`` of every sparse layer."""
        return {n: c / numel for n, c, numel in zip(self._names, self._counts, self._numels)}

    def sparsity(self) -> float:
        """Overall fraction of inactive weights over the sparse layers."""
        return 1.0 - sum(self._counts) / sum(self._numels)

    def nonzero_params(self) -> int:
        """Parameters that may be non-zero: active sparse weights plus every dense parameter
        (biases, norms, ...) of the model. Mask-based, so a regrown weight still at 0 counts."""
        return sum(self._counts) + self._dense_numel

    def explored_fraction(self) -> float:
        """Share of sparse weights that have ever been active (the ITOP rate of Liu et al. 2021)."""
        return sum(count_bits(e) for e in self._ever_active) / sum(self._numels)

    def stats(self) -> dict[str, Any]:
        """Summary for logs and metrics: per-layer densities, overall sparsity, explored fraction
        (= ITOP rate), counters. All values are plain Python numbers."""
        explored = self.explored_fraction()
        return {
            "densities": self.densities(),
            "sparsity": self.sparsity(),
            "explored_fraction": explored,
            "itop_rate": explored,
            "active_params": sum(self._counts),
            "sparse_params": sum(self._numels),
            "nonzero_params": self.nonzero_params(),
            "steps": self._step_count,
            "updates": self._update_count,
            "topology_version": self.topology_version,
            "pruned_total": self.pruned_total,
            "regrown_total": self.regrown_total,
            "reactivated_total": self.reactivated_total,
            "postponed_steps": self.postponed_steps,
            "update_pending": self._pending is not None,
            **({"structure": self.structure, "channels": self._channels.describe()} if self._channels is not None else {}),
        }

    def memory_bytes(self) -> int:
        """Bytes of per-weight state the engine holds (bool masks + packed ever-active bits)."""
        return sum(m.numel() * m.element_size() for m in self.masks.values()) + sum(
            e.numel() * e.element_size() for e in self._ever_active
        )

    def mask_checksum(self) -> int:
        """Cheap order-sensitive integer summary of all masks (layer counts and the sum of the
        flat indices of active positions); equal masks give equal checksums on every device."""
        modulus = (1 << 61) - 1
        checksum = 0
        for i, name in enumerate(self._names):
            index_sum = int(self.masks[name].reshape(-1).nonzero().sum())
            checksum = (checksum * 1_000_003 + index_sum * 31 + self._counts[i] + i) % modulus
        return checksum

    def _check_ranks(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        checksum = self.mask_checksum()
        device = next(iter(self.masks.values())).device
        both = torch.tensor([checksum, -checksum], dtype=torch.int64, device=device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        if int(both[0]) != checksum or -int(both[1]) != checksum:
            raise RuntimeError(
                f"sparse masks differ across ranks after update {self._update_count} "
                f"(checksum {checksum} on rank {dist.get_rank()})"
            )

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bitwise: masks and ever-active masks (bool copies),
        counters and the generator state. Plain tensors/numbers only (``weights_only`` loadable)."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "masks": {n: self.masks[n].detach().clone() for n in self._names},
            "ever_active": {n: unpack_bits(e, self.masks[n].shape) for n, e in zip(self._names, self._ever_active)},
            "step_count": self._step_count,
            "update_count": self._update_count,
            "topology_version": self.topology_version,
            "pruned_total": self.pruned_total,
            "regrown_total": self.regrown_total,
            "last_step_was_update": self.last_step_was_update,
            "reactivated_total": self.reactivated_total,
            "postponed_steps": self.postponed_steps,
            "pending_update": None if self._pending is None else [self._pending[0], self._pending[1]],
            "generator_state": self._generator.get_state(),
            "config": {
                "sparsity": self.sparsity_target, "distribution": self.distribution, "prune": self.prune,
                "grow": self.grow, "prune_fraction": self.prune_fraction,
                "prune_schedule": self.prune_schedule, "update_interval": self.update_interval,
                "end_step": self.end_step, "seed": self.seed, "sparse_init": self.sparse_init,
                "regrow_pruned": self.regrow_pruned, "include": list(self.include), "exclude": list(self.exclude),
                **({"structure": self.structure} if self._channels is not None else {}),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`. Construct the engine on a fresh model first, then load the
        model, optimizer and engine states (the engine re-applies the loaded masks)."""
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise ValueError("state: not a SparseEngine state_dict")
        masks, ever = state["masks"], state["ever_active"]
        if set(masks) != set(self._names) or set(ever) != set(self._names):
            raise ValueError(
                f"state: mask names do not match this model's sparse layers "
                f"(missing {sorted(set(self._names) - set(masks))[:5]}, unexpected {sorted(set(masks) - set(self._names))[:5]})"
            )
        for name in self._names:
            if tuple(masks[name].shape) != tuple(self.masks[name].shape):
                raise ValueError(f"state: mask {name!r} has shape {tuple(masks[name].shape)}, expected {tuple(self.masks[name].shape)}")
        for i, name in enumerate(self._names):
            self.masks[name].copy_(masks[name].to(torch.bool))
            device = self.masks[name].device
            self._ever_active[i] = pack_bits(ever[name].to(device=device, dtype=torch.bool))
        if self._channels is not None:
            self._channels.load_masks([self.masks[n] for n in self._names])
        self._refresh_layer_state()
        self._step_count = int(state["step_count"])
        self._update_count = int(state["update_count"])
        self.topology_version = int(state["topology_version"])
        self.pruned_total = int(state["pruned_total"])
        self.regrown_total = int(state["regrown_total"])
        self.last_step_was_update = bool(state.get("last_step_was_update", False))
        self.reactivated_total = int(state.get("reactivated_total", 0))
        self.postponed_steps = int(state.get("postponed_steps", 0))
        pending = state.get("pending_update")
        self._pending = None if pending is None else (int(pending[0]), float(pending[1]))
        self._generator.set_state(state["generator_state"].cpu())
        self.apply_masks()

    def __repr__(self) -> str:
        return (
            f"SparseEngine(layers={len(self._names)}, sparsity={self.sparsity():.4f}, "
            f"distribution={self.distribution!r}, prune={self.prune!r}, grow={self.grow!r}, "
            f"prune_fraction={self.prune_fraction}, prune_schedule={self.prune_schedule!r}, "
            f"update_interval={self.update_interval}, end_step={self.end_step}, "
            f"regrow_pruned={self.regrow_pruned}, steps={self._step_count})"
        )
