"""Child process for the time-travel kill test: writes orders and transitions on a stepping clock,
refreshes the time-travel snapshots now and then, and acknowledges each commit on stdout.

usage: python timetravel_writer.py DB_PATH SEED

``ACK <order id> <to status>`` is printed after the store returned (after COMMIT); ``SNAP <n>``
after a refresh wrote its snapshots. The parent SIGKILLs this process at a random moment.
"""

import random
import sys

from core.orders import Order, OrderStatus
from core.store import Store
from core.timetravel import TimeMachine


class SteppingClock:
    def __init__(self, start: float, rng: random.Random) -> None:
        self.t, self.rng = start, rng

    def now(self) -> float:
        self.t += self.rng.uniform(0.0, 2.0)
        return self.t


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    store = Store(path).open()
    store.clock = SteppingClock(1_800_000_000.0, rng)
    machine = TimeMachine(store, every=100)
    open_orders: list[str] = []
    out = sys.stdout
    for i in range(1_000_000):
        if not open_orders or rng.random() < 0.3:
            order, _row = store.write_sync(store.new_order_op(Order(templateName="Kill"), who="kill"))
            open_orders.append(order.identifier)
            out.write(f"ACK {order.identifier} {int(OrderStatus.Created)}\n")
        else:
            oid = rng.choice(open_orders)
            to = rng.choice([OrderStatus.Running, OrderStatus.Complete, OrderStatus.Error, OrderStatus.Paused])
            store.write_sync(store.status_op(oid, to, who="kill"))
            if to in (OrderStatus.Complete, OrderStatus.Error):
                open_orders.remove(oid)
            out.write(f"ACK {oid} {int(to)}\n")
        if i % 150 == 149:
            report = machine.refresh_sync()
            out.write(f"SNAP {report.built}\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
