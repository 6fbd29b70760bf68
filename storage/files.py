"""Paths and URIs through pyarrow's filesystems, and atomic writes.

Local paths and ``file://``, ``s3://``, ``gs://``, ``hdfs://`` URIs all resolve to a
``(pyarrow.fs.FileSystem, path)`` pair. Writes are atomic: on a local disk a temporary file in the
same directory is renamed over the target (``os.replace``); on an object store a single PUT is
already all-or-nothing, so the object is written directly under its final key.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["resolve", "join", "is_local", "read_bytes", "read_file", "exists", "atomic_write_bytes", "atomic_write_table",
           "list_files"]


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or a URI such as ``s3://bucket/key``."""
    text = os.fspath(location)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())


def is_local(filesystem: pafs.FileSystem) -> bool:
    return isinstance(filesystem, pafs.LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """Join path segments with ``/`` (what every pyarrow filesystem expects, local ones included)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(location: str | os.PathLike) -> bytes:
    """The whole content of one file, local or remote; ``FileNotFoundError`` names it."""
    return read_file(*resolve(location))


def read_file(filesystem: pafs.FileSystem, path: str) -> bytes:
    """The whole content of ``path`` on ``filesystem``; ``FileNotFoundError`` names it."""
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except OSError as err:  # pyarrow raises FileNotFoundError locally, a plain OSError on some object stores
        if isinstance(err, FileNotFoundError) or not exists(filesystem, path):
            raise FileNotFoundError(f"no such file: {path}") from err
        raise


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def list_files(filesystem: pafs.FileSystem, path: str, suffix: str = "") -> list[str]:
    """Files directly or recursively under ``path`` ending with ``suffix``, sorted; hidden ones excluded."""
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return sorted(
        info.path for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.path.endswith(suffix)
        and not any(part.startswith((".", "_")) for part in info.path[len(path):].split("/") if part)
    )


def atomic_write_bytes(filesystem: pafs.FileSystem, path: str, payload: bytes) -> None:
    """Write ``payload`` at ``path`` so that readers see the old file or the new one, never a part."""
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    if not is_local(filesystem):
        with filesystem.open_output_stream(path) as stream:
            stream.write(payload)
        return
    temporary = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_table(filesystem: pafs.FileSystem, path: str, table: pa.Table, *,
                       compression: str = "zstd") -> int:
    """Write ``table`` as one Parquet file atomically; returns its size in bytes."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=compression)
    payload = buffer.getvalue()
    atomic_write_bytes(filesystem, path, payload)
    return len(payload)
