"""A fast reachability check, so downloads fail in seconds instead of after minutes of retries."""

import socket
import urllib.parse


def check_reachable(url: str, what: str, fix: str, timeout: float = 5.0) -> None:
  """Raises ConnectionError naming `what` failed and `fix` when `url`'s host is unreachable.

  torch.hub and TFDS retry or hang for minutes without a network; one TCP connect with a
  timeout tells the same within seconds.
  """
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=timeout).close()
  except OSError as e:
    raise ConnectionError(
      f"Cannot download {what}: {parsed.hostname} is unreachable ({e}). {fix}"
    ) from e
