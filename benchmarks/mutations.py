"""Mutation check: plant one-line bugs in a copy of the package and see whether the tests notice.

For each entry of :data:`MUTATIONS` the script copies ``src/freetickets`` to a temporary
directory, replaces one exact piece of one source line (the piece must occur exactly once in
that file, otherwise the script stops with an error: the list cannot rot silently when the code
changes), and runs the entry's test files against the copy (``PYTHONPATH`` = the copy; ``-x``,
``-p no:cacheprovider``). A mutation is *caught* when pytest reports a failing test (exit 1).
Before the mutations the same test files run once against an unmodified copy, which must pass
(otherwise every mutation would look caught).

Usage::

    python benchmarks/mutations.py            # all mutations
    python benchmarks/mutations.py -k flops   # those whose name contains 'flops'
    python benchmarks/mutations.py --list

Prints one line per mutation (caught/MISSED, seconds, the first failing test) and exits 1 if
any mutation was missed (or errored), 2 if a target line is not found or the clean run fails.
The list covers the bugs of issue 13 and grows with new features: add an entry with the line to
break, the broken version and the test files that must catch it.

Since mutmut runs over the number-computing modules (docs/testing.md), this list keeps only what
mutmut cannot do: semantic one-line bugs its operators never generate (a whole term dropped, one
setting read instead of another), bugs in modules it does not mutate (the training loop,
checkpoints, configuration, evaluation, data readers, plots), and bugs that only a training run
catches (mutmut's per-mutant test selection leaves training-run tests out to stay fast).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "freetickets"

T_KNOWN = "tests/train/test_train_known_answers.py"
T_EVAL = "tests/train/test_evaluate_known_answers.py"
T_FLOPS = "tests/flops/test_flops_table_known.py"
T_STATE = "tests/sparse/test_sparse_state_validation.py"
T_READERS = "tests/data/test_data_reader_branches.py"
T_PLOTS = "tests/report/test_report_plot_data.py"
T_FORMS = "tests/methods/test_efficient_forms.py"
T_EFF = "tests/methods/test_efficient_methods.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to src/freetickets
    old: str  # exact text, once in the file
    new: str
    tests: tuple[str, ...]


MUTATIONS: list[Mutation] = [
    # ---- learning-rate plans and the training step
    Mutation("multistep_lr returns the base rate", "epoch_plans.py",
             "return base_lr * gamma**passed", "return base_lr", (T_KNOWN,)),
    Mutation("multistep milestone off by one epoch", "epoch_plans.py",
             "if epoch >= milestone_epoch(f, epochs))", "if epoch > milestone_epoch(f, epochs))", (T_KNOWN,)),
    Mutation("cosine_lr shifted by one epoch", "epoch_plans.py",
             "math.cos(math.pi * epoch / epochs)", "math.cos(math.pi * (epoch + 1) / epochs)", (T_KNOWN,)),
    Mutation("warm-up factor starts at 0", "epoch_plans.py",
             "return (step + 1) / warmup_steps", "return step / warmup_steps", (T_KNOWN,)),
    Mutation("warm-up made a no-op in the loop", "train/runner.py",
             "lr = spec.lr * warmup_factor(st.global_step, warmup_steps)", "lr = spec.lr", (T_KNOWN,)),
    Mutation("label smoothing ignored", "methods/base.py",
             "return F.cross_entropy(logits.float(), targets, label_smoothing=cfg.label_smoothing)",
             "return F.cross_entropy(logits.float(), targets)", (T_KNOWN,)),
    Mutation("gradient clipping ignored", "train/runner.py",
             "torch.nn.utils.clip_grad_norm_(st.model.parameters(), cfg.grad_clip)", "pass", (T_KNOWN,)),
    Mutation("ticket is the last epoch, not the best", "train/runner.py",
             'or val_acc > st.best["val_accuracy"])', "or True)", (T_KNOWN,)),
    Mutation("--resume guard against changed settings deleted", "train/checkpoint.py",
             "raise UserError(f\"--resume: '{key}' differs from the saved run", "pass  # (f\"", (T_KNOWN,)),
    # ---- sparse schedule, EDST, FLOPs meter
    Mutation("update_end_fraction ignored", "methods/base.py",
             "end_step = max(1, int(cfg.update_end_fraction * setup.total_steps))", "end_step = None", (T_KNOWN,)),
    Mutation("EDST jump moves nothing", "methods/edst.py",
             "engine.update_topology(cfg.jump_fraction)", "engine.update_topology(0.0)", (T_KNOWN,)),
    Mutation("EDST jump with the ordinary prune fraction", "methods/edst.py",
             "engine.update_topology(cfg.jump_fraction)", "engine.update_topology(cfg.prune_fraction)", (T_KNOWN,)),
    Mutation("meter: dense-gradient term for every grow rule", "train/runner.py",
             'grad_growth = st.engine is not None and cfg.grow == "gradient"', "grad_growth = st.engine is not None",
             (T_KNOWN,)),
    Mutation("meter: dense-gradient term never counted", "train/runner.py",
             "dense_grad = grad_growth and st.engine.last_step_was_update", "dense_grad = False", (T_KNOWN,)),
    Mutation("load_state_dict name check deleted", "sparse/engine.py",
             "if set(masks) != set(self._names) or set(ever) != set(self._names):", "if False:", (T_STATE,)),
    Mutation("load_state_dict shape check deleted", "sparse/engine.py",
             "if tuple(masks[name].shape) != tuple(self.masks[name].shape):", "if False:", (T_STATE,)),
    # ---- evaluate
    Mutation("entropy OoD sign flipped", "metrics/ood.py",
             '"msp": 1.0, "entropy": -1.0,', '"msp": 1.0, "entropy": 1.0,', (T_EVAL,)),
    Mutation("mutual-information OoD sign flipped", "metrics/ood.py",
             '"mutual_information": -1.0,', '"mutual_information": 1.0,', (T_EVAL,)),
    Mutation("MSP OoD arguments swapped", "metrics/ood.py",
             'dict(ood_metrics(id_scores["msp"], ood_set_scores["msp"]))',
             'dict(ood_metrics(ood_set_scores["msp"], id_scores["msp"]))', (T_EVAL,)),
    Mutation("corruption ECE of member 0", "evaluation.py",
             '"ece": float(ece(mean, y))})', '"ece": float(ece(p[0], y))})', (T_EVAL,)),
    Mutation("cost counts masked weights", "evaluation.py",
             "nonzero += int(masks[name].sum()) if name in masks else p.numel()", "nonzero += p.numel()", (T_EVAL,)),
    Mutation("cost: inference ratio against training reference", "evaluation.py",
             '"inference_flops_vs_dense": (inf / dense_inf)', '"inference_flops_vs_dense": (inf / ref)', (T_EVAL,)),
    # ---- freetickets flops
    Mutation("flops: RigL dense-gradient term dropped", "flops/plan.py",
             'updates = _update_steps(cfg, steps) if masks == "dynamic" and cfg.structure != "channel" else 0',
             "updates = 0", (T_FLOPS,)),
    Mutation("flops: PF dense-parent cost dropped", "flops/plan.py",
             "    for job in recipe.jobs(cfg):",
             '    for job in [j for j in recipe.jobs(cfg) if j.kind != "parent"]:', (T_FLOPS,)),
    Mutation("flops: EDST inference counted as one member", "flops/plan.py",
             "inference = cfg.num_members * f_s", "inference = f_s if cfg.method == 'edst' else cfg.num_members * f_s",
             (T_FLOPS,)),
    Mutation("flops: dense-gradient term for every grow rule", "flops/plan.py",
             'if cfg.update_interval is None or cfg.grow != "gradient":', "if cfg.update_interval is None:",
             (T_FLOPS,)),
    Mutation("flops: --train-size not checked", "train/config.py",
             '_int("train_size", train_size, 1, allow_none=True)', "pass", (T_FLOPS,)),
    Mutation("flops: own validation instead of train's", "evaluation.py",
             "cfg = validate_flops_flags(base=base, train_size=train_size, **overrides)",
             'cfg = merge(base, overrides, source="arguments")', (T_FLOPS,)),
    Mutation("flops: preset schedule ignored", "evaluation.py",
             '        base = merge(base, values, source=f"preset {preset}")', "        pass", (T_EFF,)),
    # ---- the efficient ensembles (one network holding M members)
    Mutation("MIMO: batch repetitions not counted in training FLOPs", "methods/mimo.py",
             "return cfg.mimo_batch_repetitions * forward, forward", "return forward, forward", (T_FORMS,)),
    Mutation("MIMO: loss is the mean over heads, not their sum", "methods/mimo.py",
             "return cfg.members * super().training_loss(logits, targets, cfg)",
             "return super().training_loss(logits, targets, cfg)", (T_FORMS,)),
    Mutation("BatchEnsemble: rank-1 products not counted", "flops/efficient.py",
             "return float(counter.get_total_flops()) + rank1_flops(model, example)",
             "return float(counter.get_total_flops())", (T_FORMS,)),
    Mutation("BatchEnsemble: training batch not tiled", "methods/batchensemble.py",
             "return tile_batch(x, cfg.members), tile_batch(y, cfg.members)", "return x, y", (T_FORMS,)),
    Mutation("MC dropout: inference counted as one forward", "methods/mcdropout.py",
             "return forward, cfg.members * forward", "return forward, forward", (T_FORMS,)),
    Mutation("MC dropout: member masks not fixed (fresh dropout at test)", "models/mcdropout.py",
             "keep = torch.rand(tuple(shape), generator=generator) >= self.rate",
             "keep = torch.rand(tuple(shape)) >= self.rate", (T_FORMS,)),
    Mutation("model form: members counted as tickets in the manifest", "train/runner.py",
             'manifest["members"] = len(tickets) * per_ticket if complete else manifest["members"]',
             'manifest["members"] = len(tickets) if complete else manifest["members"]', (T_EFF,)),
    # ---- CIFAR / CIFAR-C readers
    Mutation("CIFAR: too few training images accepted", "data/cifar.py",
             "if len(y_train) <= VAL_SIZE:", "if False:", (T_READERS,)),
    Mutation("CIFAR: label range not checked", "data/cifar.py",
             "if y.size and (y.min() < 0 or y.max() >= k):", "if False:", (T_READERS,)),
    Mutation("CIFAR-C: labels stored once sliced per severity", "data/cifar.py",
             "y = self.labels[lo:hi] if self.labels.shape[0] != self.n else self.labels", "y = self.labels[lo:hi]",
             (T_READERS,)),
    Mutation("CIFAR-C: per-severity labels not sliced", "data/cifar.py",
             "y = self.labels[lo:hi] if self.labels.shape[0] != self.n else self.labels", "y = self.labels[:self.n]",
             (T_READERS,)),
    Mutation("CIFAR-C: label range not checked", "data/cifar.py",
             "if labels.size and (labels.min() < 0 or labels.max() >= k):", "if False:", (T_READERS,)),
    # ---- report plots
    Mutation("reliability bars show confidence", "report/plots.py",
             'ax.bar(left, acc[keep], width=width, align="edge", color=_color(method)',
             'ax.bar(left, conf[keep], width=width, align="edge", color=_color(method)', (T_PLOTS,)),
    Mutation("corruption plot drops the clean point", "report/plots.py",
             'xs = ([0] if "accuracy" in stats else []) + sev', "xs = sev", (T_PLOTS,)),
]


def plant(copy: Path, m: Mutation) -> None:
    """Apply ``m`` to the copy; raise SystemExit(2) if its target text is not exactly once there."""
    path = copy / "freetickets" / m.file
    text = path.read_text(encoding="utf-8")
    count = text.count(m.old)
    if count != 1:
        raise SystemExit(f"mutations.py: {m.name!r}: target found {count} times in src/freetickets/{m.file} "
                         f"(expected once): {m.old!r}; update the list")
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")


def run_tests(copy_root: Path, tests: tuple[str, ...]) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(copy_root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def first_failure(output: str) -> str:
    found = re.search(r"^FAILED (\S+)", output, re.M) or re.search(r"^ERROR (\S+)", output, re.M)
    return found.group(1) if found else (output.strip().splitlines() or ["?"])[-1]


def fresh_copy(tmp: Path) -> Path:
    root = tmp / "src"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(PACKAGE, root / "freetickets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", default="", help="only mutations whose name contains this text")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.file}] -> {', '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="ft_mutations_") as tmp:
        tmp = Path(tmp)
        for m in chosen:  # every target exists before anything runs
            plant(fresh_copy(tmp), m)
        root = fresh_copy(tmp)
        probe = subprocess.run([sys.executable, "-c", "import freetickets; print(freetickets.__file__)"],
                               env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(root)):
            raise SystemExit(f"mutations.py: the copy is not the imported package ({probe.stdout.strip()!r})")
        files = tuple(sorted({t for m in chosen for t in m.tests}))
        rc, out, secs = run_tests(root, files)
        if rc != 0:
            print(out[-3000:])
            raise SystemExit(f"mutations.py: the unmodified package fails {', '.join(files)} (rc {rc})")
        print(f"clean run: {len(files)} test files pass ({secs:.0f} s)")
        missed = 0
        total = time.time()
        for i, m in enumerate(chosen, 1):
            root = fresh_copy(tmp)
            plant(root, m)
            rc, out, secs = run_tests(root, m.tests)
            if rc == 1:
                verdict = f"caught by {first_failure(out)}"
            elif rc == 0:
                verdict, missed = "MISSED", missed + 1
            else:
                verdict, missed = f"ERROR rc {rc}: {first_failure(out)}", missed + 1
            print(f"[{i:2d}/{len(chosen)}] {m.name:<52} {secs:5.1f} s  {verdict}", flush=True)
        print(f"{len(chosen) - missed} of {len(chosen)} planted bugs caught ({time.time() - total:.0f} s)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
