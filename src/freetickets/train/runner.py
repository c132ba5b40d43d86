"""The training loop shared by every method.

A run is a list of *jobs* (:class:`~freetickets.methods.base.Job`) that the method's recipe
(:mod:`freetickets.methods`) plans: one per member for dense, deep, DST and static runs; a single
job that yields M tickets for EDST; a dense parent job plus a fine-tuning job per member for PF.
Each job follows an epoch plan (:mod:`freetickets.epoch_plans`). The loop holds the
mechanics only; what differs between methods is asked of the recipe. The loop checkpoints
atomically after every epoch (and optionally every N steps), so a run killed anywhere resumes
exactly: data order and augmentation are functions of (seed, epoch, batch), and every other
source of randomness (torch RNG, the engine's generator) is saved.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from freetickets.errors import NonFiniteError, UserError
from freetickets.methods import EngineSetup, Job, get_recipe
from freetickets.train.checkpoint import load_checkpoint, save_checkpoint
from freetickets.train.config import TrainConfig, check_model, to_yaml, validate
from freetickets.train.distributed import (DistInfo, all_reduce_sum, barrier, broadcast_buffers, cleanup_distributed,
                                           convert_sync_batchnorm, init_distributed, loss_scale, run_on_main)
from freetickets.train.preempt import RunGuard
from freetickets.train.job_state import JobState, new_sums
from freetickets.train.loaders import TrainBatches, evaluate_sharded, split_size, steps_per_epoch
from freetickets.train.rundir import RunDir, load_complete_manifest, mark_chance_tickets, new_manifest
from freetickets.epoch_plans import EpochSpec, warmup_factor
from freetickets.train.trajectories import TrajectoryRecorder

log = logging.getLogger(__name__)

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: cuda was asked for but no CUDA device is available")
    return torch.device(name)


def plan_jobs(cfg: TrainConfig) -> list[Job]:
    """The jobs of a run, as the method's recipe plans them."""
    return get_recipe(cfg.method).jobs(cfg)


def make_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


@dataclass
class RunContext:
    cfg: TrainConfig
    run: RunDir
    device: torch.device
    dist: DistInfo
    data: Any
    layer_flops: Any
    progress: bool
    callback: Callable[[dict], None] | None = None
    model_factory: Callable[[], nn.Module] | None = None
    train_layer_flops: Any = None  # per-sample forward FLOPs the training meter uses (None: layer_flops)
    form_inference_flops: float | None = None  # a model form's measured inference FLOPs per sample
    state: dict = field(default_factory=dict)  # completed tickets, totals


class Trainer:
    """Runs the jobs of one run directory; see the module docstring."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = False, callback: Callable[[dict], None] | None = None):
        self.cfg = validate(cfg)
        self.run = RunDir(out_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.callback = callback
        self.guard = RunGuard(self.run.root)  # the run directory's lock and the preemption signals
        # Everything that can be checked without data is checked now, before any directory is
        # touched or data generated: the device, the model (built on the meta device for the data
        # set's shape) and the runs a recipe starts from (PF's parents).
        resolve_device(self.cfg.device)
        check_model(self.cfg)
        get_recipe(self.cfg.method).check_sources(self.cfg, load_complete_manifest)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> RunContext:
        from freetickets.data import load_data
        from freetickets.flops import LayerFlops, dense_layer_flops
        from freetickets.models import create_model

        cfg = self.cfg
        device = resolve_device(cfg.device)
        dist_info = init_distributed(device, cfg.dist_backend)
        if dist_info.enabled and device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
        data = load_data(cfg.data, cfg.data_dir, num_samples=cfg.num_samples, seed=0, device=device)
        if "num_classes" in cfg.model_kwargs and cfg.model_kwargs["num_classes"] != data.num_classes:
            raise UserError(f"model_kwargs: num_classes {cfg.model_kwargs['num_classes']!r} does not match the "
                            f"{data.num_classes} classes of {cfg.data}")
        # Only after the data loaded (a bad data directory leaves no half-made run directory), and
        # only rank 0 touches the run directory; its one-line error is raised on every rank.
        run_on_main(lambda: (self.guard.lock(), self.run.prepare(resume=self.resume, overwrite=self.overwrite)), dist_info)
        model_kwargs = {k: v for k, v in cfg.model_kwargs.items() if k != "num_classes"}
        recipe = get_recipe(cfg.method)
        registry_model = lambda: create_model(cfg.model, num_classes=data.num_classes,
                                              input_shape=tuple(data.input_shape), **model_kwargs)
        factory = lambda: recipe.build_model(registry_model(), cfg)  # the network the method trains
        with torch.random.fork_rng(devices=[]):
            probe = registry_model()
            layer_flops = dense_layer_flops(probe, tuple(data.input_shape))  # the dense reference
            form_cost = recipe.form_flops(recipe.build_model(probe, cfg), tuple(data.input_shape), cfg)
        del probe
        ctx = RunContext(cfg, self.run, device, dist_info, data, layer_flops, self.progress and dist_info.is_main,
                         self.callback, factory)
        if form_cost is not None:  # one network holding M members: its own measured costs
            ctx.train_layer_flops = LayerFlops(per_layer={}, other=form_cost[0])
            ctx.form_inference_flops = form_cost[1]
        ctx.state["source_manifest"] = get_recipe(cfg.method).check_sources(cfg, load_complete_manifest)
        return ctx

    # ------------------------------------------------------------------ main
    def fit(self) -> dict[str, Any]:
        """Train (or resume) the whole run; return the final manifest."""
        with self.guard:  # one writer per run directory; SIGTERM/SIGUSR1 stop with a checkpoint
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        ctx = self._setup()
        cfg, run = self.cfg, self.run
        ckpt = None
        if self.resume:
            ckpt = load_checkpoint(self.run, cfg)
        if ckpt is None:
            manifest = new_manifest(cfg.to_dict(), num_classes=ctx.data.num_classes,
                                    input_shape=tuple(ctx.data.input_shape),
                                    normalization=ctx.data.normalization)
            ctx.state = {"job_index": 0, "tickets": [], "train_flops_total": 0.0, "parents": {},
                         "source_manifest": ctx.state.get("source_manifest")}
            if ctx.dist.is_main:
                run.write_config(to_yaml(cfg))
                run.write_manifest(manifest)
                run.truncate_metrics(0)  # a resumed run that had no checkpoint yet starts over
        else:
            manifest = run.read_manifest()
            if manifest.get("status") == "complete":
                log.info("run %s is already complete", run.root)
                return manifest
            pf = ctx.state.get("source_manifest")
            ctx.state = ckpt["run_state"]
            ctx.state["source_manifest"] = pf
            if ctx.dist.is_main and ctx.state.get("metrics_rows") is not None:
                # drop the rows of epochs after the checkpoint: they are trained (and logged) again
                run.truncate_metrics(ctx.state["metrics_rows"])
        jobs = plan_jobs(cfg)
        for index, job in enumerate(jobs):
            if index < ctx.state["job_index"]:
                continue
            job_ckpt = ckpt["job_state"] if (ckpt is not None and ckpt["run_state"]["job_index"] == index
                                            and ckpt.get("job_state") is not None) else None
            self._run_job(ctx, job, index, job_ckpt)
            ckpt = None
            ctx.state["job_index"] = index + 1
            self._save_checkpoint(ctx, None)
            if ctx.dist.is_main:
                manifest = self._manifest_update(ctx, manifest, complete=False)
        manifest = self._manifest_update(ctx, manifest, complete=True)
        cleanup_distributed(ctx.dist)  # every rank done; drains collectives if it owns the group
        return manifest

    # ------------------------------------------------------------------ manifest
    def _manifest_update(self, ctx: RunContext, manifest: dict, *, complete: bool) -> dict:
        from freetickets.flops import forward_flops

        cfg = self.cfg
        tickets = sorted(ctx.state["tickets"], key=lambda t: t["member"])
        lf = ctx.layer_flops
        n_train = split_size(ctx.data.train)
        ref_epochs = cfg.reference_epochs or cfg.epochs
        dense_fwd = float(lf.total)
        manifest["tickets"] = tickets
        per_ticket = get_recipe(cfg.method).members_per_ticket(cfg)
        manifest["members"] = len(tickets) * per_ticket if complete else manifest["members"]
        manifest["flops"] = {
            "train_total": ctx.state["train_flops_total"],
            "dense_train_reference": 3.0 * dense_fwd * n_train * ref_epochs if n_train else None,
            "dense_reference_epochs": ref_epochs,
            "inference_per_sample": (len(tickets) * ctx.form_inference_flops if ctx.form_inference_flops is not None
                                     else sum(forward_flops(lf, t.get("densities") or {}) for t in tickets)),
            "dense_inference_per_sample": dense_fwd,
        }
        if mark_chance_tickets(manifest, split_size(ctx.data.val)) and complete:
            log.warning("%s: ticket(s) %s have validation accuracy at chance level (<= %.4f): they predict no "
                        "better than a guess", self.run.root, manifest["chance_level"]["tickets"],
                        manifest["chance_level"]["threshold"])
        manifest["status"] = "complete" if complete else "running"
        if ctx.dist.is_main:
            self.run.write_manifest(manifest)
        return manifest

    # ------------------------------------------------------------------ checkpoint
    def _save_checkpoint(self, ctx: RunContext, job_state: dict | None) -> None:
        if ctx.dist.is_main:
            save_checkpoint(self.run, self.cfg, ctx.state, job_state)

    # ------------------------------------------------------------------ one job
    def _build(self, ctx: RunContext, job: Job):
        cfg = self.cfg
        torch.manual_seed(job.seed)
        model = ctx.model_factory().to(ctx.device)
        if cfg.sync_batchnorm:
            model = convert_sync_batchnorm(model, ctx.device, ctx.dist)
        if cfg.channels_last and ctx.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg, model, job.plan[0].lr)
        setup = EngineSetup(cfg, job, model, optimizer, self._steps_per_epoch(ctx) * len(job.plan),
                            lambda m: self._load_parent(ctx, job, m), cfg.check_consistency and ctx.dist.enabled,
                            tuple(ctx.data.input_shape))
        engine = get_recipe(cfg.method).make_engine(setup)
        train_model = model
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if cfg.compile:
            train_model = torch.compile(train_model)
        return model, train_model, optimizer, engine

    def _load_parent(self, ctx: RunContext, job: Job, model: nn.Module) -> None:
        from freetickets.ensembles.tickets import load_ticket, ticket_to_model

        if self.cfg.from_run is not None:
            m = ctx.state["source_manifest"]
            path = Path(self.cfg.from_run) / m["tickets"][job.member]["file"]
        else:
            path = self.run.parent(job.member)
            barrier(ctx.dist)  # rank 0 wrote the parent; other ranks read it only after that
        ticket_to_model(load_ticket(path), model)

    def _steps_per_epoch(self, ctx: RunContext) -> int:
        return steps_per_epoch(ctx.data, self.cfg.batch_size)

    def _autocast(self, ctx: RunContext):
        if self.cfg.precision == "bf16":
            return lambda: torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)
        return None

    def _run_job(self, ctx: RunContext, job: Job, job_index: int, job_ckpt: dict | None) -> None:
        """Train one job from its start, or from ``job_ckpt`` (a :meth:`JobState.snapshot`)."""
        from freetickets.flops import TrainFlopsMeter

        recipe = get_recipe(self.cfg.method)
        st = JobState(*self._build(ctx, job), flops=TrainFlopsMeter(ctx.train_layer_flops or ctx.layer_flops))
        if job_ckpt is not None:
            st.restore(job_ckpt, ctx.dist, ctx.device)
        st.read_densities()
        autocast = self._autocast(ctx)
        trajectory = TrajectoryRecorder.for_job(ctx, job, job_index, autocast)  # probe probs per epoch
        scores = lambda xb: recipe.validation_logits(st.model, xb)  # (B, C) ranking validation and probe rows
        start_epoch = st.epoch
        for spec in job.plan[start_epoch:]:
            t0 = time.time()
            self._train_epoch(ctx, job, st, spec, st.batch if spec.epoch == start_epoch else 0, autocast)
            self._end_epoch(ctx, job, job_index, st, spec, autocast, scores, trajectory, t0)
        self._finish_job(ctx, job, st)

    def _train_epoch(self, ctx: RunContext, job: Job, st: JobState, spec: EpochSpec, first_batch: int,
                     autocast) -> None:
        """The steps of epoch ``spec`` from batch ``first_batch`` on, with step checkpoints and stops."""
        cfg, run = self.cfg, self.run
        recipe = get_recipe(cfg.method)
        warmup_steps = cfg.warmup_epochs * self._steps_per_epoch(ctx) if job.warmup else 0
        # channel structure regrows at random: its updates need no dense gradient (sparse/channels.py)
        grad_growth = st.engine is not None and cfg.grow == "gradient" and cfg.structure != "channel"
        st.model.train()
        it = TrainBatches(ctx.data, cfg.batch_size, seed=job.seed, epoch=spec.epoch, start_batch=first_batch,
                          info=ctx.dist, device=ctx.device, num_workers=cfg.num_workers)
        pbar = None
        if ctx.progress:
            from tqdm import tqdm

            pbar = tqdm(total=len(it), initial=first_batch, leave=False, desc=self._desc(job, spec), unit="batch",
                        dynamic_ncols=True)
        last = first_batch + len(it)  # (len(it) counts the batches left)
        for b, (x, y, global_batch) in enumerate(it, start=first_batch):
            if global_batch < ctx.dist.world_size:
                continue  # a final batch too small to give every rank a sample (all ranks skip it)
            lr = spec.lr * warmup_factor(st.global_step, warmup_steps)
            for group in st.optimizer.param_groups:
                group["lr"] = lr
            if cfg.channels_last and x.dim() == 4 and ctx.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            batch_size = int(y.shape[0])  # samples of the data batch (DDP weights, FLOPs, sums)
            inputs, targets = recipe.training_batch(cfg, x, y, job, st.global_step)
            with autocast() if autocast else contextlib.nullcontext():
                logits, targets = recipe.training_logits(st.train_model(inputs), targets)
            loss = recipe.training_loss(logits, targets, cfg)
            loss_value = float(loss.detach())
            if ctx.dist.enabled:  # DDP averages over ranks: weight slices by size (exact global mean)
                loss = loss * loss_scale(batch_size, global_batch, ctx.dist)
            if not math.isfinite(loss_value):
                raise NonFiniteError(
                    f"non-finite loss ({loss_value}) at epoch {spec.number}, step {st.global_step}, member "
                    f"{job.member} ({job.kind}); the last good checkpoint is kept in {run.checkpoint}")
            st.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(st.model.parameters(), cfg.grad_clip)
            st.optimizer.step()
            dense_grad = False
            if st.engine is not None:
                st.engine.step()
                dense_grad = grad_growth and st.engine.last_step_was_update
                st.refresh_densities()
            st.flops.step(global_batch, st.densities, dense_grad_step=dense_grad)
            st.global_step += 1
            st.sums["loss"] += loss_value * targets.shape[0]
            st.sums["correct"] += int((logits.detach().argmax(1) == targets).sum())
            st.sums["seen"] += int(targets.shape[0])
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{st.sums['loss'] / max(st.sums['seen'], 1):.3f}", lr=f"{lr:.3g}",
                                 refresh=False)
            # Mid-epoch checkpoints skip the epoch's last batch, whose state the end-of-epoch
            # checkpoint saves. This also keeps exact resume: the EDST jump after the epoch grows
            # by the last batch's gradient, which is not checkpointed, so it must follow that batch
            # in the same process. (A stop asked for at the last batch waits for that checkpoint.)
            if b + 1 < last:
                stop = self.guard.should_stop(ctx.dist, ctx.device)  # a collective under DDP: once per step
                if stop or (cfg.checkpoint_every_steps and st.global_step % cfg.checkpoint_every_steps == 0):
                    self._checkpoint_job(ctx, job, st, spec, b + 1)
                if stop:
                    self.guard.stop(ctx.dist, f"after step {st.global_step} (epoch {spec.number}, batch {b + 1} of "
                                    f"{last}, {self._desc(job, spec)})", run.checkpoint)
        if pbar is not None:
            pbar.close()

    def _end_epoch(self, ctx: RunContext, job: Job, job_index: int, st: JobState, spec: EpochSpec, autocast,
                   scores, trajectory: TrajectoryRecorder, t0: float) -> None:
        """Validation, ticket selection, the metrics row, phase-end actions (EDST's jump), the
        end-of-epoch checkpoint and a requested stop."""
        from freetickets.ensembles.tickets import save_ticket

        cfg, data, run = self.cfg, ctx.data, self.run
        self._check_finite(st.model, job, spec, st.global_step, "at the end of the epoch")
        # Every rank continues with (and rank 0 saves) rank 0's BatchNorm statistics; validation is
        # sharded and all-reduced, so every rank takes the same selection/jump decisions.
        broadcast_buffers(st.model, ctx.dist)
        val_loss, val_acc = evaluate_sharded(st.model, data.val, cfg.eval_batch_size, data.normalize, ctx.device,
                                             ctx.dist, autocast, cfg.num_workers,
                                             cfg.channels_last and ctx.device.type == "cuda", forward=scores)
        epoch_sums = st.sums
        if ctx.dist.enabled:
            totals = all_reduce_sum(torch.tensor([st.sums["loss"], st.sums["correct"], st.sums["seen"]],
                                                 dtype=torch.float64, device=ctx.device), ctx.dist).tolist()
            epoch_sums = {"loss": totals[0], "correct": totals[1], "seen": totals[2]}
        improved = spec.takes_ticket and (st.best is None or job.select == "last"
                                          or val_acc > st.best["val_accuracy"])
        if improved:
            st.best = {"val_accuracy": val_acc, "val_loss": val_loss, "epoch": spec.number}
            if ctx.dist.is_main:
                save_ticket(self._ticket_path(job, spec), st.model, st.engine.masks if st.engine is not None else {},
                            {"member": self._ticket_index(job, spec), "seed": job.seed, "phase": spec.phase,
                             "phase_index": spec.phase_index, "epoch": spec.number, "val_accuracy": val_acc})
        stats = st.engine.stats() if st.engine is not None else None
        row = {"job": job_index, "kind": job.kind, "member": job.member, "phase": spec.phase,
               "phase_index": spec.phase_index, "epoch": spec.number, "lr": spec.lr,
               "train_loss": epoch_sums["loss"] / max(epoch_sums["seen"], 1),
               "train_accuracy": epoch_sums["correct"] / max(epoch_sums["seen"], 1),
               "val_loss": val_loss, "val_accuracy": val_acc, "best": improved,
               "sparsity": stats["sparsity"] if stats else 0.0,
               "explored_fraction": stats.get("explored_fraction") if stats else None,
               "train_flops": st.flops.total, "step": st.global_step, "time_s": round(time.time() - t0, 3)}
        st.sums = new_sums()
        if ctx.dist.is_main:
            run.log_metrics(row)
            trajectory.record(st.model, spec, scores)
        # rows written so far: a resume truncates metrics.jsonl to the checkpoint's count
        ctx.state["metrics_rows"] = ctx.state.get("metrics_rows", 0) + 1
        log.info("%s epoch %d/%d lr %.4g train loss %.4f acc %.4f | val loss %.4f acc %.4f%s",
                 self._desc(job, spec), spec.number, len(job.plan), spec.lr, row["train_loss"],
                 row["train_accuracy"], val_loss, val_acc, " *" if improved else "")
        if ctx.callback is not None:
            ctx.callback(row)
        if spec.phase_end and job.tickets == "phase" and spec.takes_ticket:
            self._record_ticket(ctx, job, spec.phase_index, st.best, st.flops.total, run.ticket(spec.phase_index),
                                spec.phase)
            st.best = None
            get_recipe(cfg.method).end_of_phase(cfg, job, spec, st.engine)
            st.refresh_densities()
        if spec.epoch + 1 < len(job.plan):
            self._checkpoint_job(ctx, job, st, spec, 0, next_epoch=True)
            if self.guard.should_stop(ctx.dist, ctx.device):
                self.guard.stop(ctx.dist, f"at the end of epoch {spec.number} (step {st.global_step}, "
                                f"{self._desc(job, spec)})", run.checkpoint)

    def _checkpoint_job(self, ctx: RunContext, job: Job, st: JobState, spec: EpochSpec, batch: int,
                        next_epoch: bool = False) -> None:
        """Checkpoint the job to resume at ``batch`` of this epoch (or of the next one), after
        checking that no weight diverged (a NaN model never overwrites the last good checkpoint)."""
        self._check_finite(st.model, job, spec, st.global_step, "before a checkpoint")
        self._save_checkpoint(ctx, st.snapshot(spec.epoch + 1 if next_epoch else spec.epoch, batch, ctx.dist,
                                               ctx.device))

    def _finish_job(self, ctx: RunContext, job: Job, st: JobState) -> None:
        """A best-of-job ticket's manifest entry (or a PF parent's record) and the run's FLOP total."""
        if job.tickets == "best":
            if job.kind == "parent":
                ctx.state["parents"][str(job.member)] = {"train_flops": st.flops.total, **(st.best or {})}
            else:
                self._record_ticket(ctx, job, job.member, st.best, st.flops.total + self._parent_flops(ctx, job),
                                    self._ticket_path(job, job.plan[-1]), job.plan[0].phase)
        ctx.state["train_flops_total"] += st.flops.total
        if job.kind == "finetune" and self.cfg.from_run is not None:
            ctx.state["train_flops_total"] += self._parent_flops(ctx, job)

    def _ticket_index(self, job: Job, spec: EpochSpec) -> int:
        return spec.phase_index if job.tickets == "phase" else job.member

    def _ticket_path(self, job: Job, spec: EpochSpec) -> Path:
        return self.run.parent(job.member) if job.kind == "parent" else self.run.ticket(self._ticket_index(job, spec))

    def _check_finite(self, model: nn.Module, job: Job, spec: EpochSpec, step: int, when: str) -> None:
        """Raise :class:`NonFiniteError` (naming epoch, step and member) if a parameter or buffer is
        NaN/Inf, so a diverged model never overwrites the last good checkpoint or a ticket."""
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise NonFiniteError(
                    f"non-finite weight '{name}' {when} at epoch {spec.number}, step {step}, member {job.member}"
                    f" ({job.kind}); the last good checkpoint is kept in {self.run.checkpoint}")

    def _parent_flops(self, ctx: RunContext, job: Job) -> float:
        if job.kind != "finetune":
            return 0.0
        if self.cfg.from_run is None:
            return float(ctx.state["parents"].get(str(job.member), {}).get("train_flops", 0.0))
        m = ctx.state["source_manifest"]
        return float(m["tickets"][job.member].get("train_flops", 0.0))

    def _record_ticket(self, ctx: RunContext, job: Job, index: int, best: dict | None, train_flops: float,
                       path: Path, phase: str) -> None:
        from freetickets.ensembles.tickets import load_ticket

        if best is None:
            raise RuntimeError("no validation result recorded for a ticket")
        # Only rank 0 wrote the ticket and only rank 0 writes the manifest built from this entry.
        masks = load_ticket(path).masks if ctx.dist.is_main else {}
        # Exact active/numel (a float32 mean is off in the 8th digit, and FLOPs use these).
        densities = {name: int(m.sum()) / m.numel() for name, m in masks.items()}
        total = sum(m.numel() for m in masks.values())
        active = sum(int(m.sum()) for m in masks.values())
        entry = {"file": str(path.relative_to(self.run.root)), "member": index, "seed": job.seed,
                 "phase": phase,
                 "phase_index": index if job.tickets == "phase" else 0,
                 "epoch": best["epoch"], "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"],
                 "sparsity": (1.0 - active / total) if total else 0.0, "train_flops": train_flops,
                 "densities": densities}
        ctx.state["tickets"] = [t for t in ctx.state["tickets"] if t["member"] != index] + [entry]

    @staticmethod
    def _desc(job: Job, spec: EpochSpec) -> str:
        if spec.phase == "refine":
            return f"refine {spec.phase_index + 1}"
        if job.kind == "parent":
            return f"parent {job.member}"
        return f"{spec.phase} {job.member}" if spec.phase != "train" else f"member {job.member}"


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = False, callback: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train a run directory for ``cfg``; return its manifest. See :class:`Trainer`."""
    return Trainer(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, callback=callback).fit()
