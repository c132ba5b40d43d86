"""Memory-layout rewrites of BatchNorm-folded ``torch.fx`` graphs for the packed forward.

All keep the outputs exactly (up to float rounding order) and are applied by
:class:`freetickets.ensembles.packed.PackedMembers` to its own deep copies: in-place ReLUs where
nothing else reads their input, zero-padded convolution channels where oneDNN's blocked kernels
run faster (measured, see ``CHANNEL_BLOCK``), and channels-last memory for every convolution
(:func:`channels_last`); and a softmax over few classes computed on a transposed view
(:func:`class_softmax`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from freetickets.models._efficient_common import set_submodule

__all__ = ["CHANNEL_BLOCK", "ChannelsLastConv1d", "channels_last", "class_softmax", "pad_conv_channels", "relu_in_place"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_FRESH_MODULES = (nn.Linear, *_CONVS, nn.BatchNorm1d, nn.BatchNorm2d)


def _fresh_input(node: fx.Node, fresh) -> bool:
    """True when ``node``'s input is a new tensor that only ``node`` reads (``fresh(src)``)."""
    src = node.args[0] if node.args else None
    return isinstance(src, fx.Node) and len(src.users) == 1 and fresh(src)


def relu_in_place(graph: fx.Graph, modules: dict[str, nn.Module] | None = None, fresh_fns: tuple = ()) -> None:
    """Make ReLUs in-place where their input is a new tensor that nothing else reads.

    Saves one activation-sized allocation and pass over memory per ReLU, a noticeable share of a
    large batch's time on the CPU. Without ``modules``: ``torch.relu`` nodes after call_function
    nodes of ``fresh_fns`` (functions that return new tensors); with the GraphModule's ``modules``: ``nn.ReLU`` modules after Linear / Conv /
    BatchNorm modules, only when every call of that ReLU module qualifies (one module may be
    called at several places).
    """
    if modules is None:
        for node in graph.nodes:
            if node.op == "call_function" and node.target is torch.relu and _fresh_input(
                    node, lambda src: src.op == "call_function" and src.target in fresh_fns):
                node.target = torch.relu_
        return
    sites: dict[str, list[bool]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.ReLU):
            sites.setdefault(node.target, []).append(_fresh_input(
                node, lambda src: src.op == "call_module" and isinstance(modules.get(src.target), _FRESH_MODULES)))
    for target, ok in sites.items():
        if all(ok):
            modules[target].inplace = True


#: Channel counts of convolutions are padded up to a multiple of this (oneDNN's AVX-512 block of
#: 16 floats) when that adds at most 1/8 more channels: measured on the 2-core CPU at batch 256,
#: a 1 -> 110 channel Conv1d took 0.25 ms and 1 -> 112 0.16 ms, a 110 -> 41 one 0.88 ms and
#: 112 -> 41 0.82 ms (the 41 -> 48 padding, +17 %, measured no faster and is not done).
CHANNEL_BLOCK = 16


def pad_conv_channels(gm: fx.GraphModule, block: int = CHANNEL_BLOCK) -> int:
    """Pad Conv1d -> ReLU -> Conv1d chains of ``gm`` with zero channels, in place; returns how many
    convolutions were padded.

    The producer gets zero weight rows and zero bias (its extra outputs are 0, ReLU keeps them
    0), the consumer zero input columns: the outputs are exactly unchanged. Only chains whose
    tensors have no other user and whose modules are called once are touched (pass a GraphModule
    that owns its modules, e.g. ``fuse``'s deep copy: ``fx.symbolic_trace`` shares the model's).
    """
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1

    def conv(n: Any) -> nn.Module | None:
        mod = modules.get(n.target) if isinstance(n, fx.Node) and n.op == "call_module" else None
        # Conv1d only: the gain was measured there; 2-D timings were too noisy to decide.
        ok = isinstance(mod, nn.Conv1d) and mod.groups == 1 and calls.get(n.target) == 1
        return mod if ok else None

    padded = 0
    for node in gm.graph.nodes:
        producer = conv(node)
        if producer is None or len(node.users) != 1:
            continue
        act = next(iter(node.users))
        is_relu = (act.op == "call_module" and isinstance(modules.get(act.target), nn.ReLU)) or (
            act.op == "call_function" and act.target in (torch.relu, torch.relu_, F.relu))
        consumer = conv(next(iter(act.users))) if is_relu and len(act.users) == 1 else None
        out = producer.out_channels
        extra = -out % block
        if consumer is None or extra == 0 or extra * 8 > out or next(iter(act.users)).args[0] is not act:
            continue
        with torch.no_grad():
            w = producer.weight
            producer.weight = nn.Parameter(torch.cat([w, w.new_zeros(extra, *w.shape[1:])]), requires_grad=False)
            b = producer.bias if producer.bias is not None else w.new_zeros(out)
            producer.bias = nn.Parameter(torch.cat([b, b.new_zeros(extra)]), requires_grad=False)
            producer.out_channels = out + extra
            w = consumer.weight
            consumer.weight = nn.Parameter(torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], 1),
                                           requires_grad=False)
            consumer.in_channels = out + extra
        padded += 1
    return padded


class ChannelsLastConv1d(nn.Module):
    """A Conv1d computed as a ``1 x k`` Conv2d on channels-last memory: ``(B, C, L) -> (B, O, L')``.

    Why: oneDNN runs convolutions natively on channels-last (NWC) memory; on the default NCL memory
    PyTorch reorders every input and output to it and back. Measured on the 2-core CPU at batch 256
    (cnn1d's slim members): a 112 -> 41 convolution 0.71 ms as Conv1d against 0.58 ms this way, a
    41 -> 41 one 0.21 against 0.14 ms. The output is a ``(B, O, L')`` view whose channel stride is 1,
    which the next ChannelsLastConv1d reads without a copy and every other op reads by strides
    (the values are those of the Conv1d; only the memory order differs).
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise TypeError("ChannelsLastConv1d: only numeric zero padding")
        w = conv.weight.detach().unsqueeze(2)  # (O, C/groups, 1, k)
        self.weight = nn.Parameter(w.contiguous(memory_format=torch.channels_last), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride, self.padding = (1, conv.stride[0]), (0, conv.padding[0])
        self.dilation, self.groups = (1, conv.dilation[0]), conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = x.unsqueeze(2)  # (B, C, 1, L)
        if x4.shape[1] == 1:
            # One input channel: NCHW and NHWC are the same memory, and PyTorch then picks NCHW for
            # the output; strides that only channels-last explains make oneDNN write NHWC directly.
            x4 = x4.as_strided(x4.shape, (x4.shape[3], 1, x4.shape[3], 1))
        out = F.conv2d(x4, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return out.squeeze(2)


def channels_last(module: nn.Module) -> int:
    """Put every convolution of ``module`` on channels-last memory, in place; returns how many.

    Conv2d weights are converted to ``torch.channels_last`` (PyTorch then runs the convolution, and
    the ops after it, on NHWC memory); every Conv1d is replaced by a :class:`ChannelsLastConv1d`.
    Exact: only the memory order changes. Pass a module that owns its submodules (a deep copy).
    """
    changed = 0
    for name, mod in list(module.named_modules()):
        if not name:  # the module itself is a convolution: nothing to replace it in
            continue
        if isinstance(mod, nn.Conv2d):
            mod.to(memory_format=torch.channels_last)
            changed += 1
        elif isinstance(mod, nn.Conv1d) and mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
            set_submodule(module, name, ChannelsLastConv1d(mod))
            changed += 1
    return changed


def class_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(logits, dim=-1)`` (a contiguous tensor of the same shape), faster for few classes.

    Why: on the CPU, torch's softmax over the last dimension vectorises along that dimension, and
    below 16 classes (one AVX-512 vector of floats) it falls back to a slow path. Measured on the
    2-core CPU for ``(3, 256, C)`` logits: C = 10 took 50 us, against 13 us for the softmax over
    dim -2 of the transposed view (which vectorises along the rows) plus a copy back; C = 16 took
    7 us the plain way and 17 us transposed; at one row the plain call wins (2.2 against 3.8 us).
    The values are the same softmax (differences at float rounding, ~3e-8).
    """
    c = logits.shape[-1]
    if logits.device.type == "cpu" and logits.dim() >= 2 and c < 16 and logits.numel() >= 64 * c:
        return torch.softmax(logits.transpose(-1, -2), dim=-2).transpose(-1, -2).contiguous()
    return torch.softmax(logits, dim=-1)
