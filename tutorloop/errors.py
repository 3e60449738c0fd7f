"""The one exception type for user mistakes: the CLI prints its message as a single line.

Raise it with a message that names the field, file or row at fault; never for a bug in tutorloop.
"""


class UserError(Exception):
    """A mistake in the config, the data or the environment that the user can fix."""
