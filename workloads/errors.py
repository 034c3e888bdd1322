"""The one exception type for mistakes a user can fix."""


class OptiStackError(Exception):
    """A problem the user can fix: the message says what to change.

    The CLI prints it without a traceback; the DAG fails the task with it.
    """
