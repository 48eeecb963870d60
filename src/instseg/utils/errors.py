"""Errors a user can cause and fix (a missing or corrupt file, a bad config, an untrusted
checkpoint, a wrong option value), as opposed to bugs.

The ``instseg`` console script (:mod:`instseg.cli.main`) prints any :class:`UserError` as one
line, ``instseg <command>: error: <message>``, on stderr and exits with status 2 (``--debug`` or
``INSTSEG_DEBUG=1`` shows the traceback instead). So the message must say everything: the file
(or option) and the problem, e.g. ``runs/x/model.pt: corrupt or truncated checkpoint (...)``.

The subclasses also derive from the built-in exception that code caught before they existed
(``FileNotFoundError``, ``ValueError``, ``OSError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "InvalidInputError",
    "MissingFileError",
    "UnreadableFileError",
    "UserError",
    "one_line",
]


class UserError(Exception):
    """A problem with the user's input; ``str(error)`` names the file or option and the problem."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or a glob matched nothing)."""


class InvalidInputError(UserError, ValueError):
    """A file or value has the wrong format or content (bad JSON, wrong task, no frames...)."""


class UnreadableFileError(UserError, OSError):
    """A file exists but cannot be read or decoded (corrupt, truncated, not an image...)."""


def one_line(error: BaseException) -> str:
    """``str(error)`` on a single line (newlines folded into ``; ``); the class name when the
    message is empty."""
    parts = [p.strip() for p in str(error).splitlines() if p.strip()]
    text = "; ".join(parts)
    return text or type(error).__name__
