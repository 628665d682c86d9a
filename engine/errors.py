"""User-facing errors: each carries one line that says what is wrong and where."""


class KdError(Exception):
    """An error the CLI and TUI show as one line, with no traceback."""


class InputError(KdError):
    """Bad input data (file, row, field); nothing was changed."""


class NotFound(KdError):
    """A named dataset, session, model, job, ... does not exist."""
