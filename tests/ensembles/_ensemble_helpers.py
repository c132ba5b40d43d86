"""Tiny models and helpers shared by the ensemble tests (kept small: tests must be fast)."""
from __future__ import annotations

import json

import torch
from torch import nn

from freetickets.ensembles.tickets import save_ticket


class TinyNet(nn.Module):
    """(B, 2, 12) -> conv -> BN -> ReLU -> flatten -> linear -> (B, 5) logits."""

    def __init__(self, channels: int = 6, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, channels, 3, padding=1)
        self.bn = nn.BatchNorm1d(channels)
        self.fc = nn.Linear(channels * 12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def random_masks(model: nn.Module, density: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Exact-density random masks for the weights of Conv/Linear layers."""
    masks = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            w = mod.weight
            n = w.numel()
            k = round(density * n)
            flat = torch.zeros(n, dtype=torch.bool)
            flat[torch.randperm(n, generator=generator)[:k]] = True
            masks[f"{mod_name}.weight" if mod_name else "weight"] = flat.reshape(w.shape)
    return masks


def trained_member(seed: int, model_fn=TinyNet, density: float = 0.3, input_shape=(2, 12)):
    """A member with random weights, applied masks and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = model_fn()
    g = torch.Generator().manual_seed(seed)
    masks = random_masks(model, density, g)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
        model.train()
        for _ in range(3):  # update running statistics
            model(torch.randn(16, *input_shape, generator=g) * 2 + 0.5)
    model.eval()
    return model, masks


def make_run(tmp_path, status="complete", members=3):
    """A completed run directory with `members` cnn1d (width 8) tickets; returns (run, models)."""
    from freetickets.models.registry import create_model

    run = tmp_path / "run"
    (run / "tickets").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    models, entries = [], []
    for k in range(members):
        torch.manual_seed(k)
        model = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8)
        masks = random_masks(model, 0.2, g)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in masks:
                    p.masked_fill_(~masks[n], 0.0)
            model.train()
            model(torch.randn(32, 1, 40, generator=g))
        model.eval()
        save_ticket(run / "tickets" / f"member_{k}.pt", model, masks, {"seed": k})
        models.append(model)
        entries.append({"file": f"tickets/member_{k}.pt", "member": k, "seed": k})
    manifest = {"format": "freetickets-run", "version": 1, "status": status, "model": "cnn1d",
                "model_kwargs": {"width": 8}, "num_classes": 10, "input_shape": [1, 40],
                "members": members, "tickets": entries}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run, models
