"""The exceptions the CLI turns into one line and an exit status, never a traceback."""


class VaelabError(Exception):
    """A problem the user can fix; its message says what was wrong and what to do."""

    exit_code = 2


class Interrupted(VaelabError):
    """The user stopped the work (Ctrl-C); the message says what was kept and how to go on."""

    exit_code = 130
