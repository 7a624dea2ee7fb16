"""Stopping a run cleanly: on SIGTERM (a preemption) or Ctrl-C, save at the current step, then exit.

Clusters and spot VMs send SIGTERM, then kill after a grace period. A single process turns
SIGTERM and the first Ctrl-C into a request that the train loop reads after every step: it saves a
checkpoint at that step, flushes its metrics and exits with 143 (SIGTERM) or 130 (Ctrl-C). A
second Ctrl-C stops at once. A request during end-of-epoch evaluation abandons the evaluation,
which the relaunched run repeats.

A multi-process run installs no handler: it leaves SIGTERM to JAX's own preemption notifier
(started by `jax.distributed.initialize`) and asks Orbax's `reached_preemption`, JAX's preemption
sync point, so that every process stops and saves at the same step; evaluation there is not
abandoned, and Ctrl-C keeps Python's default.
"""

import signal
from types import FrameType

import jax
import orbax.checkpoint as ocp
from absl import logging


class StopRequest:
  """Whether the run has been asked to stop; install with `with StopRequest(manager) as stop:`."""

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager, self._multi = manager, jax.process_count() > 1
    self.signal: int | None = None
    self._previous = {}

  def __enter__(self) -> "StopRequest":
    if not self._multi:  # Several processes must stop together: JAX's notifier decides.
      self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def __exit__(self, *_) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum: int, _frame: FrameType | None) -> None:
    if signum == signal.SIGINT and self.signal == signal.SIGINT:
      raise KeyboardInterrupt  # The second Ctrl-C: at once, without saving.
    self.signal = signum
    logging.warning("%s received: saving a checkpoint after the current step, then stopping "
                    "(Ctrl-C again to stop at once).", signal.Signals(signum).name)  # fmt: skip

  def pending(self) -> bool:
    """A signal arrived, in a single-process run: evaluation checks it between batches."""
    return self.signal is not None

  def at_step(self, step: int) -> bool:
    """Whether to stop after `step`; every process of a multi-process run gets the same answer."""
    if self._multi and self._manager.reached_preemption(step):
      self.signal = signal.SIGTERM
    return self.pending()

  @property
  def exit_code(self) -> int:
    return 128 + (self.signal or signal.SIGTERM)

  @property
  def name(self) -> str:
    return signal.Signals(self.signal or signal.SIGTERM).name
