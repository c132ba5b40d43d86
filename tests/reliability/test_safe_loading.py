"""Safe loading: every torch file is read with ``weights_only=True``. A checkpoint or ticket that
carries a pickled object (here: one whose unpickling would create a file) is refused with one
line naming the file, and the file is NOT created; truncated or garbage files give one clear line."""
from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from freetickets.cli.main import main
from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.tickets import load_ticket
from freetickets.errors import UnsafeFileError, UserError
from freetickets.train import train
from freetickets.utils.io import safe_torch_load

from _reliability_helpers import Interrupt, StepCounter, config

SRC = Path(__file__).resolve().parents[2] / "src" / "freetickets"


class _TouchViaSystem:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _TouchViaOpen:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_payloads(marker: Path) -> dict[str, bytes]:
    """Files that would create ``marker`` if unpickled: torch's zip format with a checkpoint-like
    or ticket-like header, and the legacy (non-zip) pickle format."""
    out = {}
    for name, obj in {"system": _TouchViaSystem(marker), "open": _TouchViaOpen(marker)}.items():
        for kind, header in {"checkpoint": {"format": "freetickets-checkpoint", "version": 1},
                             "ticket": {"format": "freetickets-ticket", "version": 1}}.items():
            path = marker.parent / f"{kind}-{name}.pt"
            torch.save({**header, "run_state": obj, "meta": obj}, path)
            out[f"{kind}-{name}"] = path.read_bytes()
    out["legacy-pickle"] = pickle.dumps({"format": "freetickets-checkpoint", "x": _TouchViaSystem(marker)})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A complete run and an interrupted one (with a checkpoint, status running)."""
    root = tmp_path_factory.mktemp("safe")
    complete, partial = root / "complete", root / "partial"
    with pytest.MonkeyPatch.context() as mp:
        torch.set_num_threads(1)
        train(config("static", members=2, epochs=1), complete)
        StepCounter(mp, stop_at=8)
        with pytest.raises(Interrupt):
            train(config("static", members=2, epochs=1, checkpoint_every_steps=3), partial)
    assert (partial / "checkpoint.pt").is_file()
    return complete, partial


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _one_error_line(err: str, must_contain: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert must_contain in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("payload", ["checkpoint-system", "checkpoint-open", "legacy-pickle"])
def test_resume_refuses_a_pickled_checkpoint(payload, runs, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = _copy(runs[1], tmp_path / "run")
    (run / "checkpoint.pt").write_bytes(_evil_payloads(marker)[payload])
    assert main(["train", "--out", str(run), "--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err, str(run / "checkpoint.pt"))
    assert "refused" in line
    assert not marker.exists()
    with pytest.raises(UnsafeFileError):
        safe_torch_load(run / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["ticket-system", "ticket-open"])
def test_evaluate_and_ensemble_refuse_a_pickled_ticket(payload, runs, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = _copy(runs[0], tmp_path / "run")
    ticket = run / "tickets" / "member_1.pt"
    ticket.write_bytes(_evil_payloads(marker)[payload])
    assert main(["evaluate", str(run), "--json"]) == 2
    line = _one_error_line(capsys.readouterr().err, str(ticket))
    assert "refused" in line
    with pytest.raises(UnsafeFileError, match=re.escape(str(ticket))):
        Ensemble.load(run)
    with pytest.raises(UnsafeFileError):
        load_ticket(ticket)
    assert not marker.exists()


def test_pf_refuses_a_pickled_parent(tmp_path, capsys):
    """The dense parent that PF prunes is read as a ticket too."""
    marker = tmp_path / "PWNED"
    parents = tmp_path / "parents"
    train(config("deep", members=1, epochs=1), parents)
    (parents / "tickets" / "member_0.pt").write_bytes(_evil_payloads(marker)["ticket-system"])
    rc = main(["train", "--out", str(tmp_path / "pf"), "--method", "pf", "--from", str(parents), "--members", "1",
               "--model", "mlp", "--num-samples", "1000", "--pf-epochs", "1", "--device", "cpu"])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "refused")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "not-a-checkpoint"])
def test_damaged_checkpoint_is_one_clear_line(damage, runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(2000))
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    assert main(["train", "--out", str(run), "--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err, str(ckpt))
    assert any(why in line for why in ("corrupt or truncated", "not a plain-data torch file",
                                        "not a freetickets checkpoint")), line


def test_truncated_ticket_is_one_clear_line(runs, tmp_path, capsys):
    run = _copy(runs[0], tmp_path / "run")
    ticket = run / "tickets" / "member_0.pt"
    ticket.write_bytes(ticket.read_bytes()[:100])
    assert main(["evaluate", str(run)]) == 2
    _one_error_line(capsys.readouterr().err, str(ticket))
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_ticket(ticket)


def test_every_torch_load_in_the_package_goes_through_safe_torch_load():
    """No other ``torch.load``/``pickle.load`` in the package (``code`` in docstrings is fine; the
    CIFAR reader's restricted ``pickle.Unpickler`` subclass is not a ``pickle.load`` call)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"(?<!`)(?:torch\.load\(|pickle\.loads?\(|np\.load\([^)]*allow_pickle=True)", text):
            if path.name == "io.py" and path.parent.name == "utils" and m.group(0) == "torch.load(":
                continue
            offenders.append(f"{path.relative_to(SRC)}: {m.group(0)}")
    assert offenders == []
