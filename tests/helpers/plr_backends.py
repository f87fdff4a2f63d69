"""PyLabRobot backends for tests: the chatterbox backend, slowed down or losing its device."""

from __future__ import annotations

import asyncio
from typing import Any

from pylabrobot.liquid_handling.backends.chatterbox import LiquidHandlerChatterboxBackend


class SlowChatterbox(LiquidHandlerChatterboxBackend):
    """Every aspirate and dispense takes ``delay`` seconds, as on a real robot."""

    def __init__(self, delay: float = 0.3, num_channels: int = 8) -> None:
        super().__init__(num_channels=num_channels)
        self.delay = delay

    async def aspirate(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(self.delay)
        await super().aspirate(*args, **kwargs)

    async def dispense(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(self.delay)
        await super().dispense(*args, **kwargs)


class UnpluggedChatterbox(LiquidHandlerChatterboxBackend):
    """The USB cable is pulled while a dispense runs."""

    async def dispense(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("device disconnected (USB)")
