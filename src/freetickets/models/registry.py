"""Model registry: names -> factories, and :func:`create_model`.

Two kinds of entries:

* **fixed names** (``mlp``, ``cnn1d``, ``resnet50``, ...) registered with :func:`register_model`;
* **name patterns** (``wrn-D-K``) registered with :func:`register_model_pattern`; the factory
  receives the regular-expression match, so one entry covers every depth and width.

A factory is called as ``factory(num_classes=..., input_shape=..., **kwargs)`` (patterns get the
match first) and returns an ``nn.Module`` mapping ``(B, *input_shape)`` to logits
``(B, num_classes)``. It raises ``ValueError`` when it cannot take ``input_shape``.

Names are matched case-insensitively (``vgg-C`` is ``vgg-c``). The registry is the one piece of
module-level mutable state in the package, as in timm: it is written at import time by the
built-in model modules and, optionally, by user code that registers its own factories.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from freetickets.errors import UserError

__all__ = [
    "ModelSpec",
    "create_model",
    "describe_models",
    "list_models",
    "model_names_help",
    "register_model",
    "register_model_pattern",
    "unregister_model",
]

Factory = Callable[..., nn.Module]

# Modules that register the built-in models when imported (lazily, on first registry use).
_BUILTIN_MODULES = (
    "freetickets.models.mnist1d",
    "freetickets.models.lenet",
    "freetickets.models.vgg",
    "freetickets.models.wrn",
    "freetickets.models.resnet",
)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    ``name`` is the display name (a pattern entry shows e.g. ``wrn-D-K``); ``default_input_shape``
    is used when :func:`create_model` gets ``input_shape=None``; ``examples`` are concrete names a
    pattern accepts (used for suggestions and help).
    """

    name: str
    factory: Factory
    description: str
    default_input_shape: tuple[int, ...]
    pattern: re.Pattern[str] | None = None
    examples: tuple[str, ...] = field(default_factory=tuple)


_FIXED: dict[str, ModelSpec] = {}
_PATTERNS: dict[str, ModelSpec] = {}
_builtins_loaded = False


def _ensure_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def _check_shape(value: tuple[int, ...], argument: str) -> tuple[int, ...]:
    try:
        shape = tuple(value)
    except TypeError:
        raise UserError(f"{argument}: expected a tuple of positive ints, got {value!r}") from None
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise UserError(f"{argument}: expected a non-empty tuple of positive ints, got {value!r}")
    return shape


def _first_doc_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register_model(
    name: str,
    *,
    description: str | None = None,
    default_input_shape: tuple[int, ...] = (1, 40),
    override: bool = False,
) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(num_classes, input_shape, **kwargs) -> nn.Module`` as ``name``.

    ``description`` defaults to the first line of the factory's docstring. Registering an existing
    name raises ``ValueError`` unless ``override=True``. Example::

        @register_model("tiny", default_input_shape=(1, 40))
        def tiny(num_classes, input_shape, hidden=32):
            ...
    """
    key = name.strip().lower()
    if not key or re.search(r"\s", key):
        raise UserError(f"name: model names must be non-empty without spaces, got {name!r}")
    shape = _check_shape(default_input_shape, "default_input_shape")

    def decorator(factory: Factory) -> Factory:
        if not override and (key in _FIXED or key in _PATTERNS):
            raise UserError(f"name: model {key!r} is already registered (pass override=True)")
        _FIXED[key] = ModelSpec(
            name=key,
            factory=factory,
            description=description or _first_doc_line(factory),
            default_input_shape=shape,
        )
        return factory

    return decorator


def register_model_pattern(
    display_name: str,
    regex: str,
    *,
    examples: tuple[str, ...] = (),
    description: str | None = None,
    default_input_shape: tuple[int, ...] = (3, 32, 32),
    override: bool = False,
) -> Callable[[Factory], Factory]:
    """Decorator: register a family of names matched by ``regex`` (full match, case-insensitive).

    The factory is called as ``factory(match, num_classes=..., input_shape=..., **kwargs)`` and
    should raise ``ValueError`` for matched but invalid names (e.g. ``wrn-27-10``). ``display_name``
    (e.g. ``wrn-D-K``) is what :func:`list_models` shows.
    """
    key = display_name.strip().lower()
    shape = _check_shape(default_input_shape, "default_input_shape")
    compiled = re.compile(regex, re.IGNORECASE)

    def decorator(factory: Factory) -> Factory:
        if not override and (key in _FIXED or key in _PATTERNS):
            raise UserError(f"name: model {key!r} is already registered (pass override=True)")
        _PATTERNS[key] = ModelSpec(
            name=display_name,
            factory=factory,
            description=description or _first_doc_line(factory),
            default_input_shape=shape,
            pattern=compiled,
            examples=tuple(examples),
        )
        return factory

    return decorator


def unregister_model(name: str) -> None:
    """Remove a fixed name or a pattern (by its display name); unknown names raise ``ValueError``."""
    key = name.strip().lower()
    if key in _FIXED:
        del _FIXED[key]
    elif key in _PATTERNS:
        del _PATTERNS[key]
    else:
        raise UserError(f"name: no registered model {name!r}")


def list_models() -> list[str]:
    """Sorted display names: fixed names and patterns such as ``wrn-D-K``."""
    _ensure_builtins()
    return sorted([*_FIXED, *(spec.name for spec in _PATTERNS.values())])


def describe_models() -> list[tuple[str, str]]:
    """``(display name, one-line description)`` for every entry, sorted by name.

    Pattern entries mention their examples, e.g. ``wrn-D-K: ... (e.g. wrn-28-10, wrn-16-8)``.
    """
    _ensure_builtins()
    rows: list[tuple[str, str]] = []
    for spec in [*_FIXED.values(), *_PATTERNS.values()]:
        text = spec.description
        if spec.examples:
            text = f"{text} (e.g. {', '.join(spec.examples)})"
        rows.append((spec.name, text))
    return sorted(rows)


def model_names_help() -> str:
    """One line listing the valid names, for ``--help`` texts and error messages."""
    _ensure_builtins()
    parts = []
    for name in list_models():
        spec = _PATTERNS.get(name.lower())
        if spec is not None and spec.examples:
            parts.append(f"{name} (e.g. {', '.join(spec.examples)})")
        else:
            parts.append(name)
    return ", ".join(parts)


def _unknown(name: str) -> UserError:
    pool = [*_FIXED]
    for spec in _PATTERNS.values():
        pool.extend(e.lower() for e in spec.examples)
    close = difflib.get_close_matches(name.strip().lower(), pool, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return UserError(f"name: unknown model {name!r}{hint} Valid models: {model_names_help()}")


def _check_kwargs(factory: Factory, kwargs: dict, name: str) -> None:
    """Turn an unknown keyword argument into a ``ValueError`` naming the accepted ones."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        p.name
        for p in params.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in ("match", "num_classes", "input_shape")
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UserError(
            f"{unknown[0]}: not an option of model {name!r}; "
            f"its options are: {', '.join(accepted) or '(none)'}"
        )


def resolve_model(name: str) -> tuple[ModelSpec, re.Match[str] | None]:
    """The registry entry (and, for patterns, the match) for ``name``; ``ValueError`` if unknown."""
    _ensure_builtins()
    if not isinstance(name, str):
        raise UserError(f"name: expected a model name string, got {name!r}")
    key = name.strip().lower()
    if key in _FIXED:
        return _FIXED[key], None
    for spec in _PATTERNS.values():
        assert spec.pattern is not None
        match = spec.pattern.fullmatch(key)
        if match is not None:
            return spec, match
    raise _unknown(name)


def create_model(
    name: str,
    num_classes: int = 10,
    input_shape: tuple[int, ...] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build the model registered as ``name``: inputs ``(B, *input_shape)`` -> logits ``(B, num_classes)``.

    ``input_shape`` excludes the batch dimension, e.g. ``(1, 40)`` for MNIST-1D or ``(3, 32, 32)``
    for CIFAR. ``None`` means the model's natural input (``(1, 40)`` for ``mlp``/``cnn1d``,
    ``(3, 32, 32)`` for the CIFAR models, ``(3, 224, 224)`` for ``resnet50``); this is what lets
    ``create_model("wrn-28-10", num_classes=10)`` work without naming CIFAR's shape. Extra
    keyword arguments are model options (``width``, ``dropout``, ...).

    Weights are drawn from torch's global RNG, so ``torch.manual_seed(s)`` before the call makes
    construction deterministic. Raises ``ValueError`` (``UserError``) for an unknown name, an
    invalid pattern (``wrn-27-10``), ``num_classes < 2``, an unusable ``input_shape`` or an
    unknown option.
    """
    spec, match = resolve_model(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    shape = spec.default_input_shape if input_shape is None else _check_shape(
        input_shape, "input_shape"
    )
    _check_kwargs(spec.factory, kwargs, name)
    if match is not None:
        return spec.factory(match, num_classes=num_classes, input_shape=shape, **kwargs)
    return spec.factory(num_classes=num_classes, input_shape=shape, **kwargs)
