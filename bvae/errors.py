"""The two kinds of failure a user or a scheduler can act on, and their exit codes.

Every error bvae raises on purpose derives from one of these, next to the builtin it refines
(``class ParamsError(BadInput, ValueError)``). The CLI maps them to exit codes; anything else
is a bug and exits 1 with its traceback. A builtin ``ValueError`` or ``KeyError`` is never read
as bad input: that would hide bugs behind a one-line message.
"""

from __future__ import annotations

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
