"""The one error type the CLI turns into a single line on stderr and exit status 2."""


class UsageError(Exception):
    """Bad input or a state the user can fix (unknown instance, missing key, unreachable host...).

    Raised instead of letting boto3 or subprocess tracebacks reach the user: the message names
    what is wrong and what to do about it.
    """
