"""o11ylab's one channel for telling the user something.

Every message goes to the ``o11ylab`` logger (so the logging bridge exports it as a log record
beside the trace) and, when the user should see it, to the notebook or terminal:

- a warning or an error (something is lost, off or broken, and what to do) on stderr;
- information (a model loaded, an endpoint starting) on stdout, because Jupyter shows stderr
  as a red error block and information is not an error.

``once`` says a message at most once per process for that key (a collector that stays down
must not print at every export); a message with no key is said each time. Saying never raises:
a closed stream or a broken handler loses the line, never the user's cell.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Hashable

__all__ = ["say"]

_log = logging.getLogger("o11ylab")
_said: set[Hashable] = set()
_lock = threading.Lock()


def say(
    text: str,
    *,
    level: int = logging.WARNING,
    once: Hashable | None = None,
    show: bool = True,
    prefix: str = "o11ylab",
) -> bool:
    """Say ``text``; returns False when ``once`` had already been said.

    ``show=False`` only logs (a fact for ``%o11y status`` and the log, not worth a line in a
    cell). ``prefix`` names the speaker on screen (``o11ylab serve`` in the endpoint's log).
    """
    if once is not None:
        with _lock:
            if once in _said:
                return False
            _said.add(once)
    try:
        _log.log(level, text)
    except Exception:  # noqa: BLE001 - a broken handler must not break the caller
        pass
    if show:
        stream = sys.stderr if level >= logging.WARNING else sys.stdout
        try:
            print(f"{prefix}: {text}", file=stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stream: the log still has it
            pass
    return True
