"""A name → class registry, shared by the saliency methods and the metrics.

Classes register themselves with ``@registry.register``, which reads the class attribute ``name``.
Lookup ignores case and treats ``-`` as ``_``; an unknown name is an error of one format that
suggests close names, and ``create`` refuses a parameter the constructor does not take, listing
the ones it does.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "UnknownNameError", "constructor_parameters", "normalize_name"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


class UnknownNameError(KeyError):
    """No class is registered under this name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def normalize_name(name: str) -> str:
    """The lookup key of ``name``: lower case, ``-`` read as ``_``."""
    return name.lower().replace("-", "_")


def constructor_parameters(cls: type) -> tuple[list[str], bool]:
    """The keyword parameters ``cls(...)`` takes, and whether it also takes any keyword (``**kwargs``)."""
    parameters = inspect.signature(cls).parameters.values()
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


class Registry(Generic[T]):
    """Registered classes of one ``kind`` (``"method"``, ``"metric"``), in registration order.

    Args:
        kind: the word the error messages use for an entry.
        error: the exception class raised for an unknown name (called with the message).
        validate: called with each class before it is registered; raises if the class is unfit.
    """

    def __init__(
        self,
        kind: str,
        *,
        error: type[Exception] = UnknownNameError,
        validate: Callable[[type[T]], None] | None = None,
    ) -> None:
        self.kind = kind
        self.error = error
        self.validate = validate
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: C) -> C:
        """Class decorator: add ``cls`` under its class attribute ``name``."""
        name = vars(cls).get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} class {cls.__qualname__} needs a class attribute name = '...'")
        key = normalize_name(name)
        if key in self._classes:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if self.validate is not None:
            self.validate(cls)
        self._classes[key] = cls
        return cls

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; an unknown name raises ``error`` suggesting close names."""
        key = normalize_name(name) if isinstance(name, str) else name
        if key not in self._classes:
            names = self.names()
            by_key = {normalize_name(n): n for n in names}
            close = [by_key[k] for k in difflib.get_close_matches(key, by_key, n=3)] if isinstance(key, str) else []
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise self.error(f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(names)}")
        return self._classes[key]

    def create(self, name: str, **params: Any) -> T:
        """An instance of ``name`` built with ``params``; a parameter its constructor lacks is a ``TypeError``."""
        cls = self.get(name)
        accepted, any_keyword = constructor_parameters(cls)
        unknown = [p for p in params if p not in accepted]
        if unknown and not any_keyword:
            takes = f"it takes {', '.join(map(repr, accepted))}" if accepted else "it takes no parameters"
            plural = "parameters" if len(unknown) > 1 else "parameter"
            raise TypeError(f"{self.kind} {cls.name!r} has no {plural} {', '.join(map(repr, unknown))}; {takes}")
        return cls(**params)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return [cls.name for cls in self._classes.values()]

    def classes(self) -> list[type[T]]:
        """The registered classes, in registration order."""
        return list(self._classes.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._classes)
