"""Tiny models for the sparse-engine tests (independent of freetickets.models)."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    input_shape = (20,)

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1d(nn.Module):
    input_shape = (1, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 12, 3, padding=1, bias=False)
        self.fc = nn.Linear(12 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


class CNN2d(nn.Module):
    input_shape = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x)).mean(dim=(2, 3))
        return self.fc(x)


class GroupedCNN(nn.Module):
    """Grouped and depthwise convolutions (weight shape (out, in/groups, kh, kw))."""

    input_shape = (4, 6, 6)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.norm(self.dw(x))).mean(dim=(2, 3))
        return self.fc(x)


class ERKDenseModel(nn.Module):
    """Small layers next to a big one: ERK at 0.5 sparsity makes ``small`` and ``out`` dense."""

    input_shape = (2,)

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Linear(2, 64)
        self.big = nn.Linear(64, 64)
        self.out = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.big(torch.relu(self.small(x)))))


class ResidualUnit(nn.Module):
    """Inputs (B, 4). ``stem`` and ``a`` add their outputs (one channel unit through the BatchNorm),
    ``b`` follows the stream, ``out`` (the logits) is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b, self.out = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 5), nn.Linear(5, 3)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(self.bn(h + self.a(torch.relu(h))))
        return self.out(torch.relu(self.b(h)))


ARCHITECTURES = {"mlp": MLP, "cnn1d": CNN1d, "cnn2d": CNN2d, "grouped": GroupedCNN, "erk_dense": ERKDenseModel}


def batch(model: nn.Module, index: int, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic batch number ``index`` for ``model`` (independent of the global RNG)."""
    g = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(size, *model.input_shape, generator=g)
    y = torch.randint(0, 5 if not isinstance(model, ERKDenseModel) else 3, (size,), generator=g)
    return x, y
