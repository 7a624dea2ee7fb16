"""What the command-line programs share: their common flags, and a quiet log.

Every CLI (`train`, `evaluate`, `predict`) defines its flags in a `define_flags()` called under
`if __name__ == "__main__"`, so that importing one program (tests import all three) never
defines another's flags twice.
"""

import logging as std_logging
import pathlib

from absl import flags, logging

FLAGS = flags.FLAGS
_PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parent)


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
