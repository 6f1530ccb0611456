"""The command line's one error style and its exit codes.

Every sub-command reports a problem the user can fix as ``faceclip <command>: error: <message>`` on stderr,
without a traceback, and exits with one of:

- ``0`` (:data:`EXIT_OK`): done;
- ``1`` (:data:`EXIT_FAILED`): the command ran but some of its work failed (a photo without a face in a batch,
  an identity that could not be scored with ``--strict``, a training run that diverged);
- ``2`` (:data:`EXIT_BAD_INPUT`): nothing was done because an argument, an input file or a model is wrong or
  missing (argparse's usage errors use 2 as well);
- ``130`` (:data:`EXIT_INTERRUPTED`): stopped with Ctrl-C.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A problem the user can fix, raised by a sub-command; :func:`faceclip.cli.main` prints it.

    Args:
        message: what was wrong and what to do, naming the option or file.
        code: the exit code (:data:`EXIT_BAD_INPUT` unless the work itself failed).
    """

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def is_user_error(error: BaseException) -> bool:
    """True for errors that describe the user's input: value and file errors the library raises itself (its
    own error classes, or built-in ones raised by its input checks with a message for the user), and OS errors
    about a named file (a photo that cannot be read, an output folder without write permission).

    Errors raised inside other libraries (torch, diffusers) keep their traceback: they are bugs to report.
    """
    if isinstance(error, CommandError):
        return True
    if isinstance(error, OSError) and (error.filename is not None or error.errno in _FILE_SYSTEM_ERRNOS):
        return True
    if not isinstance(error, (ValueError, LookupError, OSError)):
        return False
    return type(error).__module__.startswith("faceclip.") or _raised_by_faceclip(error)


_FILE_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""A full disk, a quota, a read-only file system, no permission: the user's to fix, wherever it happens."""


def _raised_by_faceclip(error: BaseException) -> bool:
    """True when the innermost frame of ``error``'s traceback is in a faceclip module (an explicit check)."""
    frame, traceback = None, error.__traceback__
    while traceback is not None:
        frame, traceback = traceback.tb_frame, traceback.tb_next
    return frame is not None and str(frame.f_globals.get("__name__", "")).startswith("faceclip.")


def message_of(error: BaseException) -> str:
    """The one-line text shown for ``error``."""
    if isinstance(error, OSError) and not type(error).__module__.startswith("faceclip."):
        if error.filename is not None:
            return f"{error.filename}: {error.strerror or error}"
        if error.errno in _FILE_SYSTEM_ERRNOS:
            reason = error.strerror or str(error)
            return f"{reason} while writing; nothing partial was left. Free space, or choose another --out."
    return str(error)
