"""The one exception type for mistakes a user can fix (config, data, environment)."""


class UserError(Exception):
    """A user's mistake: reported as one line naming the culprit and the fix, exit code 2.

    Our own bugs raise ordinary exceptions and keep their tracebacks.
    """
