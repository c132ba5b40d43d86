"""Training configuration: one typed dataclass, YAML files, and up-front validation.

Every value is checked before any work starts (names, ranges and combinations), so a run never
fails an hour in because of a typo. YAML keys use the dataclass field names (``-`` and ``_`` are
interchangeable); an unknown key is an error that suggests the closest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from freetickets.errors import UserError
from freetickets.names import CHANNEL_METHODS, METHODS, SPARSE_INITS, STRUCTURES

DISTRIBUTIONS = ("erk", "er", "uniform")
PRUNE_RULES = ("magnitude", "set")
GROW_RULES = ("gradient", "random", "momentum")
PRUNE_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
DIST_BACKENDS = ("auto", "nccl", "gloo")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Units are in the names (``_epochs``, ``_steps``)."""

    method: str = "dense"
    model: str = "cnn1d"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "mnist1d"
    data_dir: str | None = None
    num_samples: int | None = None  # MNIST-1D only: samples generated (train + test)
    seed: int = 0
    device: str = "auto"

    # optimisation
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_schedule: str = "multistep"
    lr_milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    lr_gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None

    # sparsity
    sparsity: float = 0.8
    distribution: str = "erk"
    prune: str = "magnitude"
    grow: str = "gradient"
    prune_fraction: float = 0.5
    prune_schedule: str = "constant"
    update_interval: int | None = 1000  # optimizer steps between topology updates
    update_end_fraction: float | None = None  # stop updates after this fraction of steps
    sparse_init: str = "none"
    regrow_pruned: bool = True  # a weight pruned in an update may be regrown in it (released code, RigL)
    include: list = field(default_factory=list)  # fnmatch patterns of extra sparse parameters (>= 2-D)
    exclude: list = field(default_factory=list)  # fnmatch patterns of parameters kept dense
    structure: str = "unstructured"  # or "channel": tickets keep whole channels (docs/algorithms.md)

    # ensembles
    members: int = 3
    member: int | None = None  # train only this member (DST/deep/static/pf), e.g. one per GPU
    explore_epochs: int = 0  # EDST exploration phase; refinement phases share the rest
    jump_fraction: float = 0.8  # EDST prune-and-regrow fraction between refinement phases
    refine_lr_factors: list = field(default_factory=lambda: [0.1, 0.01])  # × lr, halves of a phase
    pf_lr: float = 0.001
    pf_epochs: int = 10
    from_run: str | None = None  # PF: a completed `deep` run providing the dense parents
    reference_epochs: int | None = None  # dense recipe epochs for *_vs_dense (None: epochs)

    # efficient ensembles (one network holding M members)
    mimo_input_repetition: float = 0.0  # MIMO: fraction rho of rows where all heads see one example
    mimo_batch_repetitions: int = 1  # MIMO: each example appears r times per training batch
    batchensemble_init: str = "random_sign"  # BatchEnsemble rank-1 factors: random_sign, normal, ones
    dropout_rate: float = 0.1  # MC dropout: drop probability before every Conv/Linear layer but the first
    packed_alpha: float = 2.0  # Packed-Ensembles: width factor alpha of the packed network
    packed_gamma: int = 1  # Packed-Ensembles: subgroups gamma per member in every grouped layer
    masksembles_scale: float = 2.0  # Masksembles: mask scale s (1: identical masks; larger: less overlap)

    # engineering
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    eval_batch_size: int = 1024
    checkpoint_every_steps: int | None = None
    check_consistency: bool = False  # DDP: compare mask checksums across ranks after updates
    sync_batchnorm: bool = False  # DDP on CUDA: SyncBatchNorm (normalise over the global batch)
    dist_backend: str = "auto"  # torchrun: auto (nccl on CUDA, gloo on CPU), nccl, gloo
    num_workers: int = 4  # DataLoader workers for map-style data sets (ImageNet); tensor sets need none

    # --------------------------------------------------------------------- helpers
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def is_sparse(self) -> bool:
        from freetickets.methods import get_recipe  # here: the recipes import the schedules, which import this module

        return self.method in METHODS and get_recipe(self.method).sparse

    @property
    def num_members(self) -> int:
        return 1 if self.method == "dense" else self.members

    @property
    def refine_epochs(self) -> int:
        """Epochs per EDST refinement phase."""
        return (self.epochs - self.explore_epochs) // self.members

    def member_seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.num_members)]


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UserError(f"--{name.replace('_', '-')}: {value!r} is not one of {', '.join(allowed)}{extra}")


def _range(name: str, value: Any, lo: float, hi: float, *, lo_open=False, hi_open=False) -> None:
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{flag}: expected a number, got {value!r}")
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise UserError(f"{flag}: {value} is outside {lb}{lo}, {hi}{rb}")


def _int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    flag = f"--{name.replace('_', '-')}"
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{flag}: expected an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{flag}: must be >= {minimum}, got {value}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every field and combination; raise :class:`UserError` naming the first bad one."""
    _choice("method", cfg.method, METHODS)
    _choice("distribution", cfg.distribution, DISTRIBUTIONS)
    _choice("prune", cfg.prune, PRUNE_RULES)
    _choice("grow", cfg.grow, GROW_RULES)
    _choice("prune_schedule", cfg.prune_schedule, PRUNE_SCHEDULES)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("lr_schedule", cfg.lr_schedule, LR_SCHEDULES)
    _choice("device", cfg.device, DEVICES)
    _choice("sparse_init", cfg.sparse_init, SPARSE_INITS)
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("dist_backend", cfg.dist_backend, DIST_BACKENDS)
    if not isinstance(cfg.model, str) or not cfg.model:
        raise UserError("--model: expected a model name (see `freetickets models`)")
    if not isinstance(cfg.data, str) or not cfg.data:
        raise UserError("--data: expected a data set name")
    if not isinstance(cfg.model_kwargs, dict):
        raise UserError("model_kwargs: expected a mapping")
    _range("sparsity", cfg.sparsity, 0.0, 1.0, hi_open=True)
    _range("prune_fraction", cfg.prune_fraction, 0.0, 1.0)
    _range("jump_fraction", cfg.jump_fraction, 0.0, 1.0)
    _range("lr", cfg.lr, 0.0, math.inf, lo_open=True, hi_open=True)
    _range("pf_lr", cfg.pf_lr, 0.0, math.inf, lo_open=True, hi_open=True)
    _range("momentum", cfg.momentum, 0.0, 1.0, hi_open=True)
    _range("weight_decay", cfg.weight_decay, 0.0, math.inf, hi_open=True)
    _range("lr_gamma", cfg.lr_gamma, 0.0, 1.0, lo_open=True)
    _range("label_smoothing", cfg.label_smoothing, 0.0, 1.0, hi_open=True)
    if cfg.grad_clip is not None:
        _range("grad_clip", cfg.grad_clip, 0.0, math.inf, lo_open=True, hi_open=True)
    if cfg.update_end_fraction is not None:
        _range("update_end_fraction", cfg.update_end_fraction, 0.0, 1.0, lo_open=True)
    _int("seed", cfg.seed, 0)
    _int("epochs", cfg.epochs, 1)
    _int("batch_size", cfg.batch_size, 1)
    _int("eval_batch_size", cfg.eval_batch_size, 1)
    _int("members", cfg.members, 1)
    _int("explore_epochs", cfg.explore_epochs, 0)
    _int("warmup_epochs", cfg.warmup_epochs, 0)
    _int("pf_epochs", cfg.pf_epochs, 1)
    _int("num_workers", cfg.num_workers, 0)
    _int("update_interval", cfg.update_interval, 1, allow_none=True)
    _int("checkpoint_every_steps", cfg.checkpoint_every_steps, 1, allow_none=True)
    _int("num_samples", cfg.num_samples, 100, allow_none=True)
    _int("reference_epochs", cfg.reference_epochs, 1, allow_none=True)
    _int("member", cfg.member, 0, allow_none=True)
    if not isinstance(cfg.lr_milestones, list) or not all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m < 1 for m in cfg.lr_milestones
    ):
        raise UserError("lr_milestones: expected a list of fractions of training in (0, 1)")
    if not isinstance(cfg.refine_lr_factors, list) or len(cfg.refine_lr_factors) != 2 or not all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in cfg.refine_lr_factors
    ):
        raise UserError("refine_lr_factors: expected two positive numbers (lr factors of the two halves)")
    _check_more(cfg)
    _check_structure(cfg)
    from freetickets.methods import get_recipe  # here: the recipes import the schedules, which import this module

    recipe = get_recipe(cfg.method)
    if cfg.member is not None:
        if not recipe.independent_members:
            raise UserError(f"--member: only for methods with independent members, not {cfg.method}")
        if cfg.member >= cfg.members:
            raise UserError(f"--member: {cfg.member} is not below --members {cfg.members}")
    if cfg.warmup_epochs >= cfg.epochs:
        raise UserError(f"--warmup-epochs: {cfg.warmup_epochs} must be below --epochs {cfg.epochs}")
    recipe.validate(cfg)
    return cfg


def validate_flops_flags(*, base: TrainConfig | None = None, train_size: int | None = None,
                         **values: Any) -> TrainConfig:
    """The checks of the ``flops`` command: its flags are :class:`TrainConfig` fields (model, data,
    sparsity, method, members, epochs, ...), so they go through the same :func:`validate` as
    ``train`` (same ranges, same one-line messages), plus ``--train-size`` (>= 1), which only
    ``flops`` has. ``base``: the configuration the flags override (a preset; default the
    defaults). Returns the validated config."""
    cfg = validate(merge(base if base is not None else TrainConfig(), values, source="arguments"))
    _int("train_size", train_size, 1, allow_none=True)
    return cfg


_BOOL_FIELDS = ("nesterov", "channels_last", "compile", "check_consistency", "sync_batchnorm", "regrow_pruned")
# Upper bounds that catch typos (an extra zero or two) before they allocate a plan of a billion
# epochs or generate a data set that does not fit in memory.
_MAXIMA = {"epochs": 100_000, "explore_epochs": 100_000, "pf_epochs": 100_000, "warmup_epochs": 100_000,
           "reference_epochs": 100_000, "members": 10_000, "num_samples": 10_000_000, "seed": 2**32 - 1}


def _check_structure(cfg: TrainConfig) -> None:
    """``structure``: a known value; ``channel`` only for the methods and rules that support it."""
    _choice("structure", cfg.structure, STRUCTURES)
    if cfg.structure != "channel":
        return
    if cfg.method not in CHANNEL_METHODS:
        raise UserError(f"--structure: channel is for {', '.join(CHANNEL_METHODS)}, not {cfg.method}")
    if cfg.prune != "magnitude":
        raise UserError(f"--prune: --structure channel prunes channels by magnitude; got {cfg.prune!r}")
    if cfg.grow not in ("gradient", "random"):
        raise UserError(f"--grow: --structure channel regrows channels at random (a removed channel's gradient "
                        f"is exactly 0); use gradient (the default) or random, not {cfg.grow!r}")


def _check_more(cfg: TrainConfig) -> None:
    """Types of the boolean and path fields, upper bounds, and the data set name and its options."""
    for name in _BOOL_FIELDS:
        value = getattr(cfg, name, False)
        if not isinstance(value, bool):
            raise UserError(f"{name}: expected true or false, got {value!r}")
    for name in ("include", "exclude"):
        value = getattr(cfg, name)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise UserError(f"--{name}: expected a list of parameter-name patterns (fnmatch, e.g. conv1.weight), got {value!r}")
    for name, maximum in _MAXIMA.items():
        value = getattr(cfg, name)
        if value is not None and value > maximum:
            raise UserError(f"--{name.replace('_', '-')}: {value} is above the maximum {maximum}")
    if any(not isinstance(k, str) or not k.isidentifier() for k in cfg.model_kwargs):
        bad = next(k for k in cfg.model_kwargs if not isinstance(k, str) or not k.isidentifier())
        raise UserError(f"model_kwargs: {bad!r} is not an option name")
    for name in ("data_dir", "from_run"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            flag = "--from" if name == "from_run" else "--data-dir"
            raise UserError(f"{flag}: expected a directory path, got {value!r}")
    from freetickets.data import list_data

    valid = list_data()
    key = cfg.data.strip().lower().replace("-", "").replace("_", "")
    if key not in valid:
        hint = difflib.get_close_matches(key, valid, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UserError(f"--data: {cfg.data!r} is not one of {', '.join(valid)}{extra}")
    if cfg.num_samples is not None and key != "mnist1d":
        raise UserError(f"--num-samples: applies only to mnist1d, not {cfg.data}")
    if cfg.from_run is not None and cfg.method != "pf":
        raise UserError(f"--from: only for --method pf (dense parents to prune), not {cfg.method}")


# Number of classes and input shape of each data set, known without loading it (for the up-front
# model check). ImageNet's class count is that of the standard 1000-class set.
DATA_SHAPES = {"mnist1d": (10, (1, 40)), "cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32)),
               "imagenet": (1000, (3, 224, 224))}


def default_data_hint(data: str, given: bool | None = None) -> str:
    """A suffix for a model/input mismatch on the default data set: the user may not know that
    ``--data`` defaults to it. ``given``: whether ``--data`` was passed (None: not known)."""
    if given or data != TrainConfig.data:
        return ""
    return (f" (--data defaults to {TrainConfig.data}, inputs {DATA_SHAPES[TrainConfig.data][1]}; "
            "pass --data, e.g. cifar10, for this model)")


def check_model(cfg: TrainConfig) -> None:
    """Build ``cfg.model`` with ``cfg.model_kwargs`` for ``cfg.data``'s shape and run one forward
    pass of two samples, so an unknown name, a bad option or a model that cannot take the data's
    inputs fails before any directory is created or data generated or loaded.

    The probe is built on the CPU inside ``fork_rng`` (the global RNG is left as it was). Why not
    the meta device: its first weight initialisation imports ``torch._dynamo`` (about 1 s), more
    than building any MNIST-1D model; a paper-scale model costs about a second either way."""
    import torch

    from freetickets.models import create_model

    key = cfg.data.strip().lower().replace("-", "").replace("_", "")
    num_classes, shape = DATA_SHAPES.get(key, (10, None))
    kwargs = {k: v for k, v in cfg.model_kwargs.items() if k != "num_classes"}
    from freetickets.methods import get_recipe

    recipe = get_recipe(cfg.method)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model = create_model(cfg.model, num_classes=num_classes, input_shape=shape, **kwargs)
            if shape is not None:
                model.eval()(torch.zeros(2, *shape))
            form = recipe.build_model(model, cfg)  # MIMO etc.: the model must take the form
            if form is not model and shape is not None:
                form.eval().member_logits(torch.zeros(2, *shape))
    except UserError as exc:
        msg = str(exc)
        if msg.startswith("--"):  # a method option the form cannot take (e.g. --packed-gamma): as it is
            raise UserError(msg) from None
        if msg.startswith("name: "):
            msg = msg[len("name: "):]
        raise UserError(f"--model: {msg}{'' if msg.startswith('unknown') else default_data_hint(cfg.data)}") from None
    except Exception as exc:  # whatever the factory raises for these options is a configuration error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--model: cannot build {cfg.model!r} with model_kwargs {cfg.model_kwargs} for "
                        f"{cfg.data}: {first}{default_data_hint(cfg.data)}") from None
    if cfg.is_sparse and (cfg.include or cfg.exclude):
        from freetickets.sparse.run_options import selected_parameters

        try:
            selected_parameters(cfg, model)
        except ValueError as exc:
            flag = "--include" if str(exc).startswith("include") else "--exclude"
            raise UserError(f"{flag}: {exc}") from None
    del model


def _normalise_key(key: str) -> str:
    return str(key).strip().replace("-", "_")


def merge(cfg: TrainConfig, values: dict[str, Any], *, source: str) -> TrainConfig:
    """Return ``cfg`` updated with ``values``; unknown keys raise with the closest valid key."""
    names = TrainConfig.field_names()
    updates = {}
    for key, value in values.items():
        k = _normalise_key(key)
        if k == "from":
            k = "from_run"
        if k not in names:
            hint = difflib.get_close_matches(k, names, n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise UserError(f"{source}: unknown key '{key}'{extra}")
        updates[k] = value
    out = dataclasses.replace(cfg, **updates)
    _coerce_types(out, source)
    for name in ("include", "exclude"):  # a single pattern written as a string (YAML or --set)
        if isinstance(getattr(out, name), str):
            setattr(out, name, [getattr(out, name)])
    return out


def _coerce_types(cfg: TrainConfig, source: str) -> None:
    """YAML gives ``1`` for ``1.0`` and ``1e-3`` as a string in some dialects; accept the obvious."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        where = f"--{f.name.replace('_', '-')}" if source == "arguments" else f"{source}: '{f.name}'"
        try:
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                setattr(cfg, f.name, float(value))
            elif isinstance(default, float) and isinstance(value, str):
                setattr(cfg, f.name, float(value))
            elif f.name in ("grad_clip", "update_end_fraction") and isinstance(value, int) and not isinstance(value, bool):
                setattr(cfg, f.name, float(value))
            elif f.name == "update_interval" and isinstance(value, str) and value.strip().lower() in ("none", "null", "off"):
                setattr(cfg, f.name, None)  # as the --update-interval flag accepts
        except (ValueError, OverflowError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None


def preset_dir() -> Path:
    """The presets shipped with the package (``configs/`` in the repository links here)."""
    return Path(__file__).resolve().parent.parent / "configs"


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """A config file path, or the name of a shipped preset (e.g. ``mnist1d_edst``)."""
    p = Path(path)
    if p.is_file():
        return p
    preset = preset_dir() / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if not p.parent.parts or p.parent == Path("configs") or not p.exists():
        if preset.is_file():
            return preset
    hint = difflib.get_close_matches(p.stem, list_presets(), n=1)
    extra = f"; did you mean the preset '{hint[0]}'?" if hint else ""
    raise UserError(f"--config: {path}: file not found{extra}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file (a mapping of field names to values), or a shipped preset by name."""
    path = find_config(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"--config: {path}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise UserError(f"--config: {path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config: {path}: expected a mapping of keys to values at the top level")
    return data


def resolve(config_file: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file, then explicit overrides (flags); validated."""
    cfg = TrainConfig()
    if config_file is not None:
        cfg = merge(cfg, load_yaml(config_file), source=f"--config {config_file}")
    cfg = merge(cfg, overrides, source="arguments")
    return validate(cfg)


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
