"""Child process for the kill test: writes transitions and acknowledges each one on stdout.

usage: python burst_writer.py DB_PATH COUNT GROUP(0|1)

An acknowledgement ``ACK <order id> <seq> <status>`` is printed only after the store returned,
i.e. after COMMIT. The parent SIGKILLs this process at a random moment.
"""

import asyncio
import sys

from core.orders import Order, OrderStatus
from core.store import Store

CYCLE = [OrderStatus.Validated, OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Complete]


async def main(path: str, count: int, group: bool) -> None:
    store = Store(path, group_commit=group).open()
    out = sys.stdout
    done = 0
    while done < count:
        order, _row = await store.insert_order(Order(templateName="Burst"), who="burst")
        out.write(f"ACK {order.identifier} 0 {int(OrderStatus.Created)}\n")
        done += 1
        # a burst: several transitions in flight at once share a commit when grouping is on
        changes = await asyncio.gather(*[
            store.set_status(order.identifier, status, who="burst", why=f"step {i}")
            for i, status in enumerate(CYCLE)])
        for change in changes:
            out.write(f"ACK {change.order_id} {change.seq} {int(change.to_status)}\n")
            done += 1
        out.flush()
    out.write("DONE\n")
    out.flush()
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"))
