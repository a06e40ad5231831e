"""The kit's one error base.

Every error medtl raises on purpose derives from :class:`MedtlError`: a bad spec, a bad file,
a run that cannot go on. Its message names the file, line or key and says what to do; the
command line prints it as one line and exits with status 2. Any other exception is a bug in
the kit and keeps its traceback.

The subclasses below are the kinds the kit needs more than once; a module with errors of its
own (DICOM, surgery, ...) derives them from one of these. The builtin bases (ValueError,
FileExistsError, ...) are kept beside so code that catches those still does.
"""

from __future__ import annotations


class MedtlError(Exception):
    """An error the user can act on; the message says what is wrong and where."""


class ConfigError(MedtlError, ValueError):
    """A spec, option or configuration value that cannot be used; the message names it."""


class InputError(MedtlError, ValueError):
    """Input data (a file, a folder, a database) that cannot be used; the message names it."""


class MissingFileError(MedtlError, FileNotFoundError):
    """A file or folder the user named (or the kit expects) is not there."""


class OutputExistsError(MedtlError, FileExistsError):
    """The destination already exists; medtl never overwrites a finished output."""


class RunError(MedtlError, RuntimeError):
    """A run that cannot go on (or a result that cannot be trusted); the message says why."""


class DiskFullError(RunError):
    """No room to write (disk full, quota exceeded, file size limit): the message names where.
    What was being written has been removed, so the same command can be run again once there
    is space; it resumes where finished outputs stop."""


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line (continuation lines joined with ' | ')."""
    parts = [p.strip() for p in str(exc).splitlines() if p.strip()]
    return " | ".join(parts) or type(exc).__name__
