"""Joins the processes of a multi-host run into one JAX runtime, before anything else runs.

Every process runs the same command. After `jax.distributed.initialize`, `jax.devices()` lists the
devices of every process, so `parallel.create_mesh` spans all hosts; `jaxresnet.data` gives each
process its slice of every global batch; Orbax checkpoints are written by all processes together;
and only process 0 writes metrics, figures and the config. A single process (the default) never
starts the distributed runtime.

The run is multi-process when a flag (`--coordinator_address`, `--num_processes`, `--process_id`)
is given, when `JAX_COORDINATOR_ADDRESS` is set, inside a SLURM job step or an Open MPI job of more
than one task, or on a Cloud TPU VM. Flags left unset are filled in by JAX's own cluster detection
(SLURM, Open MPI, Cloud TPU, Kubernetes); `--distributed=on` asks JAX to detect a cluster this
module does not recognise, and `--distributed=off` keeps a process alone whatever the environment.
"""

import os
from collections.abc import Mapping

import jax
from absl import flags, logging

from jaxresnet import errors

MODES = ("auto", "on", "off")


def define_flags() -> None:
  """The multi-process flags of `python -m jaxresnet.train` (docs/multihost.md)."""
  flags.DEFINE_enum("distributed", "auto", MODES,
                    "auto: multi-process when the flags below are given, JAX_COORDINATOR_ADDRESS "
                    "is set, or under SLURM / Open MPI (> 1 task) or on a Cloud TPU VM; on: always "
                    "(JAX detects the cluster); off: never.")  # fmt: skip
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, reachable by all.")
  flags.DEFINE_integer("num_processes", None, "How many processes take part in the run.")
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")


def initialize_from_flags() -> bool:
  """`initialize` with the values of the flags `define_flags` defined; unset ones are detected."""
  values = flags.FLAGS
  return initialize(
    values.distributed, values.coordinator_address, values.num_processes, values.process_id
  )


def multiprocess_source(
  mode: str,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  environ: Mapping[str, str] = os.environ,
) -> str | None:
  """What makes this a multi-process run (flags, an environment), or None for a lone process.

  Args:
    mode: "auto" (decide from the flags and the environment), "on" or "off".
    coordinator_address: "host:port" of process 0, as given on the command line (or None).
    num_processes: as given on the command line (or None).
    process_id: as given on the command line (or None).
    environ: the environment to read (the process's own by default).

  Returns:
    A short description for the log, or None when the distributed runtime must not start.
  """
  if mode not in MODES:
    raise errors.UserError(f"Unknown distributed mode {mode!r}: choose one of {MODES}.")
  flags_given = (coordinator_address, num_processes, process_id) != (None, None, None)
  if mode == "off":
    if flags_given:
      raise errors.UserError(
        "--distributed=off contradicts --coordinator_address/--num_processes/--process_id: "
        "drop one or the other."
      )
    return None
  if mode == "on":
    return "--distributed=on"
  if flags_given:
    return "command-line flags"
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  # The variables JAX's SLURM detection reads; SLURM_STEP_NODELIST exists inside `srun` only, so a
  # batch script that runs python directly (one process) is not mistaken for a multi-task step.
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(name in environ for name in slurm) and int(environ["SLURM_NTASKS"]) > 1:
    return f"SLURM ({environ['SLURM_NTASKS']} tasks)"
  if "OMPI_MCA_orte_hnp_uri" in environ and int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return f"Open MPI ({environ['OMPI_COMM_WORLD_SIZE']} ranks)"
  if _on_cloud_tpu_vm():
    return "Cloud TPU VM"
  return None


def initialize(
  mode: str = "auto",
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Starts JAX's distributed runtime if this is a multi-process run; call before any JAX work.

  Args:
    mode: "auto", "on" or "off" (see `multiprocess_source`).
    coordinator_address: "host:port" of process 0, reachable from every process; None to take
      JAX_COORDINATOR_ADDRESS or the cluster's.
    num_processes: None to take the cluster's.
    process_id: 0 .. num_processes - 1, unique per process; None to take the cluster's.

  Returns:
    Whether the distributed runtime was started.
  """
  source = multiprocess_source(mode, coordinator_address, num_processes, process_id)
  if source is None:
    return False
  logging.info("Multi-process run (%s): joining the other processes", source)
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info(
    "Process %d of %d, with %d of the %d devices (%s)",
    jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    jax.default_backend(),
  )  # fmt: skip
  return True


def _on_cloud_tpu_vm() -> bool:
  # `import jax` sets this when the host has TPU chips and libtpu (jax/_src/cloud_tpu_init.py);
  # JAX has no public way to ask before its backend starts, which must come after `initialize`.
  from jax._src import cloud_tpu_init

  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))
