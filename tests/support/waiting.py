"""Waiting for what happens in the background (a worker, a webhook, the event log) without sleeping blindly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], within: float = 30.0, every: float = 0.05) -> Any:
    """Return what `check` returns once it is truthy, calling it every `every` seconds; time out after `within`."""
    async with asyncio.timeout(within):
        while True:
            if result := await check():
                return result
            await asyncio.sleep(every)
