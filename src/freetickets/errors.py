"""Exception types.

``UserError`` marks a mistake in what the user asked for (a bad argument, a missing file, an
incomplete run directory). The CLI prints its message as one line on stderr and exits with
status 2; no traceback. Library code may also raise plain ``ValueError`` for bad arguments; the
CLI treats those the same way.
"""


class UserError(ValueError):
    """A user mistake with a one-line explanation (which argument, what is allowed)."""


class UnsafeFileError(UserError):
    """A file the project was asked to read is not a plain-data file (e.g. carries pickled code)."""


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss or weight."""


class Preempted(Exception):
    """Training stopped on a preemption signal after writing a checkpoint (see
    :mod:`freetickets.train.preempt`); the message is the one line the CLI prints."""
