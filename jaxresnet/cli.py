"""What the command-line programs share: their common flags, a quiet log, and readable errors.

Every absl CLI (`train`, `evaluate`, `predict`) defines its flags in a `define_flags()` called
under `if __name__ == "__main__"`, so that importing one program (tests import all three) never
defines another's flags twice, and starts through `run`. The argparse programs (the converters,
`scripts/`) parse with `ArgumentParser` and start through `run_plain`. Either way a user error,
a bad flag or option included, ends in one `error:` line and the exit codes of
`jaxresnet/errors.py`, which every program's --help ends with.
"""

import argparse
import difflib
import functools
import logging as std_logging
import os
import pathlib
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxresnet import errors

FLAGS = flags.FLAGS
_PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parent)
VERBOSE_ENV = "JAXRESNET_VERBOSE"
HELP_HINT = "see --help"  # Ends the message of a bad flag or option.


def _program() -> str:
  """absl's name of the program's module: flags defined here are filed under it, so that its
  --help (which lists the main module's flags only) lists them too."""
  return sys.argv[0]


def define_workdir_flag(help_text: str = "A training workdir.") -> None:
  flags.DEFINE_string("workdir", None, help_text, module_name=_program())
  flags.mark_flag_as_required("workdir")


def define_checkpoint_flag() -> None:
  flags.DEFINE_string(
    "checkpoint", "latest", "latest, best (chosen on validation) or a step.", module_name=_program()
  )


def define_config_flag(help_text: str) -> None:
  """A required `--config FILE[:ARG]` (a locked ConfigDict) with its `--config.FIELD=VALUE`
  overrides, whose problems are flag errors (`_ConfigFileParser`)."""
  config_flags.DEFINE_config_file("config", None, help_text, lock_config=True)
  FLAGS["config"].parser = _ConfigFileParser("config", FLAGS["config"].parser)
  FLAGS.register_flag_by_module(_program(), FLAGS["config"])  # For --help.
  flags.mark_flag_as_required("config")


class _ConfigFileParser(flags.ArgumentParser):
  """ml_collections' parser of `--config`, wrapped to name a missing or unreadable file, an
  error in the file and a `--config.FIELD` the config lacks in one line (ml_collections' own:
  tracebacks, or an error deferred to the config's first use)."""

  def __init__(self, name: str, parser: flags.ArgumentParser):
    self.name, self._parser = name, parser

  def flag_type(self) -> str:
    return self._parser.flag_type()

  def parse(self, path: str) -> ml_collections.ConfigDict:
    file = pathlib.Path(path.split(":", 1)[0])
    if not file.is_file() or not os.access(file, os.R_OK):
      problem = "cannot be read" if file.is_file() else "does not exist"
      raise ValueError(f"the file {problem}: pass a config file such as configs/sgd.py")
    try:
      config = self._parser.parse(path)
    except Exception as error:  # The file is the user's: whatever it raises, name where.
      where = _where(error, file)
      raise ValueError(f"{where}: fix the file") from error
    if not isinstance(config, ml_collections.ConfigDict):
      raise ValueError(
        f"its get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict"
      )
    for field in _overridden_fields(self.name):
      if not _has_field(config, field):
        near = difflib.get_close_matches(field, _field_names(config), n=1)
        hint = f"did you mean --{self.name}.{near[0]}?" if near else "configs/default.py lists them"
        raise ValueError(f"no field {field!r} in it (--{self.name}.{field}): {hint}")
    return config


def _where(error: BaseException, file: pathlib.Path) -> str:
  """'line N: Type: message' of an exception raised by the config file (its innermost cause)."""
  while error.__context__ is not None and str(error).startswith("Error whilst parsing"):
    error = error.__context__  # ml_collections re-raises TypeError/ValueError with the trace.
  if isinstance(error, SyntaxError):
    return f"line {error.lineno}: SyntaxError: {error.msg}"
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
           if pathlib.Path(f.filename).resolve() == file.resolve()]  # fmt: skip
  where = f"line {lines[-1]}: " if lines else ""
  return f"{where}{type(error).__name__}: {error}"


def _overridden_fields(name: str) -> list[str]:
  """The FIELD of every `--NAME.FIELD[=VALUE]` (and `--noNAME.FIELD`) on the command line, as
  ml_collections finds them."""
  pattern = re.compile(rf"-{{1,2}}(no)?{re.escape(name)}\.([^=]+)")
  return [m[2] for m in map(pattern.match, sys.argv[1:]) if m]


def _has_field(config: Any, dotted: str) -> bool:
  for part in dotted.split("."):
    if not isinstance(config, ml_collections.ConfigDict) or part not in config:
      return False
    config = config[part]
  return True


def _field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  names = []
  for key, value in config.items():
    names.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      names += _field_names(value, f"{prefix}{key}.")
  return names


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
  """Prints a user error as one `error: ...` line (after its traceback if `verbose()`); its exit
  code. A message that quotes a library's multi-line error is joined into the one line."""
  if verbose():
    traceback.print_exception(error)
  message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
  print(f"error: {message}", file=sys.stderr)
  return errors.DIVERGED_EXIT if isinstance(error, errors.Diverged) else errors.USER_ERROR_EXIT


def run(main: Callable[[list[str]], None]) -> None:
  """absl's `app.run(main)`, exiting with the codes of `jaxresnet/errors.py`.

  A bad flag is a user error (absl's own: a FATAL line and exit 1). Unexpected exceptions keep
  their traceback (exit 1).
  """
  flags.DEFINE_bool("verbose", False, f"Show tracebacks of user errors too (or {VERBOSE_ENV}=1).",
                    module_name=_program())  # fmt: skip
  program = sys.modules["__main__"]
  program.__doc__ = f"{program.__doc__ or ''}\n{errors.EXIT_CODES}"  # absl's --help prints it.
  app.run(functools.partial(_main, main), flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as error:
    bad_flag = errors.UserError(f"{error} ({HELP_HINT})")
    bad_flag.__cause__ = error  # For --verbose.
    sys.exit(report_error(bad_flag))


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser for the argparse programs: a bad option raises a UserError, which
  `run_plain` prints as one `error:` line (argparse's own: the usage and `PROG: error: ...`,
  exit 2); --help keeps the description's layout and ends with the exit codes."""

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    kwargs.setdefault("epilog", errors.EXIT_CODES)
    super().__init__(**kwargs)

  def error(self, message: str) -> NoReturn:
    raise errors.UserError(f"{message} ({HELP_HINT})")


def run_plain(main: Callable[[], None]) -> None:
  """`main()` of an argparse program (the converters, scripts), exiting as `run` does."""
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
