"""Runs many command lines of the CLIs from one warm process, each as `python -m` would.

    python -m tests.cli_runner < commands.json     # [["MODULE", "ARG", ...], ...]

prints a JSON list with each command's exit code, stdout and stderr. The process first imports
what every CLI imports (torchvision first: after TensorFlow it crashes), then runs each command
in a child forked from it: `runpy.run_module(MODULE, run_name="__main__", alter_sys=True)`, which
is how `python -m MODULE` runs a module, with sys.argv set, a fresh copy of MODULE as
`__main__` and absl's flags still undefined; an exception that escapes is printed with its
traceback and exits 1, as the interpreter does. A command then costs its own work, not a new
interpreter's 3-6 s of imports. Nothing initialises JAX's backend before the forks.
"""

import torchvision  # noqa: F401  (first: see above)

# isort: split
import importlib
import json
import os
import runpy
import sys
import tempfile
import traceback

WARM = ("jaxresnet.train", "jaxresnet.evaluate", "jaxresnet.predict", "convert.torch_to_flax",
        "convert.flax_to_torch", "scripts.compare_torch", "scripts.benchmark")  # fmt: skip


def _child(module: str, args: list[str], stdout: int, stderr: int) -> int:
  """Runs `python -m module args...` in this (forked) process; its exit code."""
  os.dup2(stdout, 1)
  os.dup2(stderr, 2)
  sys.modules.pop(module, None)  # Run afresh as __main__, as `python -m` does.
  sys.argv = [module, *args]  # runpy puts the module's file first.
  try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    code = 0
  except SystemExit as stop:  # As the interpreter: a message is printed, and exits 1.
    code = stop.code or 0
    if not isinstance(code, int):
      print(code, file=sys.stderr)
      code = 1
  except BaseException:  # As the interpreter: the traceback, exit 1.
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  return code


def run(command: list[str], folder: str) -> dict:
  """{"command", "returncode", "stdout", "stderr"} of one command, run in a forked child."""
  paths = [os.path.join(folder, name) for name in ("stdout", "stderr")]
  files = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) for p in paths]
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    code = 1
    try:
      code = _child(command[0], command[1:], *files)
    finally:
      os._exit(code)
  for file in files:
    os.close(file)
  _, status = os.waitpid(pid, 0)
  stdout, stderr = (open(p, errors="replace").read() for p in paths)
  return {"command": command, "returncode": os.waitstatus_to_exitcode(status), "stdout": stdout,
          "stderr": stderr}  # fmt: skip


def main() -> None:
  commands = json.load(sys.stdin)
  for module in WARM:
    importlib.import_module(module)
  with tempfile.TemporaryDirectory() as folder:
    results = [run(command, folder) for command in commands]
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
