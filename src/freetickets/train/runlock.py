"""One writer per run directory: an advisory lock held by ``freetickets train`` for its life.

``RUN_DIR/.freetickets.lock`` is locked with ``fcntl.flock(LOCK_EX)`` by the training process
(rank 0 only under torchrun) before it touches anything else in the directory, and stays locked
until the trainer returns or the process dies; the kernel drops the lock with the process, so a
run killed with SIGKILL never leaves a stale lock behind and ``--resume`` is not blocked. The file
holds the holder's ``pid@host`` (written after the lock is taken) so that a refused second writer
can name it. The file itself is never deleted: deleting a lock file races with a process that has
just opened it.

Readers (``evaluate``, ``report``, ``predict``) only *test* the lock (a shared, non-blocking
``flock`` on a read-only descriptor, released at once); they never create the file.

Semantics are those of ``flock(2)``: advisory (only freetickets processes honour it), per open
file, released on close or exit. On NFS the Linux client maps ``flock`` to NFS byte-range locks
(works across machines); Lustre needs the ``flock`` mount option (otherwise taking the lock fails
with one line, see :meth:`RunLock.acquire`).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from pathlib import Path

from freetickets.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".freetickets.lock"


class RunLocked(UserError):
    """Another process holds the run directory's lock."""


def lock_path(root: str | Path) -> Path:
    return Path(root) / LOCK_NAME


def holder(root: str | Path) -> str | None:
    """``pid@host`` of the process holding ``root``'s lock (``"unknown"`` if it wrote nothing
    yet), or None when nobody holds it. Creates nothing."""
    try:
        fd = os.open(lock_path(root), os.O_RDONLY)
    except OSError:
        return None  # no lock file (never trained here, or not a run directory)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError:
            return None  # the file system cannot lock: nothing to report
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "unknown"


def describe_holder(text: str) -> str:
    pid, _, host = text.partition("@")
    if pid == "unknown":
        return "a process that has not written its pid yet"
    return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


class RunLock:
    """The exclusive lock of one run directory (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Create the directory if needed and take the lock, or raise :class:`RunLocked` (one line
        naming the directory and the holder) without changing anything in the directory."""
        if self._fd is not None:
            return
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out: {self.root} exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path(self.root), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"--out: cannot write in {self.root}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read_holder(fd)
            os.close(fd)
            raise RunLocked(f"--out: {self.root} is being written by another freetickets train "
                            f"({describe_holder(who)}); refusing to touch it (wait for it to finish or stop it)") from None
        except OSError as exc:
            os.close(fd)
            hint = " (on Lustre, mount with -o flock)" if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS) else ""
            raise UserError(f"--out: cannot lock {lock_path(self.root)}: {exc.strerror or exc}{hint}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the lock itself is what matters; the pid is only for the message
        self._fd = fd
        log.debug("locked %s", lock_path(self.root))

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock
