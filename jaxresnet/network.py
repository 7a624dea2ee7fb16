"""A fast reachability check, so downloads fail in seconds instead of after minutes of retries.

torch.hub and TFDS retry or hang for minutes without a network; one TCP connect with a timeout
tells the same within seconds.
"""

import socket
import threading
import urllib.parse

from jaxresnet import errors

TIMEOUT_S = 3.0


def can_reach(host: str, port: int, timeout: float = TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:port opens within `timeout`, name lookup included."""
  outcome = []

  def connect() -> None:
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      outcome.append(True)
    except OSError:
      outcome.append(False)

  # In a thread, because a stuck name lookup ignores the socket's timeout.
  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout)
  return outcome == [True]


def check_reachable(url: str, what: str, fix: str) -> None:
  """Raises NoNetwork (a ConnectionError) saying `what` cannot be downloaded and `fix`, offline."""
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  if not can_reach(parsed.hostname, port):
    raise errors.NoNetwork(
      f"Cannot download {what}: {parsed.hostname} is unreachable (no network?). {fix}"
    )
