"""Which parameters are sparse: the default set (attention included) and include/exclude."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from freetickets.sparse import SparseEngine, layer_active_counts, sparsifiable_parameters

from _sparse_models import CNN2d


class TinyTransformer(nn.Module):
    """Embedding -> 2-layer nn.TransformerEncoder (packed in_proj) -> linear head."""

    def __init__(self, vocab: int = 11, d: int = 16, heads: int = 2, ff: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(tokens)).mean(dim=1))


class CrossAttention(nn.Module):
    """kdim/vdim != embed_dim: separate q/k/v projection weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=4, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, q, k, v):
        return self.head(self.attn(q, k, v, need_weights=False)[0].mean(dim=1))


def _names(model, **kw):
    return [n for n, _ in sparsifiable_parameters(model, **kw)]


def test_transformer_every_2d_weight_sparse_by_default():
    model = TinyTransformer()
    names = _names(model)
    two_d = [n for n, p in model.named_parameters() if p.dim() >= 2 and n != "emb.weight"]
    assert names == two_d  # in_proj, out_proj, linear1, linear2 of both layers, and the head
    assert "encoder.layers.0.self_attn.in_proj_weight" in names
    assert "encoder.layers.1.self_attn.out_proj.weight" in names
    assert not any(n.endswith("bias") or "norm" in n or n.startswith("emb") for n in names)


def test_separate_qkv_projections_are_sparse_with_their_own_shapes():
    model = CrossAttention()
    names = _names(model)
    assert names == ["attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight", "attn.out_proj.weight", "head.weight"]
    engine = SparseEngine(model, None, sparsity=0.5)
    shapes = {n: tuple(p.shape) for n, p in sparsifiable_parameters(model)}
    assert shapes["attn.k_proj_weight"] == (8, 6) and shapes["attn.v_proj_weight"] == (8, 4)
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == layer_active_counts(shapes, 0.5, "erk")


@pytest.mark.parametrize("regrow_pruned", [False, True])
def test_transformer_exact_counts_after_updates(regrow_pruned):
    """ERK by each parameter's shape (packed in_proj = one (3d, d) layer); counts exact after every
    gradient-growth update; masked weights exactly 0; forward still uses the masked in_proj."""
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine = SparseEngine(model, opt, sparsity=0.8, update_interval=2, regrow_pruned=regrow_pruned)
    shapes = {n: tuple(p.shape) for n, p in sparsifiable_parameters(model)}
    assert shapes["encoder.layers.0.self_attn.in_proj_weight"] == (48, 16)
    counts = layer_active_counts(shapes, 0.8, "erk")
    g = torch.Generator().manual_seed(3)
    params = dict(model.named_parameters())
    for i in range(6):
        tokens = torch.randint(0, 11, (4, 7), generator=g)
        y = torch.randint(0, 5, (4,), generator=g)
        before = {n: m.clone() for n, m in engine.masks.items()}
        F.cross_entropy(model(tokens), y).backward()
        opt.step()
        engine.step()
        opt.zero_grad()
        assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts
        for n, m in engine.masks.items():
            assert bool((params[n].detach()[~m] == 0).all()), n
        if engine.last_step_was_update:
            assert any(not torch.equal(before[n], engine.masks[n]) for n in engine.masks)
    assert engine.update_count == 3
    sparse_share = sum(p.numel() for n, p in params.items() if n in engine.masks) / sum(p.numel() for p in params.values())
    assert sparse_share > 0.85


def test_exclude_keeps_a_layer_dense_and_include_adds_embeddings():
    model = TinyTransformer()
    names = _names(model, exclude=["head.weight", "encoder.layers.*.linear2.weight"])
    assert "head.weight" not in names and not any(n.endswith("linear2.weight") for n in names)
    assert "encoder.layers.0.linear1.weight" in names
    names = _names(model, include=["emb.weight"])
    assert names[0] == "emb.weight"  # named_parameters order
    engine = SparseEngine(model, None, sparsity=0.5, include=["emb.weight"], exclude=["*.self_attn.*"])
    assert "emb.weight" in engine.masks and not any("self_attn" in n for n in engine.masks)
    assert engine.include == ["emb.weight"] and engine.exclude == ["*.self_attn.*"]
    assert engine.state_dict()["config"]["exclude"] == ["*.self_attn.*"]


def test_exclude_wins_over_include():
    assert "emb.weight" not in _names(TinyTransformer(), include=["emb.*"], exclude=["emb.weight"])


def test_cnn_first_conv_dense():
    engine = SparseEngine(CNN2d(), None, sparsity=0.8, exclude=["conv1.weight"])
    assert sorted(engine.masks) == ["conv2.weight", "fc.weight"]
    model = CNN2d()
    assert engine.nonzero_params() == sum(engine.masks[n].sum().item() for n in engine.masks) + sum(
        p.numel() for n, p in model.named_parameters() if n not in engine.masks)


@pytest.mark.parametrize("kwargs,match", [
    ({"exclude": ["conv9.weight"]}, r"exclude pattern 'conv9.weight' matches no sparse parameter; names that exist: conv1.weight"),
    ({"exclude": ["bn1.weight"]}, r"exclude pattern 'bn1.weight' matches no sparse parameter"),
    ({"include": ["embedding*"]}, r"include pattern 'embedding\*' matches no parameter with >= 2 dimensions; names that exist: conv1.weight"),
    ({"include": ["bn1.*"]}, r"include pattern 'bn1.\*' matches only parameters with fewer than 2 dimensions \(bn1.weight, bn1.bias\)"),
    ({"exclude": "conv1.weight"}, r"exclude must be a list of fnmatch patterns"),
    ({"include": [""]}, r"include: every pattern must be a non-empty string"),
    ({"exclude": ["*.weight"]}, r"no sparsifiable layer left"),
])
def test_bad_patterns(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseEngine(CNN2d(), None, sparsity=0.5, **kwargs)


def test_unmatched_pattern_lists_similar_names_first():
    with pytest.raises(ValueError, match=r"names that exist: encoder.layers.0.linear1.weight, encoder.layers.1.linear1.weight"):
        sparsifiable_parameters(TinyTransformer(), exclude=["layers.*.linear1"])
