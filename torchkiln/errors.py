"""Errors a user can act on. The CLI prints them without a traceback.

Exit codes: 2 for an invalid spec or bad usage (`SpecError`, `UsageError`),
1 for a run that failed (`RunError`).
"""

from __future__ import annotations

from dataclasses import dataclass


class KilnError(Exception):
    """Base of every error the CLI reports as a message rather than a traceback."""

    exit_code = 1


class RunError(KilnError):
    """A stage failed while running: bad data, a non-finite loss, a failed parity check."""

    exit_code = 1


class WriteError(RunError):
    """A file could not be written (no space left, an I/O error, a read-only folder): the
    message names the file and the reason, as the operating system gave it."""

    def __init__(self, path: str, cause: OSError) -> None:
        self.path, self.cause = path, cause
        super().__init__(f"cannot write {path}: {cause.strerror or cause}")


class InputError(RunError):
    """A stage's input artifact is missing a file, or holds one that is unreadable or
    inconsistent (truncated, edited by hand): the message names the file, and the runner
    adds which stage to run again to rewrite it."""

    def __init__(self, message: str, path: object) -> None:
        super().__init__(message)
        self.path = str(path).replace("\\", "/")


class PeerLost(RunError):
    """A worker of a distributed stage lost contact with another (which failed or was
    killed): a consequence, not the cause, which the launcher reports."""

    exit_code = 75  # EX_TEMPFAIL: the launcher tells it from a worker's own error


class Interrupted(KilnError):
    """A run stopped by Ctrl-C (SIGINT: exit 130) or SIGTERM (exit 143): one line says what
    was interrupted; nothing half-written is left."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


class Terminated(BaseException):
    """Raised by kiln's SIGTERM handler, so a terminated run unwinds (and cleans up) the way
    Ctrl-C does; a BaseException, so `except Exception` blocks let it through."""


class UsageError(KilnError):
    """The command line itself is wrong (a missing file, an unknown stage name)."""

    exit_code = 2


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a spec file, positioned at a line and column (both 1-based)."""

    file: str
    line: int
    col: int
    path: str
    message: str
    #: for a value inherited through `extends:`, where each file was extended
    #: (`child.yaml:2:10`), nearest first
    via: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.via:
            text += f" (via extends at {', '.join(self.via)})"
        return text


class SpecError(KilnError):
    """A spec is invalid. Carries every problem found, so all are reported at once."""

    exit_code = 2

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(set(issues), key=lambda i: (i.file, i.line, i.col, i.path, i.message))
        super().__init__("\n".join(str(i) for i in self.issues))
