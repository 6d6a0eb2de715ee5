"""The one exception type for mistakes a user can fix (bad flag, missing file, corrupt checkpoint).

The CLI prints its message as one line on stderr and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or files, explained in one line."""
