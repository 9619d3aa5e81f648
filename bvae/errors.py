"""The two kinds of failure a user or a scheduler can act on, and their exit codes.

Every error bvae raises on purpose derives from one of these, next to the builtin it refines
(``class ParamsError(BadInput, ValueError)``). The CLI maps them to exit codes; anything else
is a bug and exits 1 with its traceback. A builtin ``ValueError`` or ``KeyError`` is never read
as bad input: that would hide bugs behind a one-line message.
"""

from __future__ import annotations

import errno

# sysexits.h: 75 is EX_TEMPFAIL ("try again later"); 2 is the shell's usage error; 1 is what
# Python exits with on an uncaught exception.
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_RETRY_LATER = 75


class BadInput(Exception):
    """Params, files or arguments are wrong: fix them; retrying as is cannot help (exit 2)."""


class MissingInput(BadInput, FileNotFoundError):
    """A file a stage reads is not there: the message names the stage that makes it."""


class InvalidSetting(BadInput, ValueError):
    """A setting that cannot work here (a device that is not visible, a batch that does not split)."""


class Transient(Exception):
    """A server or the network failed in a way that may pass: retry later (exit 75)."""


# What the operating system says about the machine, not about bvae's code: a full disk, a
# read-only file system, no permission, a symlink loop. The CLI reports these in one line and
# exits 2 (fix the machine or the path, then rerun); any other OSError stays a bug (exit 1).
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ELOOP})


def machine_error(error: OSError) -> str | None:
    """One line for an OSError about the machine (:data:`MACHINE_ERRNOS`), else None."""
    if error.errno not in MACHINE_ERRNOS:
        return None
    where = f" ({error.filename})" if error.filename else ""
    advice = {
        errno.ENOSPC: "free space there and run again",
        errno.EDQUOT: "free space within your quota and run again",
        errno.ELOOP: "the path is a loop of symbolic links: give the real path",
    }.get(error.errno, "make the path writable or choose another, and run again")
    return f"{error.strerror}{where}: {advice}. Files bvae writes are atomic: nothing partial was left."
