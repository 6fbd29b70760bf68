"""Split a network at its target layer into a prefix and a suffix (the one capture mechanism).

Every method in :mod:`attribution.methods` needs the target layer's activations ``A`` and the
part of the network after it, ``g(A) = y`` (gradients, channel scaling, ablation). Instead of
forward/backward hooks, the model is traced once with :mod:`torch.fx` and cut at the target
layer's node:

    prefix(x)          -> (A, *live)      everything the suffix needs, computed once per image
    suffix(A, *live)   -> logits          the network after the target layer

``live`` holds the values computed before the target layer that the suffix still reads (the
residual stream when the layer sits inside a transformer block, for example). Gradients are
taken with ``torch.autograd.grad(logits, A)``: no parameter gradients, no backward pass through
the prefix, and the user's model is never hooked or modified beyond switching off in-place
activations (which would overwrite ``A``).
"""

from __future__ import annotations

import difflib
import functools
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, fx, nn

from attribution.layout import FeatureLayout, infer_layout

__all__ = [
    "LayerNotFoundError",
    "LayerSplit",
    "LinearStem",
    "PooledHead",
    "check_eval_mode",
    "is_cached",
    "release_split",
    "resolve_layer_name",
    "split_at",
]


class LayerNotFoundError(ValueError):
    """The requested target layer does not exist in the model or is not on its forward path."""


def resolve_layer_name(model: nn.Module, layer: str) -> str:
    """Return the canonical dotted name of ``layer``; negative indices (``blocks.-1.norm1``) allowed."""
    parts: list[str] = []
    module = model
    for part in layer.split("."):
        children = dict(module.named_children())
        if part.lstrip("-").isdigit() and int(part) < 0:
            names = list(children)
            index = int(part)
            if -index > len(names):
                raise LayerNotFoundError(f"layer {layer!r}: index {part} out of range for {len(names)} children")
            part = names[index]
        if part not in children:
            known = [name for name, _ in model.named_modules() if name]
            close = difflib.get_close_matches(layer, known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise LayerNotFoundError(f"model {type(model).__name__} has no layer {layer!r}.{hint}")
        parts.append(part)
        module = children[part]
    return ".".join(parts)


def _notrace_lists() -> tuple[tuple[type, ...], tuple]:
    """Modules and functions that timm marks as not traceable (kept as leaves / wrapped)."""
    try:
        from timm.layers._fx import get_notrace_functions, get_notrace_modules
    except ImportError:  # timm absent or reorganised: plain torch.fx tracing
        return (), ()
    return tuple(get_notrace_modules()), tuple(get_notrace_functions())


class _CutTracer(fx.Tracer):
    """A tracer that keeps the target layer as a single node."""

    def __init__(self, target: str) -> None:
        leaf_types, functions = _notrace_lists()
        super().__init__(autowrap_functions=functions)
        self.target = target
        self.leaf_types = leaf_types

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        if qualname == self.target:
            return True
        if self.leaf_types and isinstance(module, self.leaf_types):
            return True
        return super().is_leaf_module(module, qualname)


def _disable_inplace(model: nn.Module, graph: fx.Graph) -> None:
    """In-place activations in the suffix would overwrite the leaf tensor ``A``."""
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    for node in graph.nodes:
        if node.op in ("call_function", "call_method") and node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
        if (node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("_")
                and hasattr(torch.Tensor, node.target[:-1])):
            node.target = node.target[:-1]


def _closure(start: Iterable[fx.Node], step: Callable[[fx.Node], Iterable[fx.Node]]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(start)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(step(node))
    return seen


@dataclass(eq=False)
class LayerSplit:
    """A model cut at ``layer``: ``suffix(*prefix(x)) == model(x)``.

    When the suffix ends in a linear classifier, ``embed`` is the suffix without it, so a single
    class score costs one dot product instead of the whole classifier (``target_scores``).
    """

    layer: str
    prefix: fx.GraphModule
    suffix: fx.GraphModule
    layout: FeatureLayout | None
    embed: fx.GraphModule | None = None
    classifier: nn.Linear | None = None

    def features(self, images: Tensor) -> tuple[Tensor, tuple]:
        """Activations of the target layer and the live values the suffix needs."""
        out = self.prefix(images)
        return out[0], tuple(out[1:])

    def head(self, feats: Tensor, live: tuple, index: Tensor | None = None) -> Tensor:
        """Run the suffix. Row ``r`` of ``feats`` belongs to image ``index[r]`` (default: row r),
        so one image's activations can be evaluated under many perturbations in one batch."""
        logits = self.suffix(feats, *_gather_live(live, index))
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise TypeError(f"model output must be a (batch, classes) tensor, got {_describe(logits)}")
        return logits

    def target_scores(self, feats: Tensor, live: tuple, targets: Tensor, index: Tensor | None = None) -> Tensor:
        """``y^{targets[r]}`` of each row: ``head(...)`` gathered, computed without the other classes."""
        live = _gather_live(live, index)
        if self.classifier is None:
            return self.suffix(feats, *live).gather(1, targets[:, None]).squeeze(1)
        h = self.embed(feats, *live)
        bias = self.classifier.bias[targets] if self.classifier.bias is not None else 0
        return (h * self.classifier.weight[targets]).sum(dim=1) + bias

    def layout_for(self, feats: Tensor) -> FeatureLayout:
        return self.layout if self.layout is not None else infer_layout(feats)

    @functools.cached_property
    def pooled_head(self) -> PooledHead | None:
        """The suffix as ``head(GAP(A))`` when its first and only use of ``A`` is a global average pool."""
        return _pooled_head(self.suffix)

    @functools.cached_property
    def linear_stem(self) -> LinearStem | None:
        """The suffix as ``tail(W·flatten(P(A)) + b)`` when ``P`` is made of channel-wise pools and ReLUs."""
        return _linear_stem(self.suffix)


@dataclass(eq=False)
class PooledHead:
    """A suffix that starts with a global average pool: ``suffix(A) = head(GAP(A))``.

    Channel scaling commutes with the pool, ``GAP(z ⊙ A) = z ⊙ GAP(A)``, so the channel-scaling
    predictor ``g(z) = y^c(z ⊙ A)`` can be evaluated on pooled ``(N, K)`` vectors. When ``head`` is
    a linear classifier after shape-only steps (flatten, eval-mode dropout), ``g`` is affine in ``z``:
    ``g(z) = w^c · (z ⊙ GAP(A)) + b^c`` (``classifier`` is then that ``nn.Linear``).
    """

    head: fx.GraphModule  # the pool's output → logits
    pooled_shape: tuple[int, ...]  # trailing axes of the pool's output after (N, K): (1, 1) or ()
    classifier: nn.Linear | None

    @staticmethod
    def pool(maps: Tensor) -> Tensor:
        """``GAP(A)``: ``(B, K, U, V)`` → ``(B, K)``."""
        return maps.mean(dim=(2, 3))

    def logits(self, pooled: Tensor) -> Tensor:
        """The suffix's logits from pooled ``(N, K)`` activations."""
        return self.head(pooled.reshape(*pooled.shape[:2], *self.pooled_shape))

    def target_scores(self, pooled: Tensor, targets: Tensor) -> Tensor:
        """``y^{targets[r]}`` of each pooled row ``(N, K)``."""
        if self.classifier is None:
            return self.logits(pooled).gather(1, targets[:, None]).squeeze(1)
        bias = self.classifier.bias[targets] if self.classifier.bias is not None else 0
        return (pooled * self.classifier.weight[targets]).sum(dim=1) + bias

    def score_gradient(self, pooled: Tensor, targets: Tensor) -> Tensor | None:
        """``∂g/∂z = w^c ⊙ GAP(A)`` (constant in ``z``) when the head is affine, else ``None``."""
        if self.classifier is None:
            return None
        return self.classifier.weight[targets] * pooled


def _gather_live(live: tuple, index: Tensor | None) -> tuple:
    """The live values of image ``index[r]`` for each suffix row ``r`` (non-tensors pass through)."""
    if index is None:
        return live
    return tuple(v[index] if isinstance(v, Tensor) and v.ndim else v for v in live)


def _describe(value: object) -> str:
    return f"tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _build_split(model: nn.Module, layer: str, layout: FeatureLayout | None) -> LayerSplit:
    tracer = _CutTracer(layer)
    try:
        graph = tracer.trace(model)
    except Exception as err:  # tracing errors come in every type
        raise TypeError(
            f"cannot split {type(model).__name__} at {layer!r}: torch.fx could not trace the model ({err})"
        ) from err
    _disable_inplace(model, graph)
    nodes = list(graph.nodes)
    cut = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(cut) != 1:
        raise LayerNotFoundError(
            f"layer {layer!r} is called {len(cut)} times in the forward pass of {type(model).__name__};"
            " a target layer must be called exactly once"
        )
    cut_node = cut[0]
    output = next(n for n in nodes if n.op == "output")
    downstream = _closure(cut_node.users, lambda n: n.users)
    if output not in downstream:
        raise LayerNotFoundError(f"the model output does not depend on layer {layer!r}")

    def inputs_of(node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes]

    live = [
        a
        for n in nodes
        if n in downstream
        for a in inputs_of(n)
        if a is not cut_node and a not in downstream and a.op != "get_attr"
    ]
    live = list(dict.fromkeys(live))  # stable de-duplication

    prefix_graph = fx.Graph()
    needed = _closure([cut_node, *live], inputs_of)
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        if n in needed:
            env[n] = prefix_graph.node_copy(n, lambda a: env[a])
    prefix_graph.output((env[cut_node], *[env[a] for a in live]))

    suffix_graph = fx.Graph()
    senv: dict[fx.Node, fx.Node] = {cut_node: suffix_graph.placeholder("activations")}
    for i, a in enumerate(live):
        senv[a] = suffix_graph.placeholder(f"live_{i}")
    for n in nodes:
        if n in downstream or (n.op == "get_attr" and any(u in downstream for u in n.users)):
            senv[n] = suffix_graph.node_copy(n, lambda a: senv[a])

    root = tracer.root
    suffix = fx.GraphModule(root, suffix_graph)
    return LayerSplit(layer, fx.GraphModule(root, prefix_graph), suffix, layout, *_without_classifier(suffix, root))


def _without_classifier(suffix: fx.GraphModule, root: nn.Module) -> tuple[fx.GraphModule | None, nn.Linear | None]:
    """The suffix up to the input of its final ``nn.Linear``, and that layer (or ``(None, None)``)."""
    output = next(n for n in suffix.graph.nodes if n.op == "output")
    last = output.args[0]
    if not (isinstance(last, fx.Node) and last.op == "call_module" and len(last.users) == 1):
        return None, None
    classifier = root.get_submodule(last.target)
    if type(classifier) is not nn.Linear or len(last.args) != 1 or last.kwargs:
        return None, None
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in suffix.graph.nodes:
        if node is last:
            break
        env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(env[last.args[0]])
    return fx.GraphModule(root, graph), classifier


@dataclass(eq=False)
class LinearStem:
    """A suffix ``tail(W·flatten(P(A)) + b)`` whose steps ``P`` before its first linear layer are channel-wise
    pools and ReLUs (VGG's max-pool → average pool → flatten → Linear; DenseNet's ReLU → pool → Linear).

    Such steps commute with non-negative channel scaling (``max(z·a) = z·max(a)`` and
    ``relu(z·a) = z·relu(a)`` for ``z ≥ 0``), so for ``z ≥ 0`` the first linear layer is linear in ``z``:
    ``W·flatten(P(z ⊙ A)) = C(A)·z`` with ``C[:, k] = W[:, block k] · flatten(P(A))_k``. ``C`` costs one
    pass of that layer per image; each scaling ``z`` then costs ``K`` columns instead of ``W``'s full width.
    """

    stem: fx.GraphModule  # A → P(A), (B, K, …): the steps before the flatten
    linear: nn.Linear
    tail: fx.GraphModule  # the first linear layer's output → logits
    tail_embed: fx.GraphModule | None = None  # the tail without its final nn.Linear (one class = one dot product)
    classifier: nn.Linear | None = None

    def channel_matrix(self, feats: Tensor) -> Tensor:
        """``C(A)``: ``(B, out, K)``."""
        pooled = self.stem(feats).flatten(2)  # (B, K, S)
        _, k, size = pooled.shape
        weight = self.linear.weight.reshape(self.linear.out_features, k, size)
        return torch.einsum("oks,bks->bok", weight, pooled)

    def _hidden(self, channel_matrix: Tensor, z: Tensor) -> Tensor:
        hidden = z @ channel_matrix.T
        return hidden + self.linear.bias if self.linear.bias is not None else hidden

    def logits(self, channel_matrix: Tensor, z: Tensor) -> Tensor:
        """Logits of one image under each scaling ``z`` ``(P, K) ≥ 0``, from its ``C(A)`` ``(out, K)``."""
        return self.tail(self._hidden(channel_matrix, z))

    def target_scores(self, channel_matrix: Tensor, z: Tensor, target: int) -> Tensor:
        """``y^target`` of one image under each scaling ``z`` ``(P, K) ≥ 0``, without the other classes."""
        if self.classifier is None:
            return self.logits(channel_matrix, z)[:, target]
        bias = self.classifier.bias[target] if self.classifier.bias is not None else 0
        return self.tail_embed(self._hidden(channel_matrix, z)) @ self.classifier.weight[target] + bias


_CHANNELWISE_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ReLU, nn.Dropout,
                        nn.Identity)
_CHANNELWISE_FUNCTIONS = (nn.functional.relu, torch.relu, nn.functional.max_pool2d, nn.functional.avg_pool2d,
                          nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_max_pool2d, nn.functional.dropout)


def _is_channelwise(node: fx.Node, root: nn.Module) -> bool:
    """``node`` maps each channel on its own and commutes with non-negative scaling (pools, ReLU, eval dropout)."""
    if node.op == "call_module":
        return type(root.get_submodule(node.target)) in _CHANNELWISE_MODULES
    return node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS


def _is_flatten_from_channels(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    flat = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten")
    return flat and start == 1 and len(node.args) <= 2 and "end_dim" not in node.kwargs


def _linear_stem(suffix: fx.GraphModule) -> LinearStem | None:
    nodes = list(suffix.graph.nodes)
    activations = nodes[0]
    if any(n.op == "placeholder" and n.users for n in nodes[1:]):
        return None
    chain, node = [], activations
    while len(node.users) == 1:
        node = next(iter(node.users))
        if node.op == "call_module" and type(suffix.get_submodule(node.target)) is nn.Linear:
            break
        if not (_is_channelwise(node, suffix) or _is_flatten_from_channels(node, suffix)):
            return None
        chain.append(node)
    else:
        return None
    flattens = [i for i, n in enumerate(chain) if _is_flatten_from_channels(n, suffix)]
    if len(flattens) != 1 or any(not _is_channelwise(n, suffix) for n in chain[flattens[0] + 1 :]):
        return None  # only dropout (the identity) may sit between the flatten and the linear layer
    linear_node = node
    stem_graph = fx.Graph()
    env = {activations: stem_graph.placeholder("activations")}
    for n in chain[: flattens[0]]:
        env[n] = stem_graph.node_copy(n, lambda a: env[a])
    stem_graph.output(env[chain[flattens[0] - 1]] if flattens[0] else env[activations])
    tail_graph = fx.Graph()
    tenv = {linear_node: tail_graph.placeholder("hidden")}
    downstream = _closure(linear_node.users, lambda n: n.users)
    for n in nodes:
        if n in downstream or (n.op == "get_attr" and any(u in downstream for u in n.users)):
            tenv[n] = tail_graph.node_copy(n, lambda a: tenv[a])
    tail = fx.GraphModule(suffix, tail_graph)
    return LinearStem(fx.GraphModule(suffix, stem_graph), suffix.get_submodule(linear_node.target), tail,
                      *_without_classifier(tail, suffix))


_SHAPE_ONLY_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, nn.functional.dropout, torch.dropout)
_SHAPE_ONLY_METHODS = ("flatten", "view", "reshape", "squeeze", "contiguous")
_SHAPE_ONLY_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_SPATIAL_DIMS = ({2, 3}, {-2, -1})


def _is_global_average_pool(node: fx.Node, root: nn.Module) -> bool:
    """``node`` averages every channel of its 4-D input over both spatial axes."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return type(module) is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1), [1, 1])
    if node.op == "call_function" and node.target is nn.functional.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if (node.op == "call_method" and node.target == "mean") or (node.op == "call_function" and node.target is torch.mean):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return isinstance(dims, (tuple, list)) and set(dims) in _SPATIAL_DIMS
    return False


def _is_shape_only(node: fx.Node, root: nn.Module) -> bool:
    """``node`` only reshapes its input (dropout is the identity in eval mode, which ``split_at`` requires)."""
    if node.op == "call_module":
        return type(root.get_submodule(node.target)) in _SHAPE_ONLY_MODULES
    if node.op == "call_function":
        return node.target in _SHAPE_ONLY_FUNCTIONS
    return node.op == "call_method" and node.target in _SHAPE_ONLY_METHODS


def _pooled_head(suffix: fx.GraphModule) -> PooledHead | None:
    """Cut ``suffix`` after its global average pool, if ``A`` reaches the rest only through it."""
    nodes = list(suffix.graph.nodes)
    activations = nodes[0]
    if any(n.op == "placeholder" and n.users for n in nodes[1:]):  # the head also reads live values
        return None
    if len(activations.users) != 1:
        return None
    pool = next(iter(activations.users))
    if not _is_global_average_pool(pool, suffix):
        return None
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {pool: graph.placeholder("pooled")}
    for node in nodes:
        if node is not pool and node not in (activations,) and node.op != "placeholder":
            env[node] = graph.node_copy(node, lambda a: env[a])
    head = fx.GraphModule(suffix, graph)
    probe = fx.GraphModule(suffix, _single_node_graph(pool))(torch.zeros(1, 1, 2, 2))
    output = next(n for n in nodes if n.op == "output")
    last = output.args[0]
    chain = [n for n in nodes if n.op not in ("placeholder", "output", "get_attr") and n is not pool]
    affine = (
        isinstance(last, fx.Node)
        and last.op == "call_module"
        and type(suffix.get_submodule(last.target)) is nn.Linear
        and all(n is last or (_is_shape_only(n, suffix) and len(n.users) == 1) for n in chain)
    )
    return PooledHead(head, tuple(probe.shape[2:]), suffix.get_submodule(last.target) if affine else None)


def _single_node_graph(node: fx.Node) -> fx.Graph:
    graph = fx.Graph()
    source = node.all_input_nodes[0]
    env = {source: graph.placeholder("x")}
    graph.output(graph.node_copy(node, lambda a: env[a]))
    return graph


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, FeatureLayout | None], LayerSplit]] = (
    weakref.WeakKeyDictionary()
)


def _cache_key(model: nn.Module, layer: str, layout: FeatureLayout | None) -> tuple[str, FeatureLayout | None]:
    try:
        hash(layout)
    except TypeError:
        raise TypeError(f"layout must be hashable (a frozen dataclass); got {layout!r}") from None
    return resolve_layer_name(model, layer), layout


def check_eval_mode(model: nn.Module) -> None:
    """Raise if ``model`` is in training mode (dropout and batch statistics would change every map)."""
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode; call model.eval() before explaining it")


def split_at(model: nn.Module, layer: str, layout: FeatureLayout | None = None) -> LayerSplit:
    """The split of ``model`` at ``layer`` viewed through ``layout`` (``None``: inferred from the activations).

    Cached per (model, layer, layout); views of one layer under different layouts share the traced
    prefix and suffix. The model must be in eval mode.
    """
    check_eval_mode(model)
    key = _cache_key(model, layer, layout)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        traced = next((s for (name, _), s in per_model.items() if name == key[0]), None)
        per_model[key] = _build_split(model, key[0], layout) if traced is None else replace(traced, layout=layout)
    return per_model[key]


def is_cached(model: nn.Module, layer: str, layout: FeatureLayout | None = None) -> bool:
    """Whether :func:`split_at` holds a split of ``model`` at ``layer`` under ``layout``."""
    return _cache_key(model, layer, layout) in _CACHE.get(model, {})


def release_split(model: nn.Module, layer: str, layout: FeatureLayout | None = None,
                  split: LayerSplit | None = None) -> None:
    """Drop the cached split of ``model`` at ``layer`` under ``layout`` (only if it is ``split``, when given)."""
    per_model = _CACHE.get(model)
    if per_model is None:
        return
    key = _cache_key(model, layer, layout)
    if key in per_model and (split is None or per_model[key] is split):
        del per_model[key]
    if not per_model:
        del _CACHE[model]
