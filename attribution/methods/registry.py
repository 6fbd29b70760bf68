"""Method registry: one name per saliency method, parameters passed to its constructor.

A method class declares ``name = "gradcam"`` and is added with ``@register``; lookup ignores case
and reads ``-`` as ``_`` (:class:`attribution.registry.Registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from attribution.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from attribution.methods.base import CAMMethod

__all__ = ["METHODS", "UnknownMethodError", "create_method", "method_class", "method_names", "register"]

M = TypeVar("M", bound=type)


class UnknownMethodError(UnknownNameError):
    """No method is registered under this name."""


METHODS: Registry[CAMMethod] = Registry("method", error=UnknownMethodError)


def register(cls: M) -> M:
    """Class decorator: register a :class:`CAMMethod` under its class attribute ``name``."""
    return METHODS.register(cls)


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return METHODS.names()


def method_class(name: str) -> type[CAMMethod]:
    """The class registered as ``name`` (case and ``-``/``_`` insensitive); unknown names are an error."""
    return METHODS.get(name)


def create_method(name: str, **params: Any) -> CAMMethod:
    """Instantiate the method ``name`` with ``params``; errors name the bad method or parameter."""
    return METHODS.create(name, **params)
