"""A real MADSci REST node for the MADSci driver tests: ``python -m tests.helpers.madsci_node PORT``.

A liquid handler and plate reader node built on ``madsci-node-module``: its actions run for a
while (``duration`` seconds), can fail with a typed error, and stop on the node's ``cancel``
admin command; ``pause``/``resume`` hold a running action. It prints ``ready`` once the REST
API answers.
"""


import sys
import threading
import time

from madsci.common.types.action_types import ActionFailed, ActionResult
from madsci.common.types.admin_command_types import AdminCommandResponse
from madsci.common.types.base_types import Error
from madsci.common.types.node_types import RestNodeConfig
from madsci.node_module import RestNode, action


class LiquidHandlerNode(RestNode):
    """Simulated MADSci node: transfers and plate reads that take ``duration`` seconds."""

    config = RestNodeConfig(node_url="http://127.0.0.1:2000", enable_registry_resolution=False,
                            status_update_interval=0.2, state_update_interval=0.2,
                            rate_limit_requests=100_000, rate_limit_short_requests=1_000)

    def startup_handler(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.transfers = 0

    def state_handler(self) -> None:
        self.node_state = {"transfers": getattr(self, "transfers", 0)}

    def _work(self, duration: float) -> bool:
        """Run for ``duration`` seconds unless cancelled (False); pause holds the clock."""
        left = duration
        while left > 0:
            if self._cancel.is_set():
                self._cancel.clear()
                return False
            self._running.wait()
            time.sleep(min(0.02, left))
            left -= 0.02
        return True

    @action
    def transfer(self, source: str, target: str, volume: float, duration: float = 0.3) -> dict:
        """Move ``volume`` uL from ``source`` to ``target``."""
        if volume <= 0:
            return ActionFailed(errors=[Error(message=f"volume must be positive, got {volume}",
                                              error_type="InvalidVolume")])
        if source == "empty":
            return ActionFailed(errors=[Error(message=f"no liquid in {source}",
                                              error_type="TooLittleLiquid")])
        if source == "clogged":
            return ActionFailed(errors=[Error(message="tip clogged, retry with a new tip",
                                              error_type="TipClogged")])
        if not self._work(duration):
            return ActionResult(status="cancelled",
                                errors=[Error(message="cancelled", error_type="Cancelled")])
        self.transfers += 1
        return {"source": source, "target": target, "volume": volume, "count": self.transfers}

    @action
    def read_plate(self, plate: str, wavelength: int = 450) -> dict:
        """Absorbance of 96 wells at ``wavelength``."""
        if not self._work(0.1):
            return ActionResult(status="cancelled",
                                errors=[Error(message="cancelled", error_type="Cancelled")])
        values = [round(0.05 + (i * 37 % 97) / 40, 3) for i in range(96)]
        return {"plate": plate, "wavelength": wavelength, "values": values,
                "mean": round(sum(values) / 96, 4)}

    def cancel(self) -> AdminCommandResponse:
        """Stop the running action (a node-wide command: there is one at a time)."""
        if not self.node_status.running_actions:
            return AdminCommandResponse(success=False, errors=[Error(message="nothing running")])
        self._cancel.set()
        self._running.set()
        return AdminCommandResponse(success=True)

    def pause(self) -> AdminCommandResponse:
        self._running.clear()
        self.node_status.paused = True
        return AdminCommandResponse(success=True)

    def resume(self) -> AdminCommandResponse:
        self._running.set()
        self.node_status.paused = False
        return AdminCommandResponse(success=True)


def main(argv: list[str]) -> None:
    port = int(argv[0])
    node = LiquidHandlerNode(RestNodeConfig(
        node_url=f"http://127.0.0.1:{port}", node_name=argv[1] if len(argv) > 1 else "lh_node",
        enable_registry_resolution=False, status_update_interval=0.2, state_update_interval=0.2,
        rate_limit_requests=100_000, rate_limit_short_requests=1_000))
    node.start_node()


if __name__ == "__main__":
    main(sys.argv[1:])
