"""The error type for bad user input: the CLI prints its message as one paragraph, no traceback."""


class UsageError(Exception):
    """Bad input from the user (a space file, a flag, a config). The message says what is accepted."""
