"""Runs every Python example of docs/using-in-your-loop.md (each in a fresh namespace).

A block whose first line is ``# requires: pkg ...`` is skipped when a package is missing."""
from __future__ import annotations

import importlib.util
import logging
import re
import socket
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "using-in-your-loop.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
TITLES = ["plain", "channel", "transformer", "amp", "accumulation", "ddp", "lightning", "transformers"]


def test_page_has_the_documented_examples():
    assert len(BLOCKS) == len(TITLES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("index", range(len(TITLES)), ids=TITLES)
def test_example_runs(index, monkeypatch, tmp_path):
    code = BLOCKS[index]
    first = code.splitlines()[0]
    if first.startswith("# requires:"):
        for pkg in first.split(":", 1)[1].split():
            if importlib.util.find_spec(pkg) is None:
                pytest.skip(f"{pkg} not installed")
    if TITLES[index] == "ddp":
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    if TITLES[index] == "amp":
        import torch

        try:
            with torch.autocast("cpu", dtype=torch.float16):
                torch.nn.Linear(2, 2)(torch.zeros(1, 2))
            torch.amp.GradScaler("cpu")
        except (RuntimeError, TypeError, AttributeError) as exc:  # pragma: no cover - older builds
            pytest.skip(f"fp16 autocast / GradScaler unsupported on this CPU build: {exc}")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    monkeypatch.chdir(tmp_path)  # frameworks may write files into the working directory
    exec(compile(code, f"{PAGE.name}[{TITLES[index]}]", "exec"), {"__name__": "__doc_example__"})
