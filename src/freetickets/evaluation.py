"""Evaluate a completed run directory: the JSON object described in docs/evaluation.md.

Glue between :class:`~freetickets.ensembles.ensemble.Ensemble`, the data sets (test, OoD,
corruptions), the pure metric functions and the FLOPs accounting. Probabilities are computed
once per evaluation set as an ``(M, N, C)`` tensor (members first) and every metric is a pure
function of it.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from freetickets.errors import UserError

log = logging.getLogger(__name__)


def member_probs_of(ensemble, x: torch.Tensor, *, batch_size: int = 1024, normalize=None) -> torch.Tensor:
    """Member softmax probabilities ``(M, N, C)`` of inputs ``x`` (``N`` rows), on the CPU."""
    return torch.softmax(member_logits_of(ensemble, x, batch_size=batch_size, normalize=normalize), dim=-1)


@torch.no_grad()
def member_logits_of(ensemble, x: torch.Tensor, *, batch_size: int = 1024, normalize=None) -> torch.Tensor:
    """Member logits ``(M, N, C)`` (float32, on the CPU) of inputs ``x`` (``N`` rows).

    Evaluation keeps the logits, not only the probabilities, because the MaxLogit and energy
    OoD scores read what softmax forgets; the probabilities are ``softmax(logits)``.
    """
    device = ensemble.device
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device)
        if normalize is not None:
            xb = normalize(xb)
        out.append(ensemble.member_logits(xb).float().cpu())
    return torch.cat(out, dim=1)


CALIBRATIONS = ("temperature", "none")


def _validation_xy(data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The validation split's ``(x, y)`` tensors, or None where the data set keeps no tensors."""
    val = getattr(data, "val", None)
    x, y = getattr(val, "x", None), getattr(val, "y", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.shape[0] == 0:
        return None
    return x, y


def _temperature_block(ens, data, probs: torch.Tensor, labels: torch.Tensor, batch_size: int):
    """The ``temperature_scaled`` block: T fitted on the validation split, scored on the test set."""
    from freetickets.metrics.temperature import temperature_scaled_summary

    val = _validation_xy(data)
    if val is None:
        log.warning("evaluate: no validation split in memory for this data set; temperature scaling skipped")
        return None
    val_logits = member_logits_of(ens, val[0], batch_size=batch_size, normalize=data.normalize)
    return temperature_scaled_summary(torch.softmax(val_logits, dim=-1), val[1].cpu(), probs, labels)


def _read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _dense_checkpoint_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``torch.save(state_dict)`` of one dense model of the architecture (fp32)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def cost_block(run_dir: Path, manifest: dict[str, Any], ensemble) -> dict[str, Any]:
    """The ``cost`` object of the evaluation JSON from the manifest's FLOPs totals and the tickets on disk."""
    from freetickets.ensembles.tickets import ticket_nbytes
    from freetickets.models import create_model

    dense = create_model(manifest["model"], num_classes=int(manifest["num_classes"]),
                         input_shape=tuple(manifest["input_shape"]), **(manifest.get("model_kwargs") or {}))
    dense_params = sum(p.numel() for p in dense.parameters())
    nonzero = 0
    packed = _packed_form(ensemble)
    # A compact ensemble holds slim members in one packed form; count the tickets' masks on the
    # architecture they were trained in (the dense model's shapes), as for masked members.
    members = [dense] * len(ensemble.masks) if packed is not None else ensemble.models
    for model, masks in zip(members, ensemble.masks):
        for name, p in model.named_parameters():
            nonzero += int(masks[name].sum()) if name in masks else p.numel()
    flops = manifest.get("flops") or {}
    train = flops.get("train_total")
    ref = flops.get("dense_train_reference")
    inf = flops.get("inference_per_sample")
    dense_inf = flops.get("dense_inference_per_sample")
    ckpt = sum(ticket_nbytes(run_dir / t["file"]) for t in manifest["tickets"])
    dense_bytes = _dense_checkpoint_bytes(dense)
    tickets = manifest["tickets"]
    block = {
        "members": ensemble.members,
        "sparsity": float(sum(t.get("sparsity", 0.0) for t in tickets) / max(len(tickets), 1)),
        "nonzero_params": nonzero,
        "dense_params": dense_params,
        "nonzero_params_vs_dense": nonzero / dense_params,
        "train_flops": train,
        "train_flops_vs_dense": (train / ref) if train is not None and ref else None,
        "inference_flops": inf,
        "inference_flops_vs_dense": (inf / dense_inf) if inf is not None and dense_inf else None,
        "checkpoint_bytes": ckpt,
        "checkpoint_bytes_vs_dense": ckpt / dense_bytes,
    }
    if packed is not None:
        block["compact"] = compact_cost_block(packed, dense, manifest)
    return block


def _packed_form(ensemble):
    """The ensemble's packed slim form (``Ensemble.load(..., compact=True)``), else None."""
    from freetickets.ensembles.packed import PackedMembers

    return ensemble.form if isinstance(ensemble.form, PackedMembers) else None


def compact_cost_block(packed, dense: torch.nn.Module, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``cost.compact`` object: what the slim members cost at inference, measured on them.

    FLOPs with ``FlopCounterMode`` on the slim modules and on one dense model of the architecture
    (one batch-1 forward each, per sample); ``params`` are every slim member's parameters;
    ``bytes`` the fp32 (their dtype) bytes of those parameters (what the packed forward reads)
    and ``state_bytes`` of ``torch.save`` of their state dicts (BatchNorm statistics included).
    """
    from freetickets.ensembles.slim import slim_cost

    shape = tuple(int(s) for s in manifest["input_shape"])
    slim = slim_cost(list(packed.members), shape)
    ref = slim_cost([dense], shape)
    return {
        "path": packed.path,
        "params": slim["params"],
        "params_vs_dense": slim["params"] / ref["params"],
        "inference_flops": slim["inference_flops"],
        "inference_flops_vs_dense": slim["inference_flops"] / ref["inference_flops"] if ref["inference_flops"] else None,
        "bytes": slim["param_bytes"],
        "bytes_vs_dense": slim["param_bytes"] / ref["param_bytes"],
        "state_bytes": slim["state_bytes"],
        "per_member": slim["per_member"],
    }


def evaluate_run(run_dir: str | Path, *, data_dir: str | None = None, ood: Sequence[str] | None = None,
                 corruptions: str | None = "builtin", device: str = "auto", batch_size: int = 1024,
                 return_artifacts: bool = False, partial: bool = False, calibrate: str = "temperature"):
    """Evaluate the tickets of a completed run on the test split, OoD sets and corruptions.

    ``calibrate``: ``"temperature"`` (default) adds ``ensemble.temperature_scaled`` (one
    temperature fitted on the run's validation split, the scaled test NLL, ECE and Brier beside
    the raw ones); ``"none"`` leaves it out.

    Returns the evaluation object of docs/evaluation.md (and, with ``return_artifacts``, a dict with the test ``probs``
    ``(M, N, C)``, ``labels`` and per-OoD-set MSP scores for plots). ``partial``: evaluate the
    tickets a running or interrupted run lists so far (``result["partial"]`` is then True).
    """
    from freetickets.data import corruption_sets, list_ood, load_data, ood_sets
    from freetickets.ensembles.ensemble import Ensemble
    from freetickets.metrics import corruption_summary, ood_entry, ood_scores, summarize
    from freetickets.metrics.calibration import ece
    from freetickets.metrics.classification import accuracy, ensemble_nll
    from freetickets.metrics.diversity import mask_hamming_matrix, offdiagonal_mean
    from freetickets.metrics.ensemble_size import ensemble_size_curve
    from freetickets.train.rundir import load_complete_manifest
    from freetickets.train.runner import resolve_device
    from freetickets.train.trajectories import load_trajectories

    if calibrate not in CALIBRATIONS:
        raise UserError(f"--calibrate: expected one of {', '.join(CALIBRATIONS)}, got '{calibrate}'")
    run_dir = Path(run_dir)
    manifest = load_complete_manifest(run_dir, partial=partial)
    cfg = _read_config(run_dir)
    dev = resolve_device(device)
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    data = load_data(manifest["data"], data_dir, num_samples=cfg.get("num_samples"), seed=0, device="cpu")
    ens = Ensemble.load(run_dir, device=dev, partial=partial, compact="auto")  # channel runs run slim

    logits = member_logits_of(ens, data.test.x, batch_size=batch_size, normalize=data.normalize)
    probs = torch.softmax(logits, dim=-1)
    labels = data.test.y.cpu()
    result = summarize(probs, labels)
    if calibrate == "temperature":
        scaled = _temperature_block(ens, data, probs, labels, batch_size)
        if scaled is not None:
            result["ensemble"]["temperature_scaled"] = scaled
    result["ensemble_size"] = ensemble_size_curve(probs, labels)
    mask_list = [m for m in ens.masks if m]
    if len(mask_list) == len(ens.masks) and len(mask_list) > 1:
        hm = mask_hamming_matrix(mask_list)
        result["diversity"]["mask_hamming_matrix"] = hm.tolist()
        result["diversity"]["mask_hamming"] = offdiagonal_mean(hm)

    artifacts: dict[str, Any] = {"probs": probs, "labels": labels, "ood_scores": {}}
    id_scores = ood_scores(probs, logits)
    artifacts["ood_scores"]["id"] = id_scores["msp"]
    shift_kw = {"num_samples": cfg.get("num_samples")} if manifest["data"] == "mnist1d" else {}
    if ood is None:
        names = list_ood(manifest["data"])
    elif list(ood) in ([], ["none"]):
        names = []  # `--ood none` (or an empty list): skip OoD detection
    else:
        names = list(ood)
    ood_result: dict[str, Any] = {}
    if names:
        sets = ood_sets(manifest["data"], data_dir, names=names, seed=0, **shift_kw)
        for name, x in sets.items():
            z = member_logits_of(ens, x, batch_size=batch_size)
            s = ood_scores(torch.softmax(z, dim=-1), z)
            ood_result[name] = ood_entry(id_scores, s, members=probs.shape[0])
            artifacts["ood_scores"][name] = s["msp"]
    result["ensemble"]["ood"] = ood_result

    if corruptions not in (None, "none"):
        records = []
        for split in corruption_sets(manifest["data"], corruptions, seed=0, **shift_kw):
            x, y = split.load()
            p = member_probs_of(ens, x, batch_size=batch_size)
            mean = p.mean(0)
            records.append({"type": split.type, "severity": split.severity,
                            "accuracy": float(accuracy(mean, y)), "nll": float(ensemble_nll(p, y)),
                            "ece": float(ece(mean, y))})
        if records:
            result["ensemble"]["corrupted"] = corruption_summary(records)
            result["ensemble"]["corrupted"]["by_split"] = records
    result["cost"] = cost_block(run_dir, manifest, ens)
    artifacts["trajectories"] = {"jobs": load_trajectories(run_dir), "tickets": manifest["tickets"]}
    result["method"] = manifest["method"]
    result["chance_level"] = manifest.get("chance_level")  # tickets whose validation accuracy is a guess's
    result["data"] = manifest["data"]
    result["model"] = manifest["model"]
    if partial:
        result["partial"] = True
    if return_artifacts:
        return result, artifacts
    return result


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def format_evaluation(result: dict[str, Any]) -> str:
    """A short human-readable summary of one evaluation object."""
    e, c = result["ensemble"], result["cost"]
    lines = [f"{result.get('method', '?')} ({c['members']} member(s), sparsity {c['sparsity']:.3f}) "
             f"on {result.get('data', '?')}",
             f"  ensemble   accuracy {_pct(e['accuracy'])}  NLL {e['nll']:.4f}  ECE {_pct(e['ece'])}  "
             f"Brier {e['brier']:.4f}  adaptive ECE {_pct(e.get('ece_adaptive'))}"]
    if e.get("temperature_scaled"):
        t = e["temperature_scaled"]
        lines.append(f"  scaled     T {t['temperature']:.3f} (fitted on validation)  NLL {t['nll']:.4f}  "
                     f"ECE {_pct(t['ece'])}  Brier {t['brier']:.4f}")
    if e.get("selective"):
        sel = e["selective"]
        lines.append(f"  selective  AURC {sel['aurc']:.4f}  risk at 80% coverage {_pct(sel['risk_at_80_coverage'])}  "
                     f"coverage at 5% risk {_pct(sel['coverage_at_5_risk'])}")
    for k, m in enumerate(result["members"]):
        lines.append(f"  member {k}   accuracy {_pct(m['accuracy'])}  NLL {m['nll']:.4f}  ECE {_pct(m['ece'])}")
    for name, o in (e.get("ood") or {}).items():
        lines.append(f"  OoD {name:<12} AUROC {_pct(o['auroc'])}  AUPR-In {_pct(o['aupr_in'])}  "
                     f"AUPR-Out {_pct(o['aupr_out'])}  FPR95 {_pct(o['fpr95'])}  (MSP)")
        by_score = [f"{k} {_pct(v['auroc'])}" for k, v in o.items() if isinstance(v, dict) and k != "msp"]
        if by_score:
            lines.append(f"  {'':<16} AUROC by score: " + "  ".join(by_score))
    if e.get("corrupted"):
        cc = e["corrupted"]
        lines.append(f"  corrupted  accuracy {_pct(cc['accuracy'])}  NLL {cc['nll']:.4f}  ECE {_pct(cc['ece'])}")
    d = result["diversity"]
    lines.append(f"  diversity  disagreement {d['disagreement']:.4f}  KL {d['kl']:.4f}")
    fmt = lambda v: "—" if v is None else f"{v:.3f}x"
    lines.append(f"  cost       non-zero params {c['nonzero_params']:,} ({fmt(c['nonzero_params_vs_dense'])} dense)  "
                 f"train FLOPs {fmt(c['train_flops_vs_dense'])}  inference FLOPs {fmt(c['inference_flops_vs_dense'])}  "
                 f"tickets {c['checkpoint_bytes']:,} B ({fmt(c['checkpoint_bytes_vs_dense'])})")
    if c.get("compact"):
        k = c["compact"]
        lines.append(f"  compact    slim params {k['params']:,} ({fmt(k['params_vs_dense'])} dense)  inference FLOPs "
                     f"{k['inference_flops']:,} ({fmt(k['inference_flops_vs_dense'])})  bytes {k['bytes']:,} "
                     f"({fmt(k['bytes_vs_dense'])}), {k['path']} forward")
    return "\n".join(lines)


def plot_inputs(artifacts: dict[str, Any]) -> dict[str, Any]:
    """What the report's plots need from :func:`evaluate_run`'s artifacts: reliability bins of
    the ensemble probability, the MSP scores of the test and OoD sets, and the recorded
    function-space trajectories (``None`` for runs without them)."""
    from freetickets.metrics.calibration import reliability_bins

    traj = artifacts.get("trajectories")
    return {"reliability": reliability_bins(artifacts["probs"].mean(0), artifacts["labels"]),
            "ood_scores": artifacts["ood_scores"],
            "trajectories": traj if traj and traj.get("jobs") else None}


def report_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, data_dir: str | None = None,
                device: str = "auto", command: str | None = None, partial: bool = False,
                latency: dict[str, float] | None = None) -> Path:
    """Evaluate several runs and write a Markdown report with plots to ``out_dir``
    (``latency``: ``{method: latency ratio to dense}`` for the Pareto plot's latency panels).

    Runs of one method with the same settings and different seeds are seeds of that method, and
    methods are paired by seed for the claims (:func:`freetickets.report.seeds.pair_seeds`)."""
    from freetickets.report import write_report, write_results_json
    from freetickets.report.seeds import RunResult, method_label, pair_seeds

    runs: list[RunResult] = []
    arts: dict[str, Any] = {}
    data_name = None
    for rd in run_dirs:
        # corruption sets are built in for MNIST-1D only; CIFAR-C is a folder `evaluate --corruptions` takes
        builtin = _read_config(Path(rd)).get("data", "mnist1d") == "mnist1d"
        res, art = evaluate_run(rd, data_dir=data_dir, device=device, return_artifacts=True, partial=partial,
                                corruptions="builtin" if builtin else "none")
        if data_name is not None and res["data"] != data_name:
            raise UserError(f"report: {rd} used data '{res['data']}', the others '{data_name}'; compare runs on one data set")
        data_name = res["data"]
        runs.append(RunResult(str(rd), res["method"], _read_config(Path(rd)), res))
        arts[str(rd)] = art
    try:
        per_seed, sources = pair_seeds(runs)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # plots that show one run per method (reliability, OoD scores, trajectories) use its lowest seed
    artifacts = {name: plot_inputs(arts[paths[0]]) for name, paths in sources.items()}
    notes = [f"{method_label(name)}: {len(paths)} seed(s), runs {', '.join(paths)}" for name, paths in sources.items()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_results_json(out / "results.json", data_name, per_seed, extra={"runs": sources})
    return write_report(out, per_seed, data_name=data_name, artifacts=artifacts, command=command, notes=notes,
                        latency=latency)


def _train_size(data: str, num_samples: int | None) -> int:
    if data == "mnist1d":
        from freetickets.data.mnist1d import DEFAULT_NUM_SAMPLES

        n = num_samples or DEFAULT_NUM_SAMPLES
        return int(n * 0.8) - int(n * 0.8) // 10
    sizes = {"cifar10": 45000, "cifar100": 45000, "imagenet": 1281167}
    if data not in sizes:
        raise UserError(f"--data: unknown data set '{data}'; use mnist1d, cifar10, cifar100, imagenet or give --train-size")
    return sizes[data]


def method_preset(method: str, data: str, model: str | None = None) -> str | None:
    """The shipped preset of ``method`` on ``data`` (the one for ``model`` when there are several), or None."""
    from freetickets.train.config import list_presets, load_yaml

    found = []
    for name in list_presets():
        values = load_yaml(name)
        if values.get("method") == method and values.get("data") == data:
            found.append((values.get("model") != model, name))
    return min(found)[1] if found else None


def flops_table(overrides: dict[str, Any], *, train_size: int | None = None, preset: str | None = "auto") -> str:
    """Planned training and inference FLOPs of a configuration against one dense model (no training).

    ``overrides``: ``model`` (required), ``method`` (default dst), ``data`` (default mnist1d) and any
    :class:`~freetickets.train.config.TrainConfig` keys given explicitly. The schedule and method
    settings not given come from the method's shipped preset for the data set (e.g.
    ``cifar10_wrn28x10_edst``: 150 + 3 x 100 epochs against the 250-epoch dense recipe), else the
    defaults; the model comes from ``overrides`` (the preset's ``model_kwargs`` only when it is the
    preset's model). ``preset``: ``"auto"`` (that preset), a preset name, or ``None``/``"none"``
    (the train defaults only). Validated as ``train`` validates
    (:func:`~freetickets.train.config.validate_flops_flags`). Accounting: :mod:`freetickets.flops.plan`.
    """
    from freetickets.flops.plan import DATA_SHAPES, planned_cost
    from freetickets.methods import get_recipe
    from freetickets.train.config import TrainConfig, default_data_hint, load_yaml, merge, validate_flops_flags

    overrides = dict(overrides)
    data_given = overrides.get("data") is not None
    method = overrides.setdefault("method", "dst")
    data = overrides.setdefault("data", "mnist1d")
    if data not in DATA_SHAPES:
        raise UserError(f"--data: unknown data set '{data}'; use one of {', '.join(DATA_SHAPES)}")
    if preset == "auto":
        preset = method_preset(method, data, overrides.get("model"))
    elif preset in (None, "none"):
        preset = None
    base = TrainConfig()
    if preset is not None:
        values = load_yaml(preset)
        if values.get("model") != overrides.get("model"):
            values.pop("model_kwargs", None)
        base = merge(base, values, source=f"preset {preset}")
    cfg = validate_flops_flags(base=base, train_size=train_size, **overrides)
    n = train_size or _train_size(data, cfg.num_samples)
    try:
        c = planned_cost(cfg, n)
    except UserError as exc:
        if not str(exc).startswith("input_shape"):
            raise
        # a model that cannot take the (maybe default) data set's inputs
        raise UserError(f"--model: {exc}{default_data_hint(data, data_given)}") from None
    ref_epochs = cfg.reference_epochs or cfg.epochs
    members = cfg.num_members
    lines = [
        f"{method} of {cfg.model} on {data}: {members} member(s), sparsity "
        f"{cfg.sparsity if get_recipe(method).sparse else 0.0} ({cfg.distribution})",
        f"  settings from                    {('preset ' + preset) if preset else 'defaults'} and the flags given",
        f"  dense forward FLOPs / sample     {c.dense_forward:,.0f}",
        f"  sparse forward FLOPs / sample    {c.sparse_forward:,.0f}  ({c.sparse_forward / c.dense_forward:.3f}x dense)",
        f"  active sparse weights / member   {c.active_weights:,} of {c.sparse_weights:,}",
        f"  training steps / run             {c.steps:,} ({c.steps // c.steps_per_epoch} epochs × {c.steps_per_epoch} "
        f"steps, batch {cfg.batch_size})",
        f"  training FLOPs                   {c.train_flops:.4g}  ({c.train_flops / c.dense_train_flops:.3f}x one dense "
        f"model trained {ref_epochs} epochs: {c.dense_train_flops:.4g})",
        f"  inference FLOPs / sample         {c.inference_flops:,.0f}  ({c.inference_flops / c.dense_forward:.3f}x one "
        f"dense model)",
    ]
    return "\n".join(lines)

