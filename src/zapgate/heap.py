"""Keep the garbage collector's pauses out of request latency in long-running processes."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, the app, pools, services) out of the collector's sight.

    A full collection walks every tracked object. A started API process holds about 170,000 from its imports
    and set-up alone; walking them took about 90 ms on a 2-core machine, a pause that every request in
    flight waits out (it was the p99 of sends). Objects made from now on are collected as before.
    """
    gc.collect()
    gc.freeze()
