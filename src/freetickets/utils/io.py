"""Atomic writes and safe reads for every file the project writes or reads.

Every write goes to a temporary file in the destination directory, is flushed and fsynced, and is
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows), so a crash
never leaves a half-written file under the final name. Every ``torch.load`` uses
``weights_only=True`` so a file cannot execute code when loaded.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from freetickets.errors import UnsafeFileError, UserError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(exc, path) from None
    try:
        # mkstemp creates 0600 files; give the result the usual permissions (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(exc, path) from None
        raise
    _fsync_dir(path.parent)


def _write_error(exc: OSError, path: Path) -> OSError:
    """The same kind of ``OSError`` (so callers that tolerate write failures still can), naming
    the destination (not the temporary file) and saying that its previous version is intact."""
    why = exc.strerror or str(exc) or type(exc).__name__
    # OSError(errno, ...) picks the matching subclass (PermissionError for EACCES, ...)
    return OSError(exc.errno, f"cannot write ({why}); its previous version, if any, is intact", str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`. ``obj`` should hold only tensors and plain data."""
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except RuntimeError as exc:
        # torch's zip writer reports a failed write (e.g. a full disk) as RuntimeError
        if "write" not in str(exc).lower():
            raise
        raise OSError(errno.EIO, "cannot write (the write failed; is the disk full?); its previous version, "
                                 "if any, is intact", str(path)) from None


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (e.g. to ``metrics.jsonl``) and fsync; a torn last line is skipped by readers."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a file written by this project without executing code.

    Raises :class:`UnsafeFileError` if the file carries pickled objects other than tensors and
    plain containers, and :class:`UserError` if it is missing, truncated or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise on stderr for a file that is refused anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        if found or "Unsupported global" in msg:
            what = f" ({found.group(1)})" if found else ""
            raise UnsafeFileError(
                f"{path}: refused to load: the file carries pickled objects that could run code{what}"
            ) from None
        if "weights_only" in msg or "Weights only" in msg:
            # the restricted unpickler met an instruction it does not run: random bytes, or a pickle
            # of something other than tensors and plain containers
            raise UnsafeFileError(
                f"{path}: refused to load: not a plain-data torch file (corrupt, or pickled objects)"
            ) from None
        raise UserError(f"{path}: corrupt or truncated file ({type(exc).__name__})") from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line left by a crash."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
