"""The one exception type the CLI turns into a single-line message instead of a traceback."""


class ArchbenchError(Exception):
    """A user-facing problem: bad params, unknown names, missing data. The message names the fix."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is, and multi-line YAML/argparse errors are folded.
        super().__init__(" ".join(str(message).split()))


class DivergedError(ArchbenchError):
    """A run whose loss became NaN/inf or passed its bound: a failure, never a published number."""
