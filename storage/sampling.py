"""Deterministic stratified sampling of N images per dataset.

Each class gets an equal share of N (water-filling: classes with fewer images than their share
give the rest to the others; the remainder goes to classes in a seeded hash order). Within a class,
images are taken in the order of ``blake2b(seed, image_id)``, so the sample depends only on the
seed and the set of image ids — not on file-system listing order — and adding images to a class
does not reshuffle the others. An image the caller rejects (corrupt, missing mask) is replaced by
the next one of its class; a class that runs out passes its deficit on to the others.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Hashable, Iterable, TypeVar

__all__ = ["hash_key", "allocate", "select_stratified", "SampleTooSmallError"]

T = TypeVar("T")
R = TypeVar("R")


class SampleTooSmallError(ValueError):
    """Fewer usable images than requested."""


def hash_key(seed: int, key: Hashable) -> bytes:
    """A stable, seed-dependent sort key (independent of Python's hash randomisation)."""
    return hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()


def allocate(n: int, capacities: dict[Hashable, int], seed: int) -> dict[Hashable, int]:
    """Split ``n`` into per-class quotas as equal as the classes' capacities allow."""
    total = sum(capacities.values())
    if n > total:
        raise SampleTooSmallError(f"{n} images requested but only {total} are available")
    quota = {label: 0 for label in capacities}
    left = n
    open_classes = sorted((label for label, cap in capacities.items() if cap > 0), key=lambda c: hash_key(seed, c))
    while left > 0:
        share = left // len(open_classes)
        if share == 0:
            for label in open_classes[:left]:
                quota[label] += 1
            break
        for label in open_classes:
            given = min(share, capacities[label] - quota[label])
            quota[label] += given
            left -= given
        open_classes = [label for label in open_classes if quota[label] < capacities[label]]
    return quota


def select_stratified(items: Iterable[T], n: int | None, seed: int, *, label: Callable[[T], Hashable],
                      key: Callable[[T], Hashable], accept: Callable[[T], R | None]) -> list[R]:
    """``n`` accepted results, stratified by ``label`` (every acceptable item when ``n`` is None), in hash order.

    ``accept(item)`` turns an item into a result or returns ``None`` to reject it (the caller records
    why); rejected items are replaced from the same class while it has any left.
    """
    by_class: dict[Hashable, list[tuple[bytes, T]]] = {}
    for item in items:
        by_class.setdefault(label(item), []).append((hash_key(seed, key(item)), item))
    for members in by_class.values():
        members.sort(key=lambda pair: pair[0])
    capacity = {c: len(members) for c, members in by_class.items()}
    wanted = sum(capacity.values()) if n is None else n
    quota = allocate(wanted, capacity, seed)
    cursor = {c: 0 for c in by_class}
    taken: dict[Hashable, list[tuple[bytes, R]]] = {c: [] for c in by_class}
    while True:
        for c, members in by_class.items():
            while len(taken[c]) < quota[c] and cursor[c] < len(members):
                order, item = members[cursor[c]]
                cursor[c] += 1
                result = accept(item)
                if result is not None:
                    taken[c].append((order, result))
        deficit = 0
        for c in by_class:  # after a pass, a class short of its quota has run out of items
            deficit += quota[c] - len(taken[c])
            quota[c] = len(taken[c]) if cursor[c] == len(by_class[c]) else quota[c]
        if deficit == 0 or n is None:
            break
        spare = {c: len(members) - cursor[c] for c, members in by_class.items() if cursor[c] < len(members)}
        got = sum(len(results) for results in taken.values())
        if sum(spare.values()) < deficit:
            raise SampleTooSmallError(f"only {got + sum(spare.values())} usable images for the {wanted} requested "
                                      f"({sum(cursor.values()) - got} rejected)")
        for c, extra in allocate(deficit, spare, seed).items():
            quota[c] += extra
    ordered = sorted((pair for results in taken.values() for pair in results), key=lambda pair: pair[0])
    return [result for _, result in ordered]

