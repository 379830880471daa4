"""The one exception type the CLI turns into a single clear error line."""


class PipelineError(Exception):
    """A problem the user can fix: the message names the file, line or param."""
