"""Atomic writes and run-directory states: a write that fails (full disk, no permission) ends the
run with one line naming the file, leaves the previous version intact and no temporary file; the
manifest says ``running`` until the run is complete, and ``evaluate`` refuses an incomplete run."""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch

import freetickets.train.rundir as rundir_mod
from freetickets.cli.main import main
from freetickets.train import train
from freetickets.utils.io import safe_torch_load

from _reliability_helpers import Interrupt, StepCounter, assert_same_tickets, cli_args, config

SRC = Path(__file__).resolve().parents[2] / "src" / "freetickets"


def _fail_nth_write(monkeypatch, target: str, nth: int, how: str) -> dict:
    """Make the ``nth`` atomic write of a file named ``target`` fail: ``how="enospc"`` fails the
    final rename with ENOSPC (after the temporary file was written), ``how="torch"`` fails inside
    ``torch.save`` the way torch reports a full disk (RuntimeError from its zip writer)."""
    state = {"count": 0, "before": None}
    real_replace, real_save = os.replace, torch.save

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == target:
            state["count"] += 1
            if state["count"] == nth:
                state["before"] = Path(dst).read_bytes() if Path(dst).is_file() else None
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    def save(obj, f, *args, **kwargs):
        assert target == "checkpoint.pt"
        if isinstance(obj, dict) and obj.get("format") == "freetickets-checkpoint":
            state["count"] += 1
            if state["count"] == nth:
                final = state["run"] / target
                state["before"] = final.read_bytes() if final.is_file() else None
                raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed "
                                   "writing file data/3: file write failed")
        return real_save(obj, f, *args, **kwargs)

    if how == "enospc":
        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(torch, "save", save)
    return state


@pytest.mark.parametrize("target, nth, how", [
    ("checkpoint.pt", 3, "enospc"),
    ("checkpoint.pt", 4, "torch"),
    ("member_1.pt", 2, "enospc"),
    ("manifest.json", 2, "enospc"),
])
def test_failed_write_is_one_line_and_keeps_the_previous_file(target, nth, how, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    train(config("dst"), ref)
    run = tmp_path / "run"
    state = _fail_nth_write(monkeypatch, target, nth, how)
    state["run"] = run
    assert main(["train", "--out", str(run), *cli_args("dst", checkpoint_every_steps=4)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert target in errors[0] and "cannot write" in errors[0] and "intact" in errors[0], errors[0]
    final = next(run.rglob(target))
    assert final.read_bytes() == state["before"]  # the previous version, untouched
    assert not list(run.rglob(".*.tmp"))
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    safe_torch_load(run / "checkpoint.pt")
    monkeypatch.undo()
    torch.set_num_threads(1)
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert_same_tickets(ref, run)


def test_unwritable_output_directory_fails_before_any_work(tmp_path, monkeypatch, capsys):
    def no_permission(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    counter = StepCounter(monkeypatch)
    monkeypatch.setattr(rundir_mod.tempfile, "mkstemp", no_permission)
    out = tmp_path / "ro"
    assert main(["train", "--out", str(out), *cli_args("dst")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"freetickets: error: --out: cannot write in {out}: Permission denied"]
    assert counter.steps == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_resume_fails_cleanly(tmp_path, capsys):
    run = tmp_path / "run"
    train(config("static", epochs=1, members=1), run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    run.chmod(0o500)
    try:
        assert main(["train", "--out", str(run), "--resume"]) == 2
    finally:
        run.chmod(0o700)
    assert "cannot write" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_output_path_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["train", "--out", str(path), *cli_args("dst")]) == 2
    assert capsys.readouterr().err.strip() == f"freetickets: error: --out: {path} exists and is not a directory"
    assert path.read_text() == "x"


def test_manifest_is_running_until_complete_and_evaluate_refuses(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    seen = []
    train(config("edst"), run, callback=lambda row: seen.append(
        json.loads((run / "manifest.json").read_text())["status"]))
    assert seen and set(seen) == {"running"}
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"

    partial = tmp_path / "partial"
    StepCounter(monkeypatch, stop_at=30)
    with pytest.raises(Interrupt):
        train(config("edst"), partial)
    assert json.loads((partial / "manifest.json").read_text())["status"] == "running"
    capsys.readouterr()
    assert main(["evaluate", str(partial), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not complete" in err[0] and "--resume" in err[0], err


def test_resume_of_a_directory_killed_before_its_first_file(tmp_path):
    """A run killed during setup leaves an empty directory (or none): --resume starts it."""
    run = tmp_path / "run"
    (run / "tickets").mkdir(parents=True)
    assert main(["train", "--out", str(run), "--resume", *cli_args("static", epochs=1, members=1)]) == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"


# Writers allowed to touch files directly, and why.
_ALLOWED_WRITES = {
    "utils/io.py": "the atomic writers themselves",
    "data/download.py": "downloads go to a temporary file renamed after the MD5 check; archive extraction",
}


def _direct_write(code: str) -> bool:
    """Whether a line of code writes a file other than through ``freetickets.utils.io``: writing
    into the in-memory buffer or the file object an atomic writer hands out (``buf``, ``f``) is fine."""
    if re.search(r"open\([^)]*['\"][wax]b?\+?['\"]", code) or re.search(r"\.write_(text|bytes)\(|json\.dump\(", code):
        return True
    m = re.search(r"(torch\.save|np\.savez?(?:_compressed)?|\.savefig)\((.*)\)", code)
    if m is None:
        return False
    args = [a.strip() for a in m.group(2).split(",")]
    target = args[-1] if m.group(1) == "torch.save" and len(args) > 1 else args[0]
    return target.split("=")[-1].strip() not in ("f", "buf", "buffer")


def test_every_writer_goes_through_utils_io():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in _ALLOWED_WRITES:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if "``" not in code and _direct_write(code):
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert offenders == []
    assert _direct_write("torch.save(obj, path)") and _direct_write("open(p, 'w')")  # the check works
