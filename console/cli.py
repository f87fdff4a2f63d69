"""Command line: ``labconsole`` opens the console; subcommands work headless on the same store."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from core.errors import LabconsoleError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labconsole", description="Lab-automation operator console.")
    parser.add_argument("--data-dir", help="where the store lives (default: the user data dir; "
                        "env LABCONSOLE_DATA_DIR)")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    parser.add_argument("--demo-orders", type=int, default=0, metavar="N",
                        help="fill the store with about N demo orders before opening the window")
    sub = parser.add_subparsers(dest="command")
    gui = sub.add_parser("gui", help="open the console window (the default)")
    gui.set_defaults(command="gui")
    demo = sub.add_parser("demo-orders", help="fill the store with about N demo orders, headless")
    demo.add_argument("count", type=int)
    demo.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The store's writer thread and the GUI share the GIL; hand it over every 1 ms instead of
    # 5 ms so a burst of commits never stalls the event loop for more than ~2 ms (bench/store.py).
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        from core.store import resolve_data_dir

        data_dir = resolve_data_dir(args.data_dir)
        if args.command in (None, "gui"):
            from console.app import main_gui

            return main_gui(data_dir, demo_orders=args.demo_orders)
        if args.command == "demo-orders":
            from core import demo
            from core.store import Store

            with Store.open_in(data_dir) as store:
                made = demo.generate(store, args.count, seed=args.seed)
            print(f"{made} demo orders written to {store.path}")
            return 0
    except LabconsoleError as exc:
        print(f"labconsole: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
