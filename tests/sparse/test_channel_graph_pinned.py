"""Known answers of :func:`freetickets.sparse.channel_graph.build_channel_layers`: for small
models, every field of every :class:`ChannelLayer` (counts, the reason a layer keeps its
channels, consumers with their column maps, outgoing weights, per-channel tensors, BatchNorms,
residual units), and the training mode left as it was."""
from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from _sparse_models import ResidualUnit
from torch import nn

from freetickets.sparse.channel_graph import _group, _handler_kind, build_channel_layers

OUTPUT = "it produces the model's output"


def _summary(model: nn.Module, named, x) -> dict[str, dict]:
    """Every field of every layer, with tensors named by their parameter/module names."""
    names = {id(t): n for n, t in model.named_parameters()}
    modules = {id(m): n for n, m in model.named_modules()}
    out = {}
    for layer in build_channel_layers(model, named, x):
        out[layer.name] = {
            "shape": (layer.out_channels, layer.in_columns, layer.cell), "kept": layer.kept_reason,
            "leader": layer.leader, "members": layer.members,
            "consumers": [(j, cols.tolist()) for j, cols in layer.consumers],
            "outgoing": [(names[id(w)], cols.tolist()) for w, cols in layer.outgoing],
            "extras": [(names[id(t)], idx.tolist()) for t, idx in layer.extras],
            "norms": [(modules[id(norm)], idx.tolist()) for norm, idx in layer.norms],
        }
        for _, cols in [*layer.consumers, *layer.outgoing]:
            assert cols.dtype == torch.long
    return out


def _weights(model: nn.Module, *skip: str):
    return [(n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2 and n not in skip]


def _kept(reason: str, shape) -> dict:
    return {"shape": shape, "kept": reason, "leader": None, "members": [], "consumers": [], "outgoing": [],
            "extras": [], "norms": []}


IDENT4, IDENT5 = [[0], [1], [2], [3]], [[0], [1], [2], [3], [4]]


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2, self.out = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc2(torch.relu(self.bn(self.fc1(x))))))


def test_a_linear_chain_known_answer():
    model = _Chain()
    assert _summary(model, _weights(model), torch.zeros(2, 3)) == {
        "fc1.weight": {"shape": (4, 3, 1), "kept": "", "leader": None, "members": [],
                       "consumers": [(1, IDENT4)], "outgoing": [("fc2.weight", IDENT4)],
                       "extras": [("fc1.bias", [0, 1, 2, 3]), ("bn.weight", [0, 1, 2, 3]), ("bn.bias", [0, 1, 2, 3])],
                       "norms": [("bn", [0, 1, 2, 3])]},
        "fc2.weight": {"shape": (5, 4, 1), "kept": "", "leader": None, "members": [],
                       "consumers": [(2, IDENT5)], "outgoing": [("out.weight", IDENT5)],
                       "extras": [("fc2.bias", [0, 1, 2, 3, 4])], "norms": []},
        "out.weight": _kept(OUTPUT, (2, 5, 1)),
    }


def test_a_dense_consumer_counts_in_the_score_but_takes_no_mask():
    model = _Chain()
    layers = _summary(model, _weights(model, "fc2.weight"), torch.zeros(2, 3))
    assert layers["fc1.weight"]["kept"] == "" and layers["fc1.weight"]["consumers"] == []
    assert layers["fc1.weight"]["outgoing"] == [("fc2.weight", IDENT4)]
    assert list(layers) == ["fc1.weight", "out.weight"]


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 12, 3, padding=1, bias=False)
        self.fc = nn.Linear(12 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


def test_convolutions_and_a_flatten_known_answer():
    model = _Conv()
    layers = _summary(model, _weights(model), torch.zeros(2, 1, 16))
    ident8 = [[c] for c in range(8)]
    assert layers["conv1.weight"] == {
        "shape": (8, 1, 5), "kept": "", "leader": None, "members": [], "consumers": [(1, ident8)],
        "outgoing": [("conv2.weight", ident8)], "norms": [("bn1", list(range(8)))],
        "extras": [("conv1.bias", list(range(8))), ("bn1.weight", list(range(8))), ("bn1.bias", list(range(8)))]}
    blocks = torch.arange(192).view(12, 16).tolist()  # channel c feeds the 16 flattened features 16c ... 16c + 15
    assert layers["conv2.weight"] == {
        "shape": (12, 8, 3), "kept": "", "leader": None, "members": [], "consumers": [(2, blocks)],
        "outgoing": [("fc.weight", blocks)], "extras": [], "norms": []}
    assert layers["fc.weight"] == _kept(OUTPUT, (5, 192, 1))


def test_a_residual_unit_known_answer():
    model = ResidualUnit()
    layers = _summary(model, _weights(model), torch.zeros(2, 4))
    ident6, all6 = [[c] for c in range(6)], list(range(6))
    assert layers["stem.weight"] == {
        "shape": (6, 4, 1), "kept": "", "leader": None, "members": [1],
        "consumers": [(1, ident6), (2, ident6)], "outgoing": [("a.weight", ident6), ("b.weight", ident6)],
        "extras": [("stem.bias", all6), ("a.bias", all6), ("bn.weight", all6), ("bn.bias", all6)],
        "norms": [("bn", all6)]}
    assert layers["a.weight"] == {**_kept("", (6, 6, 1)), "leader": 0}
    assert layers["b.weight"]["consumers"] == [(3, IDENT5)] and layers["b.weight"]["leader"] is None
    assert layers["out.weight"] == _kept(OUTPUT, (3, 5, 1))


def test_a_residual_partner_outside_the_sparse_set_keeps_the_stream():
    model = ResidualUnit()
    layers = _summary(model, _weights(model, "a.weight"), torch.zeros(2, 4))
    ident6 = [[c] for c in range(6)]
    assert layers["stem.weight"] == {  # kept, but its consumer's columns still follow it
        **_kept("its output joins the output of a layer that is not sparse (residual addition)", (6, 4, 1)),
        "consumers": [(1, ident6)], "outgoing": [("a.weight", ident6), ("b.weight", ident6)]}
    assert layers["b.weight"]["kept"] == ""


class _Cat(nn.Module):
    """Linear(3, hidden) -> ReLU -> the activation concatenated with itself -> Linear(2 * hidden, out)."""

    def __init__(self, hidden: int = 4, out: int = 2) -> None:
        super().__init__()
        self.f, self.g = nn.Linear(3, hidden), nn.Linear(2 * hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.f(x))
        return self.g(torch.cat([h, h], 1))


def test_a_channel_feeding_two_columns_after_a_concatenation():
    model = _Cat()
    layers = _summary(model, _weights(model), torch.zeros(2, 3))
    assert layers["f.weight"]["consumers"] == [(1, [[0, 4], [1, 5], [2, 6], [3, 7]])]


class _Broadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f, self.one, self.g = nn.Linear(3, 4), nn.Linear(3, 1), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(torch.relu(self.f(x) + self.one(x)))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(2, 4, 3), nn.Conv1d(4, 4, 3, groups=2)
        self.c3, self.gn, self.c4 = nn.Conv1d(4, 4, 1), nn.GroupNorm(2, 4), nn.Conv1d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c3(self.c2(torch.relu(self.c1(x))))
        return self.c4(torch.relu(self.gn(h))).mean(2)


class _Bare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w, self.v, self.g = nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(4)), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(torch.relu(x @ self.w.t() + self.v))


@pytest.mark.filterwarnings("ignore")
def test_why_a_layer_keeps_its_channels():
    model = _Broadcast()
    layers = _summary(model, _weights(model), torch.zeros(2, 3))
    order = "its output joins another layer's output with a different channel order"
    assert layers["f.weight"] == _kept(order, (4, 3, 1)) and layers["one.weight"] == _kept(order, (1, 3, 1))

    model = _Grouped()
    layers = _summary(model, _weights(model), torch.zeros(2, 2, 8))
    assert layers["c1.weight"] == _kept("a grouped convolution consumes it", (4, 2, 3))
    assert layers["c2.weight"] == _kept("grouped convolution", (4, 2, 3))
    group_norm = "its channels reach GroupNorm, which cannot drop one channel exactly"
    assert layers["c3.weight"] == _kept(group_norm, (4, 4, 1))
    assert layers["c4.weight"] == _kept(OUTPUT, (3, 4, 1))

    model = _Bare()
    named = [(n, p) for n, p in model.named_parameters() if n in ("w", "v", "g.weight")]
    layers = _summary(model, named, torch.zeros(2, 3))
    assert layers["w"] == _kept("it is not a Conv/Linear weight", (4, 3, 1))
    assert layers["v"] == _kept("it is not a Conv/Linear weight", (4, 1, 1))  # a vector: one column


@pytest.mark.parametrize("training", [True, False])
def test_tracing_leaves_the_training_mode_and_batchnorm_statistics_alone(training):
    model = _Chain().train(training)
    before = model.bn.running_mean.clone()
    build_channel_layers(model, _weights(model), torch.randn(4, 3))
    assert model.training is training and model.bn.training is training
    assert torch.equal(model.bn.running_mean, before) and int(model.bn.num_batches_tracked) == 0


def test_handler_kind_names_out_and_in_channel_pruning():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(2, 3))
    kinds = {(dep.target.module, _handler_kind(dep.handler)) for dep, _ in _group(dg, model[0], 0)}
    assert (model[0], "out") in kinds and (model[1], "in") in kinds

    def prune_something():
        return None

    assert _handler_kind(prune_something) == "prune_something"
    assert _handler_kind(object()) == ""  # no __name__


class _Parallel(nn.Module):
    """Two branches on the input added together: a unit whose member reads the input, not the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.f, self.h, self.g = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(torch.relu(self.f(x) + self.h(x)))


def test_parallel_branches_added_together_form_one_unit():
    model = _Parallel()
    layers = _summary(model, _weights(model), torch.zeros(2, 3))
    assert layers["f.weight"] == {
        "shape": (4, 3, 1), "kept": "", "leader": None, "members": [1], "consumers": [(2, IDENT4)],
        "outgoing": [("g.weight", IDENT4)], "extras": [("f.bias", [0, 1, 2, 3]), ("h.bias", [0, 1, 2, 3])], "norms": []}
    assert layers["h.weight"] == {**_kept("", (4, 3, 1)), "leader": 0}


class _TwoConsumers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f, self.g1, self.g2 = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.f(x))
        return self.g1(h) + self.g2(torch.cat([h, h], 1))


def test_each_consumer_gets_its_own_column_map():
    model = _TwoConsumers()
    layers = _summary(model, _weights(model), torch.zeros(2, 3))
    cat = [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert layers["f.weight"]["consumers"] == [(1, IDENT4), (2, cat)]
    assert layers["f.weight"]["outgoing"] == [("g1.weight", IDENT4), ("g2.weight", cat)]
    model = _Cat(hidden=1)  # a single channel feeding two columns
    assert _summary(model, _weights(model), torch.zeros(2, 3))["f.weight"]["consumers"] == [(1, [[0, 1]])]


class _Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f, self.g, self.k = nn.Linear(3, 4), nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(torch.relu(self.f(x)), 2, 1)
        return self.g(a) + self.k(b)


class _Offset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f, self.offset, self.g = nn.Linear(3, 4), nn.Parameter(torch.randn(4)), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(torch.relu(self.f(x) + self.offset))


@pytest.mark.filterwarnings("ignore")
def test_irregular_column_maps_and_added_parameters_keep_the_channels():
    model = _Split()  # channels 0-1 feed g, 2-3 feed k: no equal-sized column blocks per consumer
    layers = _summary(model, _weights(model), torch.zeros(2, 3))
    assert layers["f.weight"] == _kept("its channels map irregularly onto Linear inputs", (4, 3, 1))
    assert list(layers) == ["f.weight", "g.weight", "k.weight"]
    model = _Offset()  # a removed channel would still output its offset
    layers = _summary(model, _weights(model), torch.zeros(2, 3))
    assert layers["f.weight"] == _kept("its channels reach Parameter, which cannot drop one channel exactly", (4, 3, 1))
