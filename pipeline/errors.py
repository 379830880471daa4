"""The one exception type the CLI turns into a single clear error line, and the disk
errors it turns into one line too."""

import errno
import os


class PipelineError(Exception):
    """A problem the user can fix: the message names the file, line or param."""


# Errors of the disk a stage writes to, not of its input: no traceback helps with these.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_WHAT_TO_DO = {
    errno.ENOSPC: "free some space, then run it again",
    errno.EDQUOT: "free some space, then run it again",
    errno.EROFS: "make that folder writable (or work in a writable copy), then run it again",
    errno.EACCES: "check the permissions of that file and its folder, then run it again",
    errno.EPERM: "check the owner and permissions of that file and its folder, then run it again",
}


def disk_error(exc: OSError) -> str:
    """One line for a disk error: the file, what happened, what to do. Finished outputs stay."""
    where = os.fsdecode(exc.filename) if exc.filename else "a file"
    if os.path.isabs(where) and where.startswith(os.getcwd() + os.sep):
        where = os.path.relpath(where)  # the project's own paths, as the user knows them
    return f"{where}: {exc.strerror or exc}; {_WHAT_TO_DO.get(exc.errno, 'check the disk')}"
