"""Graceful preemption: SIGTERM/SIGUSR1 stop training at a step boundary with a checkpoint.

Clusters announce preemption with a signal (SLURM: SIGTERM, or the one ``--signal`` names;
Kubernetes: SIGTERM, then SIGKILL after the grace period). While a run trains, the handler here
only records the signal; the training loop asks :meth:`RunGuard.should_stop` after every
optimizer + sparse-engine step, writes the usual exact-resume step checkpoint and calls
:meth:`RunGuard.stop`, which raises :class:`freetickets.errors.Preempted`. The CLI turns that into
one line on stderr and exit status :data:`EXIT_PREEMPTED`.

* Under DDP the flag is all-reduced at every check, so every rank stops after the same step
  (a signal delivered to one rank only stops them all); rank 0 writes the checkpoint and every
  rank waits for it before exiting.
* At the last batch of an epoch no step checkpoint can be exact (the end-of-epoch work, e.g. the
  EDST jump, uses that batch's gradient), so the stop waits for the end-of-epoch checkpoint,
  after validation; the loop checks again there.
* Which signals: ``FREETICKETS_PREEMPT_SIGNALS`` (comma-separated names, default ``TERM,USR1``;
  ``none`` keeps the default actions). A repeated signal is ignored (torchrun forwards the
  signal again when a sibling exits first); SIGKILL, or SIGINT (Ctrl-C), stop at once.

:class:`RunGuard` also owns the run directory's lock (:mod:`freetickets.train.runlock`), so the
trainer has one object for "this process is the run's writer".
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import torch

from freetickets.errors import Preempted, UserError
import torch.distributed as _dist

from freetickets.train.distributed import DistInfo, cleanup_distributed
from freetickets.train.runlock import RunLock

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, the same command may be re-run with --resume
ENV_SIGNALS = "FREETICKETS_PREEMPT_SIGNALS"
DEFAULT_SIGNALS = "TERM,USR1"


def preempt_signals(text: str | None = None) -> list[signal.Signals]:
    """The signals named by ``text`` (default: the environment variable, else TERM,USR1)."""
    raw = (text if text is not None else os.environ.get(ENV_SIGNALS, DEFAULT_SIGNALS)).strip()
    if raw.lower() in ("", "none", "off"):
        return []
    out = []
    for part in raw.split(","):
        name = part.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None)
        if sig is None or sig in (signal.SIGKILL, signal.SIGSTOP):
            raise UserError(f"{ENV_SIGNALS}: '{part.strip()}' is not a signal that can be caught (e.g. TERM,USR1)")
        out.append(sig)
    return out


class RunGuard:
    """The trainer's writer-side guard: the run directory lock and the preemption flag.

    ``with guard:`` installs the signal handlers (main thread only) and, on exit, restores the
    previous handlers and releases the lock (if :meth:`lock` took it).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = RunLock(root)
        self.signum: int | None = None
        self._remote = False  # the signal reached another rank, not this one
        self._previous: dict[int, object] = {}
        self._ignore_after = False  # stopped under torchrun: leave the signals ignored (see __exit__)

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> "RunGuard":
        self.signum, self._remote, self._ignore_after = None, False, False
        signals = preempt_signals()
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        elif signals:
            log.debug("not the main thread: preemption signals keep their handlers")
        return self

    def __exit__(self, *exc) -> None:
        # After a stop under torchrun the signals stay ignored (SIG_IGN) for the rest of the
        # process: when the first rank exits, torchrun sends SIGTERM to the ranks still exiting,
        # and the default action would turn their documented exit status into -15 (measured).
        ignore = self._ignore_after and isinstance(exc[1], Preempted)
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore else previous)
        self._previous.clear()
        self._lock.release()

    def _handler(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: stopping after the current step with a checkpoint", signal.Signals(signum).name)

    def lock(self) -> None:
        """Take the run directory's lock (rank 0 only; see :class:`RunLock`)."""
        self._lock.acquire()

    # ------------------------------------------------------------------ the loop's questions
    def should_stop(self, dist: DistInfo, device: torch.device) -> bool:
        """Whether any rank received a preemption signal. Under DDP this is a collective: every
        rank must call it at the same point, and all get the same answer."""
        if not dist.enabled:
            return self.signum is not None
        flag = torch.tensor([0 if self.signum is None else int(self.signum)], dtype=torch.int64, device=device)
        if _dist.is_available() and _dist.is_initialized():
            _dist.all_reduce(flag, op=_dist.ReduceOp.MAX)
        if self.signum is None and int(flag) != 0:
            self.signum, self._remote = int(flag), True  # another rank's signal
        return int(flag) != 0

    def stop(self, dist: DistInfo, where: str, checkpoint: Path) -> None:
        """Called by every rank after rank 0 wrote the checkpoint: wait for each other, release
        the process group and raise :class:`Preempted` with the one line the CLI prints."""
        self._ignore_after = dist.enabled
        cleanup_distributed(dist)  # every rank is here: rank 0's checkpoint is on disk
        name = signal.Signals(self.signum).name + (" (on another rank)" if self._remote else "")
        raise Preempted(f"stopped by {name} {where}; checkpoint written to {checkpoint}; continue with "
                        f"`freetickets train --resume --out {self.root}` (exit status {EXIT_PREEMPTED})")
