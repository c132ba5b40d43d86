"""The run directory (design §2.3): paths, manifest, config and metrics files.

Results describe themselves: the manifest records what the run was (method, model, data, seeds,
sparsity, tickets, FLOPs), so nothing ever parses a path to learn it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from freetickets import __version__
from freetickets.errors import UserError
from freetickets.train.runlock import LOCK_NAME, describe_holder, holder
from freetickets.utils.io import append_line, atomic_write_json, atomic_write_text, read_json

MANIFEST_FORMAT = "freetickets-run"
MANIFEST_VERSION = 1


class RunDir:
    """Paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def tickets(self) -> Path:
        return self.root / "tickets"

    @property
    def parents(self) -> Path:
        return self.root / "parents"

    def ticket(self, index: int) -> Path:
        return self.tickets / f"member_{index}.pt"

    def parent(self, index: int) -> Path:
        return self.parents / f"member_{index}.pt"

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, *, resume: bool, overwrite: bool) -> None:
        """Create the directory, or check that it may be resumed or overwritten."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out: {self.root} exists and is not a directory")
        # A run that failed during setup (bad --from, data or model) leaves only an empty tickets/
        # folder: that is not a run, so a corrected command may reuse the directory.
        # The lock file (runlock.LOCK_NAME) is taken before this runs and is not part of a run either.
        existing = self.root.is_dir() and any(
            not (c.name == "tickets" and c.is_dir() and not any(c.iterdir())) and c.name != LOCK_NAME
            for c in self.root.iterdir()
        )
        if resume:
            if self.config.is_file():
                self._probe_writable()
                self._remove_partial_writes()
                return
            if existing:
                raise UserError(f"--resume: {self.root} holds no run to resume (no config.yaml)")
            # Killed before its first file was written (or never started): resuming starts it, so
            # the same command line can be re-run after any interruption.
        self._probe_writable()
        if existing:
            if not overwrite:
                raise UserError(f"--out: {self.root} already exists; use --resume to continue it or --overwrite to replace it")
            if not self.manifest.is_file() and not self.config.is_file():
                raise UserError(f"--overwrite: {self.root} is not a freetickets run directory; refusing to delete it")
            for child in self.root.iterdir():
                if child.name == LOCK_NAME:
                    continue  # held by this process
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.tickets.mkdir(exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out: cannot create {self.root}: {exc.strerror}") from None
        self._probe_writable()

    def _remove_partial_writes(self) -> None:
        """Delete temporary files of atomic writes cut short by a kill (``.NAME.*.tmp``); the files
        under their final names are complete (the previous version or the new one)."""
        from freetickets.train.trajectories import TRAJECTORY_DIR

        for folder in (self.root, self.tickets, self.parents, self.root / TRAJECTORY_DIR):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    try:
                        tmp.unlink()
                    except OSError:
                        pass

    def _probe_writable(self) -> None:
        """Fail now, with one line, if the directory cannot take new files (read-only, no
        permission, full disk), rather than after the first epoch; nothing existing is touched."""
        if not self.root.is_dir():
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=self.root)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as exc:
            raise UserError(f"--out: cannot write in {self.root}: {exc.strerror or exc}") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest, manifest)

    def read_manifest(self) -> dict[str, Any]:
        m = read_json(self.manifest)
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
            raise UserError(f"{self.manifest}: not a freetickets run manifest")
        return m

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config, text)

    def log_metrics(self, row: dict[str, Any]) -> None:
        append_line(self.metrics, json.dumps(row, sort_keys=False))

    def truncate_metrics(self, rows: int) -> None:
        """Keep the first ``rows`` complete rows of ``metrics.jsonl`` (atomically): on resume, the
        rows logged after the checkpoint are dropped because those epochs run again."""
        if not self.metrics.is_file():
            return
        kept = [line for line in self.metrics.read_text(encoding="utf-8").splitlines() if _is_json(line)][:rows]
        atomic_write_text(self.metrics, "".join(line + "\n" for line in kept))


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return bool(line.strip())


def check_readable(run_dir: str | Path, manifest: dict[str, Any], *, partial: bool = False) -> None:
    """Refuse (one line) to read a run that a live ``freetickets train`` is writing, or that is
    not complete, unless ``partial``: then the tickets the manifest lists so far are used (the
    members finished so far; EDST lists its tickets when the run ends)."""
    root = Path(run_dir)
    who = holder(root)
    status = manifest.get("status")
    if partial:
        if not manifest.get("tickets"):
            raise UserError(f"{root}: --partial: no tickets listed in the manifest yet (status '{status}')")
        return
    if who is not None:
        raise UserError(f"{root}: the run is still being trained ({describe_holder(who)}); wait for it to finish, "
                        "or pass --partial to use the tickets written so far")
    if status != "complete":
        raise UserError(f"{root}: the run is not complete (status '{status}'); finish it with `freetickets train --resume --out {root}` "
                        "(or pass --partial to use the tickets written so far)")


def load_complete_manifest(run_dir: str | Path, *, partial: bool = False) -> dict[str, Any]:
    """The manifest of a completed run (with ``partial``: of any run with tickets), or a one-line
    :class:`UserError` (see :func:`check_readable`)."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise UserError(f"{rd.root}: run directory not found")
    if not rd.manifest.is_file():
        who = holder(rd.root)  # a train that is still setting the directory up has written none yet
        if who is not None:
            raise UserError(f"{rd.root}: the run is still being trained ({describe_holder(who)}); it has written "
                            "no manifest yet, wait for it")
        raise UserError(f"{rd.root}: not a freetickets run directory (no manifest.json)")
    m = rd.read_manifest()
    check_readable(rd.root, m, partial=partial)
    return m


def git_revision() -> str | None:
    """The git revision of the installed source tree, if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and rev else None


def new_manifest(cfg_dict: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...], normalization=None) -> dict[str, Any]:
    from freetickets.methods import get_recipe

    method = cfg_dict["method"]
    recipe = get_recipe(method)
    members = cfg_dict["members"] if recipe.ensemble else 1
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "method": method,
        "status": "running",
        "model": cfg_dict["model"],
        "model_kwargs": cfg_dict.get("model_kwargs") or {},
        "data": cfg_dict["data"],
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "normalization": normalization,
        "members": members,
        "seeds": recipe.seeds(cfg_dict["seed"], members),
        "sparsity": cfg_dict["sparsity"] if recipe.sparse else 0.0,
        **({"structure": "channel"} if cfg_dict.get("structure") == "channel" else {}),  # absent: unstructured
        "model_form": recipe.model_form(cfg_dict),  # None, or how Ensemble.load rebuilds a MIMO/BE/MC-dropout net
        "package_version": __version__,
        "git_revision": git_revision(),
        "tickets": [],
        "flops": {},
    }
