"""Bounded reads of user files: read at most N bytes of a file, or refuse with a clear error.

Every command that reads a user-given file whole into memory (a feature spec, a search
space, an alert-rules or policy file, a model directory's JSON) goes through
:func:`read_text_limited` or :func:`read_bytes_limited`, so a wrong path (a data file, a
device, a multi-GB dump) is refused with one line naming the file, its kind and the limit
instead of exhausting memory. Each limit is a named constant next to the code that uses it
(README, "Resource limits", lists them all).
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import CtrError, InputError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def format_size(n: int) -> str:
    """``n`` bytes in binary units: ``1 MiB``, ``4.5 KiB``, ``300 bytes``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def too_large(what: str, size: int | None, limit: int, error: type[CtrError] = InputError,
              hint: str = "") -> CtrError:
    """The error for ``what`` (e.g. ``"feature spec x.toml"``) of ``size`` bytes (None: unknown,
    more than ``limit``) over ``limit``."""
    if size is None:
        actual = f"more than {format_size(limit)}"
    else:
        actual = format_size(size) + (f" ({size:,} bytes)" if size >= KiB else "")
    return error(f"{what} is {actual}, over the {format_size(limit)} limit{'; ' + hint if hint else ''}")


def read_bytes_limited(path: str | os.PathLike[str], limit: int, what: str,
                       error: type[CtrError] = InputError) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them; ``error`` (naming ``what`` and the file)
    when it holds more. Reads ``limit + 1`` bytes at most, whatever the file (regular,
    device). Other :class:`OSError` (missing file, permission) propagate for the caller to word."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
        if len(data) > limit:
            try:
                size: int | None = os.fstat(f.fileno()).st_size or None
            except OSError:
                size = None
            raise too_large(f"{what} {Path(path)}", size if size and size > limit else None, limit, error)
    return data


def read_text_limited(path: str | os.PathLike[str], limit: int, what: str,
                      error: type[CtrError] = InputError, encoding: str = "utf-8") -> str:
    """:func:`read_bytes_limited` decoded as ``encoding``; ``error`` when it is not valid text."""
    data = read_bytes_limited(path, limit, what, error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{what} {Path(path)} is not {encoding.upper()} text: {exc.reason} at byte {exc.start}") from None


def read_tail(path: str | os.PathLike[str], max_bytes: int) -> str:
    """The last ``max_bytes`` of a (log) file as text, undecodable bytes replaced; reads no more."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - max_bytes))
        return f.read(max_bytes).decode("utf-8", "replace")
