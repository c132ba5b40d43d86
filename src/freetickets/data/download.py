"""Fetching the official archives: streamed download, MD5 check, safe extraction.

Only used when the user passes ``download=True``; nothing in the library downloads otherwise.
The fetch function is injectable so the checksum and extraction logic is testable offline.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from freetickets.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["Resource", "RESOURCES", "md5sum", "download_file", "safe_extract_tar", "fetch_resource"]

Fetch = Callable[[str, Path], None]


@dataclass(frozen=True)
class Resource:
    """An official archive: where it is, its checksum, and whether to unpack it."""

    url: str
    filename: str
    md5: str
    extract: bool


RESOURCES: dict[str, Resource] = {
    "cifar10": Resource(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        True,
    ),
    "cifar100": Resource(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        True,
    ),
    "svhn": Resource(
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
        False,
    ),
}


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _urllib_fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out, length=1 << 20)


def download_file(url: str, dest: str | os.PathLike, md5: str, *, fetch: Optional[Fetch] = None) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right MD5 is already there.

    The data go to a temporary file next to ``dest`` and are renamed only after the checksum
    matches, so a failed or tampered download never appears under the final name.
    """
    dest = Path(dest)
    if dest.is_file() and md5sum(dest) == md5:
        logger.info("%s already present with the right checksum", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        logger.info("downloading %s to %s", url, dest)
        try:
            (fetch or _urllib_fetch)(url, tmp)
        except OSError as exc:  # URLError is an OSError
            raise UserError(f"could not download {url} ({exc}); download it by hand to {dest}") from None
        got = md5sum(tmp)
        if got != md5:
            raise UserError(f"checksum mismatch for {url}: md5 {got}, expected {md5}; delete partial files and retry")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def safe_extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar archive into ``dest``, refusing anything that could escape it.

    Every member must be a regular file or a directory with a relative path that stays inside
    ``dest`` (no absolute paths, no ``..``, no links or device files). All members are checked
    before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                bad = (
                    p.is_absolute()
                    or ".." in p.parts
                    or m.name.startswith(("/", "\\"))
                    or not (m.isfile() or m.isdir())
                )
                target = (root / m.name).resolve()
                if bad or (target != root and root not in target.parents):
                    raise UserError(f"{archive}: refusing unsafe archive member {m.name!r}")
            for m in members:
                target = root / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 20)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{archive}: corrupt or unreadable archive ({exc}); delete it and retry") from None


def fetch_resource(name: str, data_dir: str | os.PathLike, *, fetch: Optional[Fetch] = None,
                   resources: Optional[dict[str, Resource]] = None) -> Path:
    """Download (and unpack) the official archive ``name`` into ``data_dir``; returns the file."""
    table = RESOURCES if resources is None else resources
    if name not in table:
        raise ValueError(f"no download for {name!r}; downloadable: {', '.join(sorted(table))}")
    res = table[name]
    data_dir = Path(data_dir)
    path = download_file(res.url, data_dir / res.filename, res.md5, fetch=fetch)
    if res.extract:
        safe_extract_tar(path, data_dir)
    return path
