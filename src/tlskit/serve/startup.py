"""A SIGHUP that comes while ``tlskit serve`` starts: remembered, then done as a reload once it serves.

SIGHUP's default action ends the process, and a deploy hook (certbot's, ``systemctl reload``) may send one
right after starting the server, before its event loop takes the signal over. The command line installs the
recorder before it imports the server (about half a second); ``tlskit.serve.app.run`` installs it when it is
called another way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["remember_sighup"]


class _Recorder(dict[int, FrameType | None]):
    """Until the server's own, SIGHUP's handler is a recorder's ``__setitem__``: a C function, so a burst of
    signals cannot nest one Python handler frame inside another up to the recursion limit."""


def remember_sighup() -> Callable[[], bool]:
    """Remember SIGHUPs from now on (keeping a recorder already installed); returns "did one come?".

    Only the main thread can set a handler: elsewhere (a server run in a thread) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: False
    recorder = getattr(signal.getsignal(signal.SIGHUP), "__self__", None)
    if not isinstance(recorder, _Recorder):
        recorder = _Recorder()
        signal.signal(signal.SIGHUP, recorder.__setitem__)
    return lambda: bool(recorder)
