"""The command line: argument parsing only (docs/architecture.md: the one place that touches argv).

Every user mistake ends as one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

import yaml

from freetickets import __version__
from freetickets.demo import DEFAULT_REGIME, REGIMES
from freetickets.errors import NonFiniteError, Preempted, UserError
from freetickets.names import DEMO_METHODS, METHODS

log = logging.getLogger("freetickets.cli")

EXIT_USER = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 75  # = freetickets.train.preempt.EXIT_PREEMPTED: stopped by a signal, checkpoint written


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (with a pointer to --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _out(text: str = "") -> None:
    if _is_main_rank():
        print(text, flush=True)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record, so ``main()`` called
    in-process (tests, notebooks) never keeps writing to a stream that was replaced or closed."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("freetickets")
    root.handlers[:] = [handler]
    root.setLevel(level if _is_main_rank() else logging.WARNING)
    root.propagate = False


# ---------------------------------------------------------------------------- train
_TRAIN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--model", dict(help="model name from the registry (see `freetickets models`); default cnn1d")),
    ("--data", dict(help="data set: mnist1d (default, generated offline), cifar10, cifar100, imagenet")),
    ("--data-dir", dict(help="directory holding the data set files (CIFAR, SVHN, CIFAR-C, ImageNet)")),
    ("--num-samples", dict(type=int, help="MNIST-1D: number of samples to generate (train + test)")),
    ("--sparsity", dict(type=float, help="fraction of zero weights in the sparse layers, in [0, 1); default 0.8")),
    ("--members", dict(type=int, help="ensemble size M; default 3")),
    ("--epochs", dict(type=int, help="training epochs (EDST: total = exploration + M refinement phases)")),
    ("--explore-epochs", dict(type=int, help="EDST exploration epochs at the constant high lr")),
    ("--jump-fraction", dict(type=float, help="EDST prune-and-regrow fraction between refinement phases; default 0.8")),
    ("--distribution", dict(help="layer-wise density distribution: erk (default), er, uniform")),
    ("--prune", dict(help="prune rule: magnitude (default) or set")),
    ("--grow", dict(help="grow rule: gradient (RigL, default), random (SET), momentum (SNFS)")),
    ("--prune-fraction", dict(type=float, help="fraction p of active weights replaced per update; default 0.5")),
    ("--prune-schedule", dict(help="constant (default) or cosine (decays p to 0 at the end)")),
    ("--update-interval", dict(help="optimizer steps between topology updates (ΔT), or 'none'; default 1000")),
    ("--lr", dict(type=float, help="base learning rate; default 0.1")),
    ("--batch-size", dict(type=int, help="global batch size; default 128")),
    ("--optimizer", dict(help="sgd (default), adam, adamw")),
    ("--weight-decay", dict(type=float, help="weight decay; default 5e-4")),
    ("--seed", dict(type=int, help="base seed; member k uses seed + k")),
    ("--device", dict(help="auto (CUDA when present), cpu, cuda")),
    ("--precision", dict(help="fp32 (default) or bf16 (autocast on CUDA)")),
    ("--pf-epochs", dict(type=int, help="PF fine-tuning epochs; default 10")),
    ("--pf-lr", dict(type=float, help="PF fine-tuning learning rate; default 0.001")),
    ("--sparse-init", dict(help="none (default) or rescale (weights × 1/sqrt(density))")),
    ("--regrow-pruned", dict(action=argparse.BooleanOptionalAction,
                             help="a weight pruned in an update may be regrown in the same update (default: yes, "
                                  "as the released code and RigL); --no-regrow-pruned: it may not")),
    ("--structure", dict(help="dst, edst, static, pf: unstructured (default: free weights, as in the paper) or "
                              "channel (tickets keep whole channels/neurons, i.e. smaller dense networks; "
                              "consider --prune-fraction 0.1 and a long --update-interval, see docs/algorithms.md)")),
    ("--include", dict(nargs="+", metavar="PATTERN",
                       help="also make these parameters sparse (fnmatch on names, >= 2-D), e.g. emb.weight")),
    ("--exclude", dict(nargs="+", metavar="PATTERN",
                       help="keep these parameters dense (fnmatch on names), e.g. conv1.weight")),
    ("--reference-epochs", dict(type=int, help="epochs of the dense recipe that *_vs_dense compares with")),
    ("--mimo-input-repetition", dict(type=float, help="MIMO: fraction of training rows where all heads see the "
                                                     "same example (rho); default 0")),
    ("--mimo-batch-repetitions", dict(type=int, help="MIMO: times each example appears per training batch; default 1")),
    ("--batchensemble-init", dict(help="BatchEnsemble rank-1 factor init: random_sign (default), normal, ones")),
    ("--dropout-rate", dict(type=float, help="MC dropout: drop probability before every Conv/Linear layer but "
                                           "the first; default 0.1")),
    ("--packed-alpha", dict(type=float, help="Packed-Ensembles: width factor alpha of the packed network; default 2")),
    ("--packed-gamma", dict(type=int, help="Packed-Ensembles: subgroups gamma per member in every grouped layer; "
                                          "default 1")),
    ("--masksembles-scale", dict(type=float, help="Masksembles: mask scale s in [1, 100] (1: identical masks, "
                                                "larger: less overlap); default 2")),
    ("--checkpoint-every-steps", dict(type=int, help="also checkpoint every N optimizer steps")),
    ("--from", dict(dest="from_run", metavar="RUN_DIR", help="pf: a completed deep run providing the dense parents")),
    ("--member", dict(type=int, help="train only member K (deep, dst, pf, static), e.g. one process per GPU")),
]


_TRAIN_FLAG_KW = dict(_TRAIN_FLAGS)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one method into a run directory",
                       description=f"Train {', '.join(METHODS)} into RUN_DIR. --config gives "
                                   "defaults, flags override them; the resolved config is saved in RUN_DIR/config.yaml. "
                                   "Distributed: torchrun --nproc_per_node=K -m freetickets train ...")
    p.add_argument("--method", choices=METHODS, default=argparse.SUPPRESS,
                   help="training method")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of configuration keys (see configs/)")
    for flag, kw in _TRAIN_FLAGS:
        p.add_argument(flag, default=argparse.SUPPRESS, **kw)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any configuration key (YAML value), e.g. --set lr_schedule=cosine")
    p.add_argument("--channels-last", action="store_true", default=argparse.SUPPRESS, help="channels_last memory format (CUDA)")
    p.add_argument("--compile", action="store_true", default=argparse.SUPPRESS, help="torch.compile the model")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _update_interval(value: Any) -> int | None:
    """``--update-interval`` as given on the command line: a positive integer or 'none'."""
    raw = str(value).strip().lower()
    if raw in ("none", "null", "off"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"--update-interval: expected a positive integer or 'none', got '{raw}'") from None


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"command", "out", "config", "set", "resume", "overwrite", "verbose"}
    values = {k: v for k, v in vars(args).items() if k not in skip}
    if "update_interval" in values:
        values["update_interval"] = _update_interval(values["update_interval"])
    for item in args.set:
        if "=" not in item:
            raise UserError(f"--set: expected KEY=VALUE, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set: cannot parse the value of '{key}'") from None
    return values


def cmd_train(args: argparse.Namespace) -> int:
    from freetickets.train import train
    from freetickets.train.config import load_yaml, merge, resolve, validate, TrainConfig
    from freetickets.train.rundir import RunDir

    if not args.out.strip():
        raise UserError("--out: expected a directory path")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite: choose one (continue the run, or replace it)")
    overrides = _train_overrides(args)
    if args.resume and RunDir(args.out).config.is_file():
        saved = merge(TrainConfig(), load_yaml(RunDir(args.out).config), source=f"{RunDir(args.out).config}")
        cfg = validate(merge(saved, overrides, source="arguments"))
    else:
        if "method" not in overrides and args.config is None:
            raise UserError(f"freetickets train: --method is required ({', '.join(METHODS)})")
        cfg = resolve(args.config, overrides)
    progress = sys.stderr.isatty()
    manifest = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=progress)
    tickets = manifest.get("tickets", [])
    form = manifest.get("model_form")
    _out(f"{cfg.method}: {len(tickets)} ticket(s) in {args.out}"
         + (f" (one network holding {form['members']} members)" if form else ""))
    for t in tickets:
        who = "ensemble" if form else f"member {t['member']}"
        flag = "  AT CHANCE LEVEL" if t.get("at_chance") else ""
        _out(f"  {who}: val accuracy {t['val_accuracy']:.4f} (epoch {t['epoch']}, sparsity {t['sparsity']:.3f}){flag}")
    chance = manifest.get("chance_level") or {}
    if chance.get("tickets"):
        _out(f"warning: {len(chance['tickets'])} ticket(s) at chance level (val accuracy <= {chance['threshold']:.4f}, "
             f"chance {chance['accuracy']:.4f}): check the learning rate, epochs and sparsity")
    return 0


# ---------------------------------------------------------------------------- other commands
def cmd_models(args: argparse.Namespace) -> int:
    from freetickets.models.registry import describe_models

    for name, text in describe_models():
        _out(f"{name:<12} {text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from freetickets.evaluation import evaluate_run, format_evaluation

    result = evaluate_run(args.run_dir, data_dir=args.data_dir, ood=args.ood, corruptions=args.corruptions,
                          device=args.device, partial=args.partial, calibrate=args.calibrate)
    _out(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from freetickets.evaluation import report_runs

    from freetickets.report.pareto import load_latency

    latency = load_latency(args.latency) if args.latency else None
    path = report_runs(args.run_dirs, args.out, data_dir=args.data_dir, device=args.device, partial=args.partial,
                       latency=latency)
    _out(f"report written to {path}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from freetickets.evaluation import flops_table

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "verbose", "train_size", "preset")}
    if "update_interval" in overrides:
        overrides["update_interval"] = _update_interval(overrides["update_interval"])
    _out(flops_table(overrides, train_size=getattr(args, "train_size", None), preset=args.preset))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from freetickets.ensembles.predict import predict_file
    from freetickets.train.runner import resolve_device

    # "auto" is a CLI choice, not a torch device: resolve it as evaluate does.
    path = predict_file(args.run_dir, args.input, args.output, device=resolve_device(args.device),
                        partial=args.partial, normalized=args.normalized)
    _out(f"predictions written to {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from freetickets.demo import run_demo

    run_demo(args.out, quick=args.quick, seeds=args.seeds, progress=sys.stderr.isatty(), print_fn=_out,
             device=args.device, methods=tuple(args.methods), regime=args.regime, jobs=args.jobs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="freetickets", description="Sparse ensembles with dynamic sparse training (FreeTickets).")
    p.add_argument("--version", action="version", version=f"freetickets {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="train and evaluate every method on MNIST-1D; write a report")
    d.add_argument("--out", default="demo_out", metavar="DIR", help="output directory (default demo_out)")
    d.add_argument("--quick", action="store_true", help="smoke run of every method in about a minute")
    d.add_argument("--seeds", type=int, default=1, metavar="N", help="repeat over N seeds: mean ± std and the claims with 95%% intervals (N >= 2 to decide them)")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="train the independent runs in N processes (default: 2 on a CPU with 2 or more "
                        "cores, else 1; 1 shows per-run progress bars)")
    d.add_argument("--regime", default=DEFAULT_REGIME, choices=list(REGIMES),
                   help="converged (default: cnn1d width 16, whose dense model has converged at the presets' "
                        "20 epochs), headroom (the MLP: ensembles gain more, but its dense model is not "
                        "converged at 20 epochs) or saturated (the presets' cnn1d width 128, ~98%% accuracy)")
    d.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=DEMO_METHODS, metavar="METHOD",
                   help=f"train only these ({', '.join(DEMO_METHODS)}; default all; pf needs deep; with dense "
                        "and edst also a dense model trained for EDST's epochs, the equal-epochs control)")
    d.add_argument("-v", "--verbose", action="store_true")

    _add_train(sub)

    e = sub.add_parser("evaluate", help="evaluate a completed run (accuracy, NLL, ECE, temperature scaling, selective prediction, OoD, corruptions, cost)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data-dir", help="directory with the data set files (CIFAR, SVHN, CIFAR-C)")
    e.add_argument("--ood", nargs="*", default=None, metavar="NAME",
                   help="OoD sets (default: all for the data set; none: skip OoD detection)")
    e.add_argument("--corruptions", default="builtin", metavar="{builtin,DIR,none}",
                   help="corruption source: builtin (MNIST-1D-C), a CIFAR-C directory, or none")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--calibrate", default="temperature", choices=["temperature", "none"],
                   help="temperature (default): also report NLL, ECE and Brier after temperature scaling "
                        "fitted on the run's validation split (beside the raw ones); none: skip it")
    e.add_argument("--partial", action="store_true", help="use the tickets written so far by a run that is still training or was interrupted")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("-v", "--verbose", action="store_true")

    r = sub.add_parser("report", help="Markdown report with plots comparing run directories")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="runs to compare; runs of one method that differ only in --seed are its seeds")
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--data-dir")
    r.add_argument("--latency", metavar="FILE.json",
                   help="measured inference latency per method, a JSON object {method: latency / one dense "
                        "model's} (e.g. from benchmarks/ensemble.py): adds latency panels to the Pareto plot")
    r.add_argument("--partial", action="store_true", help="use the tickets written so far by a run that is still training or was interrupted")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("-v", "--verbose", action="store_true")

    f = sub.add_parser("flops", help="training and inference FLOPs of a model/method without training",
                       description="Planned FLOPs of a method against one dense model. Settings not given "
                                   "come from the method's shipped preset for --data (e.g. cifar10_wrn28x10_edst), "
                                   "else the train defaults; validated as train validates them.")
    f.add_argument("--model", required=True)
    f.add_argument("--method", choices=METHODS, default=argparse.SUPPRESS, help="training method; default dst")
    f.add_argument("--data", default=argparse.SUPPRESS, help="mnist1d (default), cifar10, cifar100, imagenet")
    for flag in ("--sparsity", "--members", "--epochs", "--explore-epochs", "--batch-size", "--num-samples",
                 "--distribution", "--grow", "--pf-epochs", "--reference-epochs", "--update-interval",
                 "--mimo-batch-repetitions", "--dropout-rate", "--packed-alpha", "--packed-gamma", "--structure"):
        kw = dict(_TRAIN_FLAG_KW[flag])
        f.add_argument(flag, default=argparse.SUPPRESS, **kw)
    f.add_argument("--train-size", type=int, default=argparse.SUPPRESS,
                   help="training examples per epoch (default: the data set's)")
    f.add_argument("--preset", default="auto", metavar="NAME|auto|none",
                   help="settings the flags override: auto (default: the method's shipped preset for --data), "
                        "a preset name, or none (the train defaults)")
    f.add_argument("-v", "--verbose", action="store_true")

    pr = sub.add_parser("predict", help="class probabilities and uncertainty for a .npy array of inputs")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("--input", required=True, metavar="FILE.npy",
                    help="inputs in the data set's raw form (CIFAR/ImageNet: uint8 images, (N, C, H, W) or "
                         "(N, H, W, C); MNIST-1D: (N, 1, 40) or (N, 40)); the run's normalisation is applied")
    pr.add_argument("--normalized", action="store_true",
                    help="the inputs are already normalised as in training: apply no normalisation")
    pr.add_argument("--output", metavar="FILE", help=".npz (default) or .csv")
    pr.add_argument("--partial", action="store_true", help="use the tickets written so far by a run that is still training or was interrupted")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    pr.add_argument("-v", "--verbose", action="store_true")

    m = sub.add_parser("models", help="list the model registry")
    m.add_argument("-v", "--verbose", action="store_true")
    return p


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "report": cmd_report,
            "flops": cmd_flops, "predict": cmd_predict, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USER
        _setup_logging(getattr(args, "verbose", False))
        return COMMANDS[args.command](args)
    except Preempted as exc:
        if _is_main_rank():
            print(f"freetickets: {exc}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except NonFiniteError as exc:
        print(f"freetickets: error: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError)) and exc.filename:
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"freetickets: error: {msg}", file=sys.stderr)
        return EXIT_USER
    except OSError as exc:
        print(f"freetickets: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("freetickets: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
