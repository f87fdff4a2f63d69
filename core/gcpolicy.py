"""Keep long-lived objects out of Python's full garbage collections.

A full (generation 2) collection traverses every container object the cyclic collector tracks,
holding the GIL: with the objects a console builds while it connects instruments it stalls the
event loop for a long time. Measured on the 2-core test machine: one SiLA 2 client adds about
5,300 tracked objects (``sila2`` compiles the server's feature definitions into pure-Python
protobuf modules); with 8 SiLA instruments and 50 robot agents connected a full collection took
93-215 ms, and it was each of ``bench/drivers.py``'s loop-lag maxima over 50 ms. Objects moved
to the permanent generation (:func:`gc.freeze`) are skipped by every later collection; a full
collection then costs what was allocated since.

:func:`settle` is called once something long-lived has been built: by the dispatcher after
each instrument connects (at start and every reconnect later), and by the console once its
window holds the orders (``console/app.py``). Reference counting still frees frozen objects;
only a reference cycle among them outlives its last use, so a young-generation collection runs
first (about a millisecond) and young garbage is not frozen.

It is a policy of the process, not of a library: the console turns it on (:func:`enable`) and
so does ``bench/drivers.py``; tests and embedding programs keep the collector as it is.
"""

from __future__ import annotations

import gc

__all__ = ["enable", "enabled", "settle"]

_enabled = False


def enable(on: bool = True) -> None:
    """Turn :func:`settle` on (the console process) or off."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def settle() -> int | None:
    """If enabled: collect the young generations, then freeze everything that survived; returns
    the number of objects in the permanent generation (None when not enabled)."""
    if not _enabled:
        return None
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()
