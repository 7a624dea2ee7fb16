"""The errors a person can fix, and the exit codes of every command-line program (`EXIT_CODES`,
which ends each program's --help).

Set `JAXRESNET_VERBOSE=1` (or pass `--verbose`) to see the traceback of a user error too.
"""

EXIT_CODES = """exit codes:
  0    done
  1    an unexpected error (a bug), shown with its traceback
  2    a user error: a bad flag or config value, a missing or damaged file or checkpoint, no
       network, a workdir in use; one `error: ...` line names the problem and the fix
       (--verbose, or JAXRESNET_VERBOSE=1, adds the traceback)
  3    training diverged (a non-finite loss); the last good checkpoint is intact
  130  stopped by Ctrl-C, after saving a checkpoint at the current step
  143  stopped by SIGTERM (a preemption), after saving a checkpoint at the current step
"""

USER_ERROR_EXIT = 2
DIVERGED_EXIT = 3


class UserError(ValueError, FileNotFoundError):
  """A problem with the input, not with jaxresnet: its message names the problem and the fix.

  It is a ValueError (a bad value) and a FileNotFoundError (a missing file) both, so that callers
  catching either of the standard types keep working.
  """

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ""


class NoNetwork(UserError, ConnectionError):
  """A download is needed and its host is unreachable."""


class Diverged(FloatingPointError):
  """Training produced a non-finite loss; nothing non-finite was saved."""


class Stopped(Exception):
  """Training stopped on a signal after saving its state; `exit_code` is 130 or 143."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
