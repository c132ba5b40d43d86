"""Ensemble predictor over trained members (tickets).

``Ensemble`` evaluates M member networks on the same inputs and combines them the way the
paper does: the ensemble probability is the mean of the members' softmax probabilities.
Ensemble tensors are ``(M, B, C)``, members first.

Three execution paths give the same numbers (up to float rounding, checked once):

* **fused** (default when possible): the M members become one channel-stacked network whose
  activations are ``(B, M * C, ...)`` with member-major channel blocks; convolutions become
  grouped convolutions, BatchNorm one BatchNorm over ``M * C`` channels, Linear a
  block-diagonal batched matmul (details in :class:`FusedMembers`). Supports models built from
  Conv1d/2d/3d, BatchNorm1d/2d/3d, Linear and parameter-free modules.
* **vmap**: the members' parameters and buffers are stacked along a leading member dimension
  and one network runs under ``torch.func.vmap(functional_call)`` over that dimension. Works
  for any module vmap supports, but its batching rules move the member dimension in and out of
  the channels around every op; on CPU that made it slower than the sequential path
  (see ``benchmarks/ensemble.py``), so it is the second choice.
* **sequential**: the members run one after another. Used when ``batched=False``, when the
  members do not share one architecture (type, names, shapes, dtypes), or when the batched
  paths fail or disagree with the sequential one on their first use; the failure is logged
  once and the ensemble falls back for good.

In the fused and vmap paths the member modules' parameters and buffers are re-pointed to views
of the joined tensors, so there is one copy of the weights and in-place changes to a member
(e.g. ``load_state_dict``) are seen by the batched computation. Replacing a member's tensors
(``member.to(...)``) breaks that link: move the ensemble with :meth:`Ensemble.to`.

The forward methods take ``x`` already normalised the way the members were trained.
:meth:`Ensemble.preprocess` maps inputs in the data set's raw form (``uint8`` images, CHW or
HWC; MNIST-1D as ``(N, 40)``) to that space with the run's recorded normalisation
(``freetickets predict`` does the same for files; see :mod:`freetickets.ensembles.inputs`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.ensembles.fused import FusedMembers
from freetickets.ensembles.layouts import class_softmax
from freetickets.ensembles.tickets import load_ticket, ticket_to_model
from freetickets.utils.io import read_json

__all__ = ["Ensemble", "FusedMembers", "entropy", "uncertainty_from_probs"]

logger = logging.getLogger(__name__)

Batched = bool | Literal["auto"]

# Tolerance of the one-time check that the batched path reproduces the sequential one, relative
# to the largest logit magnitude (at least 1). Grouped and separate convolutions sum in different
# orders; on CUDA, convolutions may also run in TF32 (PyTorch's default for cuDNN) or reduced
# precision, whose rounding (~1e-3 relative) differs between the two forms: a trained cnn1d
# differed by 1.7e-3 in its logits on an H200. A wrong batched computation (mixed channels,
# shared statistics) differs by O(1).
_CHECK_TOL_CPU = 1e-4
_CHECK_TOL_ACCELERATOR = 2e-2


def _outputs_agree(got: torch.Tensor, ref: torch.Tensor) -> tuple[bool, float]:
    """Whether batched logits ``got`` reproduce sequential ``ref``; also the max abs difference."""
    if got.shape != ref.shape:
        return False, float("nan")
    diff = (got.float() - ref.float()).abs().max().item()
    scale = max(1.0, ref.float().abs().max().item())
    tol = _CHECK_TOL_CPU if ref.device.type == "cpu" else _CHECK_TOL_ACCELERATOR
    return diff <= tol * scale, diff


def _is_form(model: nn.Module) -> bool:
    """Whether ``model`` is one network holding several members (it has ``member_logits``)."""
    return callable(getattr(model, "member_logits", None)) and hasattr(model, "num_members")


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats of probability vectors along ``dim`` (``0 log 0 = 0``)."""
    return -torch.special.xlogy(probs, probs).sum(dim)


def _create_model(name: str, **kwargs: Any) -> nn.Module:
    """Indirection so the model registry is imported only when a run directory is loaded."""
    from freetickets.models.registry import create_model

    return create_model(name, **kwargs)


class Ensemble:
    """M member networks evaluated together.

    Args:
        models: the members (``nn.Module`` mapping ``(B, *input_shape)`` to logits ``(B, C)``),
            or a single *model form* holding all M members (MIMO, BatchEnsemble, MC dropout of
            :mod:`freetickets.models.efficient`: ``num_members`` and ``member_logits(x) -> (M, B, C)``).
            They are put in eval mode (BatchNorm uses each member's own running statistics;
            dropout is off) and owned by the ensemble from then on.
        batched: ``"auto"`` (sequential: ``benchmarks/ensemble.py`` measured it faster than
            both batched paths on the CPU, 2.8-3.1x one dense model against 4.7-6.1x, and on an
            H200, 3.0x against 3.2-5.0x fused and 4.2-6.8x vmap; see docs/benchmarks.md),
            ``True`` (the fused path, else the vmap path when the members share an architecture
            and it works, on any device; a warning when they must fall back to sequential) or
            ``False`` (always sequential).

    Attributes:
        members: number of members M.
        masks: list of M mask dicts (parameter name -> bool tensor); empty dicts for members
            built from plain models.
        batched: whether a batched path is (still) in use; ``path`` names it.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        batched: Batched = "auto",
        masks: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> None:
        models = list(models)
        if not models:
            raise ValueError("models: need at least one member, got an empty list")
        if batched not in (True, False, "auto"):
            raise ValueError(f"batched: expected True, False or 'auto', got {batched!r}")
        forms = [m for m in models if _is_form(m)]
        if forms and len(models) != 1:
            raise ValueError("models: a model form (MIMO, BatchEnsemble, MC dropout) holds all members; pass it alone")
        # A form may carry one mask dict per member it holds (packed slim tickets).
        if masks is not None and len(masks) != len(models) and not (forms and len(masks) == forms[0].num_members):
            raise ValueError(f"masks: expected {len(models)} mask dicts, got {len(masks)}")
        #: the one network holding every member (MIMO, BatchEnsemble, MC dropout), else None
        self.form: nn.Module | None = forms[0] if forms else None
        if self.form is not None:
            batched = False  # the form computes its members itself
        self.models: list[nn.Module] = models
        self.masks: list[dict[str, torch.Tensor]] = [dict(m) for m in masks] if masks else [{} for _ in models]
        self._requested: Batched = batched
        self._stacked: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self._fused: FusedMembers | None = None
        self._checked = False  # batched path verified against the sequential one
        for m in self.models:
            m.eval()
        # The parameter whose device and dtype inputs take (looked up once: walking a deep
        # module tree costs microseconds per call; .to() keeps Parameter objects, moving data).
        self._reference: torch.Tensor | None = next(iter(self.models[0].parameters()), None)
        self._path = "sequential"
        if self._wants_batched():
            self._build("fused")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        run_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        batched: Batched = "auto",
        partial: bool = False,
        compact: bool | Literal["auto"] = False,
    ) -> "Ensemble":
        """Build the ensemble of a completed run directory.

        Reads ``RUN_DIR/manifest.json`` (``status`` must be ``"complete"``), creates each member
        with ``create_model(manifest["model"], num_classes=..., input_shape=..., **model_kwargs)``
        and loads its ticket (``manifest["tickets"][k]["file"]``, relative to ``run_dir``).
        The manifest is kept as ``ensemble.manifest``. A run that a live ``freetickets train``
        still writes (its lock is held) is refused too; ``partial=True`` loads the tickets the
        manifest lists so far instead (of a running or interrupted run).

        ``compact``: ``True`` exports every member as its slim network (removed channels cut
        out physically, :mod:`freetickets.ensembles.slim`) and runs them as one packed forward
        (:class:`~freetickets.ensembles.packed.PackedMembers`, the ensemble's ``form``; the
        ticket masks stay in ``masks``); ``"auto"`` does so for runs whose manifest says
        ``structure: "channel"``; ``False`` (default) loads the masked members as they were
        trained. Both forms compute the same probabilities up to fp32 rounding.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run directory not found")
        manifest = read_json(run_dir / "manifest.json")
        if not isinstance(manifest, dict):
            raise UserError(f"{run_dir / 'manifest.json'}: expected a JSON object")
        from freetickets.train.rundir import check_readable
        from freetickets.train.runlock import holder

        if partial or manifest.get("status") == "complete" or holder(run_dir) is not None:
            check_readable(run_dir, manifest, partial=partial)  # a live writer is reported by name
        else:
            raise UserError(
                f"{run_dir}: run directory is not a completed run "
                f"(status {manifest.get('status')!r}, expected 'complete')"
            )
        missing = [k for k in ("model", "num_classes", "input_shape", "tickets") if k not in manifest]
        if missing:
            raise UserError(f"{run_dir / 'manifest.json'}: missing keys {missing}")
        tickets = manifest["tickets"]
        if not isinstance(tickets, list) or not tickets:
            raise UserError(f"{run_dir / 'manifest.json'}: 'tickets' must be a non-empty list")
        kwargs = dict(manifest.get("model_kwargs") or {})
        models, masks = [], []
        for entry in tickets:
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise UserError(f"{run_dir / 'manifest.json'}: each ticket needs a 'file' string")
            ticket_path = run_dir / entry["file"]
            ticket = load_ticket(ticket_path)
            model = _create_model(
                manifest["model"],
                num_classes=int(manifest["num_classes"]),
                input_shape=tuple(int(s) for s in manifest["input_shape"]),
                **kwargs,
            )
            if manifest.get("model_form"):  # MIMO / BatchEnsemble / MC dropout: one network, M members
                from freetickets.models.efficient import build_form

                model = build_form(manifest["model_form"], model)
            try:
                ticket_to_model(ticket, model)
            except UserError as exc:
                raise UserError(f"{ticket_path}: {exc}") from None
            models.append(model.to(device))
            masks.append({k: v.to(device) for k, v in ticket.masks.items()})
        if compact == "auto":
            compact = manifest.get("structure") == "channel"
        if compact:
            from freetickets.ensembles.slim import pack_tickets

            models = [pack_tickets(models, masks, manifest)]
        ens = cls(models, batched=batched, masks=masks)
        ens.manifest = manifest
        return ens

    manifest: dict[str, Any] | None = None

    @property
    def members(self) -> int:
        """Number of members M (a model form's ``num_members``)."""
        return int(self.form.num_members) if self.form is not None else len(self.models)

    @property
    def batched(self) -> bool:
        """True while a batched path (fused or vmap) is in use."""
        return self._path != "sequential"

    @property
    def path(self) -> str:
        """The execution path in use: ``"fused"``, ``"vmap"`` or ``"sequential"``."""
        return self._path

    @property
    def device(self) -> torch.device:
        for t in self.models[0].parameters():
            return t.device
        for t in self.models[0].buffers():
            return t.device
        return torch.device("cpu")

    def _wants_batched(self) -> bool:
        if self._requested is False or len(self.models) < 2:
            return False
        return self._requested is True

    def to(self, device: str | torch.device) -> "Ensemble":
        """Move every member (and masks) to ``device``; returns ``self``."""
        for m in self.models:
            m.to(device)
        self._reference = next(iter(self.models[0].parameters()), None)  # in case .to() swapped it
        self.masks = [{k: v.to(device) for k, v in d.items()} for d in self.masks]
        if self._path != "sequential":
            self._build(self._path)  # module.to() re-created the tensors; join them again
        elif self._wants_batched():
            self._build("fused")
        if self._path != "sequential" and not self._wants_batched():
            self._path, self._stacked, self._fused = "sequential", None, None
        return self

    # ------------------------------------------------------------------ batched path
    def _stack(self) -> str | None:
        """Stack member parameters/buffers (member dim first); re-point members to views.

        Returns None on success, else the reason batching is impossible.
        """
        first = self.models[0]
        ref = {n: (tuple(t.shape), t.dtype, t.device) for n, t in first.state_dict(keep_vars=True).items()}
        for k, m in enumerate(self.models[1:], start=1):
            if type(m) is not type(first):
                return f"member {k} is a {type(m).__name__}, member 0 a {type(first).__name__}"
            other = {n: (tuple(t.shape), t.dtype, t.device) for n, t in m.state_dict(keep_vars=True).items()}
            if other != ref:
                return f"member {k} has different parameter/buffer names, shapes, dtypes or devices"
        try:
            params = {
                n: torch.stack([dict(m.named_parameters())[n].detach() for m in self.models])
                for n, _ in first.named_parameters()
            }
            buffers = {
                n: torch.stack([dict(m.named_buffers())[n] for m in self.models])
                for n, _ in first.named_buffers()
            }
        except Exception as exc:  # pragma: no cover - defensive
            return f"cannot stack member state ({type(exc).__name__}: {exc})"
        # One copy of the weights: members now view into the stacked tensors.
        for k, m in enumerate(self.models):
            for n, p in m.named_parameters():
                p.data = params[n][k]
            for n, _ in list(m.named_buffers()):
                owner, _, leaf = n.rpartition(".")
                m.get_submodule(owner)._buffers[leaf] = buffers[n][k]
        self._stacked = (params, buffers)
        return None

    def _build(self, path: str) -> None:
        """Set up ``path`` ("fused" or "vmap"), falling back along fused -> vmap -> sequential."""
        self._checked = False
        self._fused, self._stacked = None, None
        if path == "fused":
            try:
                self._fused = FusedMembers(self.models)
                self._path = "fused"
                return
            except Exception as exc:
                logger.debug("Ensemble: no fused form (%s: %s); trying vmap", type(exc).__name__, exc)
        why = self._stack()
        if why is None:
            self._path = "vmap"
        else:
            self._fall_back(why)

    def _fall_back(self, why: str) -> None:
        """Leave the current batched path for good: fused -> vmap, vmap -> sequential."""
        if self._path == "fused":
            logger.info("Ensemble: fused path unusable (%s); trying vmap", why)
            self._build("vmap")
            return
        level = logging.WARNING if self._requested is True else logging.INFO
        logger.log(level, "Ensemble: using the sequential path (%s)", why)
        self._path = "sequential"
        self._stacked, self._fused = None, None

    def _batched_logits(self, x: torch.Tensor) -> torch.Tensor:
        assert self._stacked is not None
        params, buffers = self._stacked
        base = self.models[0]

        def one(p: dict, b: dict, inp: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(base, (p, b), (inp,))

        return torch.func.vmap(one, in_dims=(0, 0, None))(params, buffers, x)

    def _sequential_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models])

    # ------------------------------------------------------------------ predictions
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        ref = self._reference
        if ref is not None:
            dtype = ref.dtype if (x.is_floating_point() and ref.is_floating_point()) else x.dtype
            x = x.to(device=ref.device, dtype=dtype)
        return x

    @torch.no_grad()
    def preprocess(self, x: Any, *, normalized: bool = False) -> torch.Tensor:
        """Raw inputs -> float32 ``(N, *input_shape)`` members' inputs on :attr:`device`.

        ``x`` (tensor or numpy array) in the data set's raw form: CIFAR/ImageNet ``uint8`` pixel
        values, CHW or HWC; MNIST-1D ``(N, 1, 40)`` or ``(N, 40)``. The run's recorded
        normalisation is applied (``normalized=True``: only layout and dtype change). Rows
        with NaN/inf are refused (:class:`UserError`, counting them). Needs a loaded run
        (:meth:`load`); then ``ens.predict_proba(ens.preprocess(raw))``.
        """
        from freetickets.ensembles.inputs import prepare_inputs

        if self.manifest is None:
            raise UserError("preprocess: this Ensemble was not loaded from a run (Ensemble.load), so it "
                            "knows no input normalisation")
        return prepare_inputs(x, self.manifest, normalized=normalized, what="preprocess").to(self.device)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, ``(M, B, C)``, for inputs ``x`` of shape ``(B, *input_shape)``.

        ``x`` is moved to the members' device (and floating inputs cast to their dtype).
        """
        x = self._prepare(x)
        for m in self.models:
            if m.training:  # someone called .train() on a member; predictions use eval mode
                m.eval()
        if self.form is not None:
            return self.form.member_logits(x)
        while self._path != "sequential":
            try:
                if self._path == "fused":
                    assert self._fused is not None
                    out = self._fused(x)
                else:
                    out = self._batched_logits(x)
            except Exception as exc:
                self._sequential_logits(x)  # a bad input raises here, and batching stays on
                self._fall_back(f"{self._path} evaluation failed: {type(exc).__name__}: {exc}")
                continue
            if not self._checked:
                # One-time guard against a module that runs batched without error but computes
                # something else (e.g. forward code that mixes channels): compare a few inputs.
                probe = x[: min(4, x.shape[0])]
                seq = self._sequential_logits(probe)
                got = out[:, : probe.shape[0]]
                agree, diff = _outputs_agree(got, seq)
                if not agree:
                    self._fall_back(f"{self._path} output differs from sequential (max {diff:.3g})")
                    continue
                self._checked = True
            return out
        return self._sequential_logits(x)

    @torch.no_grad()
    def member_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of every member, ``(M, B, C)``, members first."""
        return class_softmax(self.member_logits(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble probabilities ``(B, C)``: the mean of the member probabilities (the paper's rule)."""
        return self.member_probs(x).mean(dim=0)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class ``(B,)``: argmax of :meth:`predict_proba`."""
        return self.predict_proba(x).argmax(dim=-1)

    @torch.no_grad()
    def uncertainty(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-input uncertainty, each a ``(B,)`` tensor (natural log, nats).

        * ``"entropy"``: predictive entropy ``H[p̄]`` of the mean probability ``p̄``.
        * ``"mutual_information"``: ``H[p̄] - mean_m H[p_m]`` (the epistemic part; 0 for M = 1;
          clamped at 0 against rounding).
        * ``"disagreement"``: fraction of members whose argmax differs from the ensemble's
          argmax, a multiple of 1/M in ``[0, 1]`` (0 when all members agree with the ensemble; 1
          is possible: every member's top class can differ from the top class of the mean).
        * ``"msp"``: maximum ensemble probability (the OoD score of the evaluation suite).
        """
        probs = self.member_probs(x)
        return uncertainty_from_probs(probs)


def uncertainty_from_probs(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Uncertainty measures (see :meth:`Ensemble.uncertainty`) from member probabilities ``(M, B, C)``."""
    if probs.dim() != 3:
        raise ValueError(f"probs: expected shape (M, B, C), got {tuple(probs.shape)}")
    mean = probs.mean(dim=0)
    h_mean = entropy(mean)
    mean_h = entropy(probs).mean(dim=0)
    pred = mean.argmax(dim=-1)
    member_pred = probs.argmax(dim=-1)  # (M, B)
    return {
        "entropy": h_mean,
        "mutual_information": (h_mean - mean_h).clamp_min(0.0),
        "disagreement": (member_pred != pred.unsqueeze(0)).to(probs.dtype).mean(dim=0),
        "msp": mean.max(dim=-1).values,
    }
