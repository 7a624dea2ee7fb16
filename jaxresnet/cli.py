"""What the command-line programs share: their common flags, a quiet log, and readable errors.

Every CLI (`train`, `evaluate`, `predict`) defines its flags in a `define_flags()` called under
`if __name__ == "__main__"`, so that importing one program (tests import all three) never
defines another's flags twice, and starts through `run`, which turns jaxresnet's own errors into
one `error:` line and the exit codes of `jaxresnet/errors.py`.
"""

import functools
import logging as std_logging
import os
import pathlib
import sys
import traceback
from collections.abc import Callable

from absl import app, flags, logging

from jaxresnet import errors

FLAGS = flags.FLAGS
_PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parent)
VERBOSE_ENV = "JAXRESNET_VERBOSE"


def define_workdir_flag(help_text: str = "A training workdir.") -> None:
  flags.DEFINE_string("workdir", None, help_text)
  flags.mark_flag_as_required("workdir")


def define_checkpoint_flag() -> None:
  flags.DEFINE_string("checkpoint", "latest", "latest, best (chosen on validation) or a step.")


def quiet_libraries() -> None:
  """jaxresnet's own lines at INFO; other libraries' (Orbax logs every save) from WARNING up."""
  logging.get_absl_handler().addFilter(
    lambda record: (
      record.levelno >= std_logging.WARNING
      or str(pathlib.Path(record.pathname).resolve()).startswith(_PACKAGE_DIR)
    )
  )


def verbose() -> bool:
  """Whether user errors show their traceback: `--verbose` or JAXRESNET_VERBOSE=1."""
  flag = "verbose" in FLAGS and FLAGS.is_parsed() and FLAGS.verbose
  return (
    bool(flag) or "--verbose" in sys.argv[1:] or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
  )


def report_error(error: BaseException) -> int:
  """Prints a user error as `error: ...` (with its traceback if `verbose()`); its exit code."""
  if verbose():
    traceback.print_exception(error)
  print(f"error: {error}", file=sys.stderr)
  return errors.DIVERGED_EXIT if isinstance(error, errors.Diverged) else errors.USER_ERROR_EXIT


def run(main: Callable[[list[str]], None]) -> None:
  """absl's `app.run(main)`, exiting with the codes of `jaxresnet/errors.py`.

  Unexpected exceptions keep their traceback (exit 1).
  """
  flags.DEFINE_bool("verbose", False, f"Show tracebacks of user errors too (or {VERBOSE_ENV}=1).")
  app.run(functools.partial(_main, main))


def run_plain(main: Callable[[], None]) -> None:
  """`main()` of an argparse program (the converters), exiting as `run` does."""
  try:
    main()
  except (errors.UserError, errors.Diverged) as error:
    sys.exit(report_error(error))


def _main(main: Callable[[list[str]], None], argv: list[str]) -> None:
  try:
    main(argv)
  except errors.Stopped as stopped:
    logging.warning("%s", stopped)
    sys.exit(stopped.exit_code)
  except (errors.UserError, errors.Diverged) as error:
    sys.exit(report_error(error))
