"""Method registry: one name per saliency method, parameters passed to its constructor."""

from __future__ import annotations

import difflib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attribution.methods.base import CAMMethod

__all__ = ["register", "create_method", "method_class", "method_names", "UnknownMethodError"]

_METHODS: dict[str, type[CAMMethod]] = {}


class UnknownMethodError(KeyError):
    """No method is registered under this name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


def register(name: str):
    """Class decorator: register a :class:`CAMMethod` under ``name``."""

    def decorate(cls: type[CAMMethod]) -> type[CAMMethod]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)


def method_class(name: str) -> type[CAMMethod]:
    """The class registered as ``name`` (case and ``-``/``_`` insensitive); unknown names are an error."""
    key = name.lower().replace("-", "_")
    if key not in _METHODS:
        close = difflib.get_close_matches(key, _METHODS, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownMethodError(f"unknown method {name!r}.{hint} Known methods: {', '.join(_METHODS)}")
    return _METHODS[key]


def create_method(name: str, **params: Any) -> CAMMethod:
    """Instantiate the method ``name`` with ``params``; errors name the bad method or parameter."""
    cls = method_class(name)
    key = cls.name
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [p for p in params if p not in accepted]
    if unknown:
        allowed = [p for p in accepted if p != "self"]
        raise TypeError(f"method {key!r} has no parameter {', '.join(map(repr, unknown))}; it takes {allowed}")
    return cls(**params)
