"""The one exception type that means "the user's input is wrong" (exit code 2)."""


class UserError(Exception):
    """Bad input or usage. The message is one plain line: what is wrong and how to fix it.

    The CLI prints it without a traceback (unless --debug) and exits with code 2.
    """

    def __init__(self, message: str):
        # One line, always: callers sometimes pass messages built from library errors.
        super().__init__(" ".join(str(message).split()))


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (a BaseException, so no ``except
    Exception`` swallows it), running every cleanup on the way out. ``run_dir`` names the compress run
    that can be finished with --resume, when there is one."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.run_dir = None
