"""Soak: N Python slot calls, N QTimer callbacks and N asyncio callbacks on the qasync loop.

PySide6 6.12.0 on Python 3.11 aborts with "Fatal Python error: none_dealloc" after about 20,000
Python callbacks; the pinned 6.11.3 must run all of them. Prints the counts and exits 0.
"""

import asyncio
import sys

import PySide6
import qasync
from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QApplication


class Pinger(QObject):
    ping = Signal(int)

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.slot_calls = 0
        self.timer_calls = 0
        self.timer_done: asyncio.Future | None = None
        self.ping.connect(self.on_ping)

    @Slot(int)
    def on_ping(self, value: int) -> None:
        self.slot_calls += 1

    @Slot()
    def on_timer(self) -> None:
        self.timer_calls += 1
        if self.timer_calls < self.n:
            QTimer.singleShot(0, self.on_timer)
        elif self.timer_done is not None:
            self.timer_done.set_result(None)


async def soak(n: int) -> tuple[int, int, int]:
    loop = asyncio.get_running_loop()
    pinger = Pinger(n)
    pinger.timer_done = loop.create_future()
    QTimer.singleShot(0, pinger.on_timer)
    for i in range(n):
        pinger.ping.emit(i)
    calls = 0
    done = loop.create_future()

    def hop() -> None:
        nonlocal calls
        calls += 1
        if calls < n:
            loop.call_soon(hop)
        else:
            done.set_result(None)

    loop.call_soon(hop)
    await done
    await pinger.timer_done
    return pinger.slot_calls, pinger.timer_calls, calls


if __name__ == "__main__":
    n = int(sys.argv[1])
    app = QApplication([])
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        slots, timers, callbacks = runner.run(soak(n))
    print(f"PySide6 {PySide6.__version__}: slots={slots} timers={timers} asyncio={callbacks}")
