"""One packed forward over M members of one architecture (slim channel tickets).

:class:`PackedMembers` runs M same-architecture members as one network whose activations are
``(M * B, ...)``: the members' batches stacked member-major along the batch dimension. Every
op that treats rows independently (activations, pooling, flatten, residual additions, reshapes
that keep the first dimension) then runs once for all members unchanged; only the layers with
weights differ per member:

* **Linear** ``(M*B, F) -> (M*B, O)``: one ``baddbmm`` over the stacked weights ``(M, F, O)``.
* **Conv1d/Conv2d** (``groups=1``, zero padding): one ``unfold`` (im2col) and one ``baddbmm``
  over the stacked weights ``(M, O, C*k)``; at B = 1 the im2col matrix is already in the layout
  the matmul needs (no copy).
* The **first weighted layer** sees the input every member shares, so it runs as one ordinary
  Linear / Conv with the members' output channels concatenated; ops before it run once on the
  un-replicated input.
* **BatchNorm** directly after a Conv/Linear (its only user) is folded into that layer's weights
  and bias (``torch.fx.experimental.optimization.fuse``: inference-only, exact up to rounding);
  any other BatchNorm (pre-activation blocks) becomes a per-member affine map.

**Packing rule** (by the input values of a call, ``B * x[0].numel()``; ``route(x)`` says which):

* models without convolutions run the packed graph at every batch (few, larger ops: wins while
  per-op overhead dominates, for Linear-only models at every batch measured);
* Conv1d models run the packed graph up to ``small_inputs`` values (320: 8 MNIST-1D signals)
  and the M BatchNorm-folded slim members one after another above (im2col's memory traffic
  grows with the input, while each slim convolution is then big enough to run at full speed);
* models with a Conv2d run the **grouped** form up to ``GROUPED_INPUTS`` (four 3 x 32 x 32
  images), the folded members above. The grouped form is the folded members as one network of
  grouped convolutions (:class:`~freetickets.ensembles.fused.FusedMembers`), on channels-last
  memory: measured on the 2-core CPU at wrn-16-8 batch 1, 0.9x one dense model against 2.3x
  for the im2col graph.

Every convolution of the folded members and the grouped form runs on channels-last memory
(``layouts.channels_last``): oneDNN's native layout, without the reorders PyTorch otherwise does
around each convolution (cnn1d at batch 256: 0.96x -> 0.64-0.79x one dense model).
``benchmarks/ensemble.py --structure channel`` prints each side of the rule forced.

Layout details, each measured at batch 256 on the 2-core CPU (docs/benchmarks.md): ReLUs whose
input nothing else reads run in place (no fresh activation buffer); at B > 1 the shared first
Linear writes member-major rows directly instead of copying its ``(B, M*O)`` output; stacked
Linear weights are kept in nn.Linear's ``(O, F)`` layout; and in the folded members a Conv1d ->
ReLU -> Conv1d chain gets zero channels up to a multiple of 16 (``layouts.pad_conv_channels``,
exact) where that adds at most 1/8 more channels.

The graph comes from ``torch.fx`` tracing member 0 after folding; the members' weights are
stacked per layer. A model that FX cannot trace, or with any other module holding parameters
or buffers, raises ``TypeError`` at construction (callers then run the members one after
another). Forward code that mixes rows (e.g. ``x.view(B, ...)`` with a hard-coded B) cannot be
detected from the graph, so the first call compares the packed logits with the members run one
after another and falls back for good (logged) if they differ.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import torch
from torch import fx, nn

from freetickets.ensembles.fused import FusedMembers
from freetickets.ensembles.layouts import channels_last, pad_conv_channels, relu_in_place
from freetickets.ensembles.packed_ops import packed_affine, packed_conv, packed_linear, replicate, shared_layer, unstack

__all__ = ["GROUPED_INPUTS", "PackedMembers", "SMALL_INPUTS", "packed_conv", "packed_linear", "shared_layer"]

logger = logging.getLogger(__name__)

#: Default packing rule for convolutional models: the packed graph up to this many input values
#: per call, the folded members one after another above (benchmarks/ensemble.py --structure channel).
SMALL_INPUTS = 320
#: The same threshold for models with a Conv2d: the grouped form up to four 3 x 32 x 32 images
#: (wrn-16-8's measured crossover with the folded members lies between two and eight images).
GROUPED_INPUTS = 4 * 3 * 32 * 32

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_CHECK_TOL = 1e-4  # relative to the largest logit magnitude, as Ensemble's batched-path check


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


def _no_state(module: nn.Module) -> bool:
    return not any(True for _ in module.parameters()) and not any(True for _ in module.buffers())


class PackedMembers(nn.Module):
    """M members of one architecture as one packed network; a *model form* for :class:`Ensemble`.

    members: eval-mode networks with identical structure and parameter shapes (slim tickets of
    one channel run). small_inputs: the packing rule's threshold in input values (module docstring;
    None: ``SMALL_INPUTS``, or ``GROUPED_INPUTS`` for models with a Conv2d).
    pack: False runs the members one after another (members of different shapes allowed).
    ``member_logits(x)``: ``(B, *input_shape)`` -> logits ``(M, B, C)``; ``path`` is
    ``"packed"``, or ``"sequential"`` after a failed construction or first-call check.
    Raises ``TypeError`` when the members differ in structure or shapes. The members are kept
    (``self.members``) and are what the sequential path and the check run.
    """

    def __init__(self, members: Sequence[nn.Module], *, small_inputs: int | None = None, pack: bool = True) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("members: need at least one member")
        first = members[0]
        shapes = [{n: tuple(t.shape) for n, t in m.state_dict().items()} for m in members]
        for k, (m, s) in enumerate(zip(members[1:], shapes[1:]), 1):
            if pack and (type(m) is not type(first) or s != shapes[0]):
                raise TypeError(f"member {k} differs from member 0 in structure or parameter shapes")
        self.members = nn.ModuleList(members).eval()
        self.num_members = len(members)
        self._has_conv = any(isinstance(m, _CONVS) for m in first.modules())
        self._has_conv2d = any(isinstance(m, nn.Conv2d) for m in first.modules())
        if small_inputs is None:
            small_inputs = GROUPED_INPUTS if self._has_conv2d else SMALL_INPUTS
        self.small_inputs = int(small_inputs)
        self._checked = False
        self.graph_module: fx.GraphModule | None = None
        self.grouped: FusedMembers | None = None  # Conv2d models, small inputs
        self.folded = nn.ModuleList()  # the BatchNorm-folded members (large inputs)
        self.path = "sequential"
        if not pack:
            return
        try:
            from torch.fx.experimental.optimization import fuse

            folded = [fuse(copy.deepcopy(m).eval()) for m in self.members]
            self.graph_module = self._pack(folded)
            relu_in_place(self.graph_module.graph, fresh_fns=(packed_linear, packed_conv, packed_affine, shared_layer))
            self.graph_module.recompile()
            for g in folded:  # after _pack: the packed graph keeps the exact channel counts
                relu_in_place(g.graph, dict(g.named_modules()))
            if self._has_conv2d:
                self.grouped = self._grouped([copy.deepcopy(g) for g in folded])
            for g in folded:
                pad_conv_channels(g)
                channels_last(g)
            self.folded = nn.ModuleList(folded)
            self.path = "packed"
        except Exception as exc:
            logger.info("PackedMembers: no packed form (%s: %s); members run one after another",
                        type(exc).__name__, exc)

    @staticmethod
    def _grouped(folded: list[fx.GraphModule]) -> FusedMembers | None:
        """The folded members as one network of grouped convolutions on channels-last memory, or
        None (logged) when a module has no fused form."""
        try:
            grouped = FusedMembers(folded)
        except TypeError as exc:
            logger.info("PackedMembers: no grouped form (%s); small inputs use the packed graph", exc)
            return None
        channels_last(grouped.net)
        return grouped

    # ------------------------------------------------------------------ construction
    def _pack(self, folded: list[fx.GraphModule]) -> fx.GraphModule:
        mods = [dict(g.named_modules()) for g in folded]
        root = nn.Module()
        graph = fx.Graph()
        env: dict[fx.Node, Any] = {}
        count = 0

        def const(name: str, value: torch.Tensor) -> fx.Node:
            nonlocal count
            count += 1
            attr = f"{name.replace('.', '_')}_{count}"
            root.register_buffer(attr, value)
            return graph.get_attr(attr)

        # Nodes that still hold the input all members share (B rows, not yet replicated): ops on
        # it run once, and the first weighted layer runs as one ordinary layer (shared_layer).
        shared: set[fx.Node] = set()
        replicated: dict[fx.Node, fx.Node] = {}

        def packed_arg(n: fx.Node) -> fx.Node:
            if n not in shared:
                return n
            if n not in replicated:
                replicated[n] = graph.call_function(replicate, (n, self.num_members))
            return replicated[n]

        for node in folded[0].graph.nodes:
            inputs = [env[n] for n in node.all_input_nodes]
            on_shared = bool(inputs) and all(n in shared for n in inputs)
            module = mods[0].get(node.target) if node.op == "call_module" else None
            if node.op == "placeholder":
                if env:
                    raise TypeError("members with more than one input are not supported")
                env[node] = graph.placeholder(node.name)
                shared.add(env[node])
            elif node.op == "output":
                graph.output(graph.call_function(unstack, (packed_arg(env[node.args[0]]), self.num_members)))
            elif node.op == "get_attr":
                raise TypeError(f"direct parameter use {node.target!r} is not supported")
            elif on_shared and isinstance(module, (nn.Linear, *_CONVS)) and len(node.args) == 1 and not node.kwargs:
                env[node] = self._shared_layer(graph, const, [mm[node.target] for mm in mods], node.target,
                                               env[node.args[0]])
            elif on_shared and (node.op != "call_module" or _no_state(module)):
                args = fx.map_arg(node.args, lambda n: env[n])
                kwargs = fx.map_arg(node.kwargs, lambda n: env[n])
                if node.op == "call_module":  # stateless: the same node on B rows as on M*B
                    env[node] = self._pack_module(graph, const, root, [mm[node.target] for mm in mods],
                                                  node.target, args, kwargs)
                else:
                    env[node] = graph.create_node(node.op, node.target, args, kwargs, node.name)
                shared.add(env[node])
            else:
                args = fx.map_arg(node.args, lambda n: packed_arg(env[n]))
                kwargs = fx.map_arg(node.kwargs, lambda n: packed_arg(env[n]))
                if node.op == "call_module":
                    env[node] = self._pack_module(graph, const, root, [mm[node.target] for mm in mods], node.target,
                                                  args, kwargs)
                else:
                    env[node] = graph.create_node(node.op, node.target, args, kwargs, node.name)
        return fx.GraphModule(root, graph)

    def _shared_layer(self, graph: fx.Graph, const, mods: list[nn.Module], name: str, x: fx.Node) -> fx.Node:
        """The first weighted layer, on the shared input (see :func:`shared_layer`)."""
        first = mods[0]
        bias = _stack([m.bias if m.bias is not None else torch.zeros_like(m.weight.flatten(1)[:, 0])
                       for m in mods]).flatten()
        if type(first) is nn.Linear:
            w = const(name + ".w", torch.cat([m.weight.detach() for m in mods]).t().contiguous())
            return graph.call_function(shared_layer, (x, w, const(name + ".b", bias), self.num_members, None))
        if first.padding_mode != "zeros" or first.groups != 1 or isinstance(first.padding, str):
            raise TypeError(f"{name}: only groups=1 convolutions with numeric zero padding are packed")
        w = const(name + ".w", torch.cat([m.weight.detach() for m in mods]))
        conv_args = (tuple(first.stride), tuple(first.padding), tuple(first.dilation))
        return graph.call_function(shared_layer, (x, w, const(name + ".b", bias), self.num_members, conv_args))

    def _pack_module(self, graph: fx.Graph, const, root: nn.Module, mods: list[nn.Module], name: str,
                     args: tuple, kwargs: dict) -> fx.Node:
        """The packed node(s) for call_module ``name`` (the members' folded modules ``mods``)."""
        first = mods[0]
        if type(first) is nn.Linear:
            # (M, F, O) as a transposed view of contiguous (M, O, F): the batched matmul then reads
            # each member's weight in nn.Linear's own layout, measured up to 1.5x faster than a
            # contiguous (M, F, O) for narrow outputs (the logit layer) at batch 256.
            w = const(name + ".w", _stack([m.weight for m in mods]).transpose(1, 2))
            bias = [m.bias if m.bias is not None else torch.zeros_like(m.weight[:, 0]) for m in mods]
            b = const(name + ".b", _stack(bias).unsqueeze(1))
            return graph.call_function(packed_linear, (args[0], w, b))
        if isinstance(first, _CONVS):
            if first.groups != 1 or first.padding_mode != "zeros" or isinstance(first.padding, str):
                raise TypeError(f"{name}: only groups=1 convolutions with numeric zero padding are packed")
            w = const(name + ".w", _stack([m.weight for m in mods]))
            bias = [m.bias if m.bias is not None else torch.zeros_like(m.weight[:, 0].flatten(1)[:, 0])
                    for m in mods]
            b = const(name + ".b", _stack(bias))
            return graph.call_function(packed_conv, (args[0], w, b, tuple(first.stride), tuple(first.padding),
                                                     tuple(first.dilation)))
        if isinstance(first, _NORMS) and first.track_running_stats:
            scale, shift = [], []
            for m in mods:
                inv = torch.rsqrt(m.running_var + m.eps)
                weight = m.weight if m.affine else torch.ones_like(inv)
                s = weight * inv
                scale.append(s)
                shift.append((m.bias if m.affine else torch.zeros_like(inv)) - m.running_mean * s)
            return graph.call_function(packed_affine, (args[0], const(name + ".s", _stack(scale)),
                                                       const(name + ".t", _stack(shift))))
        if isinstance(first, nn.ReLU):
            return graph.call_function(torch.relu, (args[0],))
        if isinstance(first, nn.Flatten):
            return graph.call_function(torch.flatten, (args[0], first.start_dim, first.end_dim))
        if isinstance(first, nn.Dropout):  # eval mode: the identity
            return args[0]
        if _no_state(first):  # pooling, activations, ...: one call for all members' rows
            attr = name.replace(".", "_")
            root.add_module(attr, copy.deepcopy(first))
            return graph.call_module(attr, args, kwargs)
        raise TypeError(f"{name}: {type(first).__name__} holds parameters or buffers and has no packed form")

    # ------------------------------------------------------------------ forward
    def _sequential(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, B, C)`` of inputs ``(B, *input_shape)`` (computed without autograd)."""
        if torch.is_grad_enabled():  # checked rather than always entering no_grad: ~1 us at batch 1
            with torch.no_grad():
                return self.member_logits(x)
        if self.graph_module is None:
            return self._sequential(x)
        try:
            out = self._packed(x)
        except Exception as exc:
            self._sequential(x)  # a bad input raises here
            return self._fall_back(f"packed forward failed: {type(exc).__name__}: {exc}", x)
        if not self._checked:
            why = self._check(x[: min(4, x.shape[0])])
            if why is not None:
                return self._fall_back(why, x)
            self._checked = True
        return out

    def routes(self) -> list[str]:
        """The packed routes this instance has: ``"graph"`` (the packed graph), ``"grouped"`` (grouped
        convolutions, Conv2d models, replacing the graph there) and ``"folded"`` (the
        BatchNorm-folded members one after another; convolutional models)."""
        if self.graph_module is None:
            return []
        small = "grouped" if self.grouped is not None else "graph"
        return [small, "folded"] if self._has_conv else ["graph"]

    def route(self, x: torch.Tensor) -> str:
        """The packing rule (module docstring): the route for inputs ``x``; ``"sequential"`` when the
        members run one after another (no packed form, or after a fall-back)."""
        routes = self.routes()
        if not routes:
            return "sequential"
        return routes[0] if len(routes) == 1 or x.numel() <= self.small_inputs else routes[1]

    def _packed(self, x: torch.Tensor, route: str | None = None) -> torch.Tensor:
        route = route or self.route(x)
        if route == "graph":
            assert self.graph_module is not None
            return self.graph_module(x)
        if route == "grouped":
            assert self.grouped is not None
            return self.grouped(x)
        return torch.stack([f(x) for f in self.folded])

    def _check(self, probe: torch.Tensor) -> str | None:
        """None when every packed route reproduces the members on ``probe``, else why not."""
        ref = self._sequential(probe)
        for route in self.routes():
            got = self._packed(probe, route)
            diff = (got.float() - ref.float()).abs().max().item() if got.shape == ref.shape else float("nan")
            if not diff <= _CHECK_TOL * max(1.0, ref.abs().max().item()):
                return f"packed output ({route}) differs from the members' (max {diff:.3g})"
        return None

    def _fall_back(self, why: str, x: torch.Tensor) -> torch.Tensor:
        logger.warning("PackedMembers: running the members one after another (%s)", why)
        self.graph_module, self.grouped, self.folded = None, None, nn.ModuleList()
        self.path = "sequential"
        return self._sequential(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`member_logits`."""
        return self.member_logits(x)
