"""Command line: ``labconsole`` opens the console; subcommands work headless on the same store.

    labconsole [--data-dir D] [--demo-orders N]          the console window
        [--data-services-url URL | --bind ADDR --token-file F] [--port P] [--max-body-mb N]
    labconsole open ORDER_ID | labconsole://order/ID     focus an order in the console on this data dir
    labconsole demo-orders N                             fill the store with demo orders
    labconsole templates validate FILE...                check template files (file:line: field: problem)
    labconsole templates publish FILE...                 publish them as new versions
    labconsole templates list                            published templates and versions
    labconsole workflow run NAME --input JSON [--wait]   start a run
    labconsole workflow status ID                        progress of a run
    labconsole workflow list [--status S]                runs, newest first (S: a run status)
    labconsole workflow terminate ID --reason R          cancel a run
    labconsole workflow retry ID [--wait]                retry the failed steps of a run
    labconsole store check                               full integrity check of the store
    labconsole store backup [DEST]                       online backup, checked
    labconsole store restore BACKUP                      put a backup in place (console closed)
    labconsole audit verify [--file EXPORT]              check the hash chain of transitions and audit
    labconsole audit export --from D --to D --format csv|json OUT   rows with their hashes
    labconsole users add|list|disable|passwd|token       named users, roles, Data Services tokens
    (publish, run, terminate, retry and schedule changes take --user NAME [--password-file F]
     [--meaning M]: act as a named user, whose role is checked, and sign when config.ini requires it;
     the users commands take --user NAME, an admin, password from LABCONSOLE_PASSWORD or a prompt)
    labconsole store archive --before DATE               move finished runs to the archive file, online
    labconsole sila-sim [--workcell FILE] [--faults F]   serve the SiLA instruments of FILE on 127.0.0.1
    labconsole agent --console URL --name N --capabilities A,B   a remote robot agent
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.api import RuntimeApi
from core.errors import LabconsoleError


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: "audit export --to" must not read as an abbreviation of --token
    parser = argparse.ArgumentParser(prog="labconsole", description="Lab-automation operator console.",
                                     allow_abbrev=False)
    parser.add_argument("--data-dir", help="where the store lives (default: the user data dir; "
                        "env LABCONSOLE_DATA_DIR)")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    parser.add_argument("--demo-orders", type=int, default=0, metavar="N",
                        help="fill the store with about N demo orders before opening the window")
    parser.add_argument("--demo-runs", type=int, default=0, metavar="N",
                        help="start N runs of the sample templates on the simulated workcell at start")
    parser.add_argument("--workcell", type=Path, default=None,
                        help="workcell file (default: resources/workcells/demo.yaml)")
    parser.add_argument("--faults", default=None,
                        help="fault injection for simulated instruments, e.g. 'rate=0.05,hang@Sealer1=true'")
    parser.add_argument("--data-services-url", default=None,
                        help="Biosero Data Services to work with (default: config.ini or "
                        "LABCONSOLE_DATA_SERVICES_URL; none: start the embedded one)")
    parser.add_argument("--config", type=Path, default=None,
                        help="config.ini with [DATA SERVICES] url = ... (default: ./config.ini, then the data dir)")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address the embedded Data Services listens on (non-loopback needs --token)")
    parser.add_argument("--port", type=int, default=8105, help="embedded Data Services port (next free if taken)")
    parser.add_argument("--token", default=None,
                        help="bearer token required by the embedded Data Services (visible to "
                        "other users in the process list: prefer --token-file or LABCONSOLE_TOKEN)")
    parser.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                        help="file holding the bearer token on one line (default: env LABCONSOLE_TOKEN)")
    parser.add_argument("--max-body-mb", type=float, default=8.0, metavar="N",
                        help="largest request body the embedded Data Services accepts, in MiB "
                        "(default 8; larger ones get HTTP 413)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("gui", help="open the console window (the default)")
    open_link = sub.add_parser("open", help="select an order in the console running on this data dir "
                               "(exit 1 if none is running)")
    open_link.add_argument("target", metavar="ORDER_ID", help="an order id or a labconsole://order/ID link")
    demo = sub.add_parser("demo-orders", help="fill the store with about N demo orders, headless")
    demo.add_argument("count", type=int)
    demo.add_argument("--seed", type=int, default=7)

    acting = argparse.ArgumentParser(add_help=False)  # who acts: a named user, signing when required
    acting.add_argument("--user", default=None, metavar="NAME",
                        help=f"act as this named user (their role is checked; password from --password-file, "
                             f"{PASSWORD_ENV} or a prompt); needed for actions [SIGNATURES] require while "
                             "users exist")
    acting.add_argument("--password-file", type=Path, default=None, metavar="PATH",
                        help="the --user password: the first line of PATH")
    acting.add_argument("--meaning", default="approved", choices=["performed", "approved", "reviewed", "verified"],
                        help="what an electronic signature means (default: approved)")

    templates = sub.add_parser("templates", help="workflow templates").add_subparsers(dest="action", required=True)
    validate = templates.add_parser("validate", help="check template files; exit 1 if any is bad")
    validate.add_argument("files", nargs="+", type=Path)
    publish = templates.add_parser("publish", parents=[acting], help="publish template files as new versions")
    publish.add_argument("files", nargs="+", type=Path)
    templates.add_parser("list", help="published templates")

    rehearse = sub.add_parser("rehearse", help="run a queue against the simulated workcell, accelerated")
    rehearse.add_argument("--workcell", dest="rehearse_workcell", type=Path, default=None,
                          help="workcell file (default: the demo workcell)")
    rehearse.add_argument("--templates", type=Path, default=None, help="directory of templates (default: samples)")
    rehearse.add_argument("--orders", type=int, default=20)
    rehearse.add_argument("--speed", default="max", help="times faster than real time, or 'max'")
    rehearse.add_argument("--faults", dest="rehearse_faults", default=None, help="fault injection spec")
    rehearse.add_argument("--seed", type=int, default=1)
    rehearse.add_argument("--strategy", default="least_loaded",
                          choices=["round_robin", "least_loaded", "random", "affinity"])

    sila_sim = sub.add_parser("sila-sim", help="serve the workcell's SiLA 2 instruments as simulated "
                              "SiLA 2 servers on 127.0.0.1")
    sila_sim.add_argument("--workcell", dest="sila_workcell", type=Path, default=None,
                          help="workcell file (default: resources/workcells/demo-sila.yaml)")
    sila_sim.add_argument("--faults", dest="sila_faults", default=None,
                          help="fault injection, e.g. 'fail_next@PlateReader1=2,hang@Sealer1=true'")
    sila_sim.add_argument("--seed", dest="sila_seed", type=int, default=None)
    sila_sim.add_argument("--for", dest="sila_for", type=float, default=None, metavar="SECONDS",
                          help="stop after this many seconds (default: until Ctrl-C)")
    sila_sim.add_argument("--only", dest="sila_only", default=None, metavar="ID,ID",
                          help="serve only these instruments of the workcell")
    sila_sim.add_argument("--parent", dest="sila_parent", type=int, default=None, metavar="PID",
                          help="stop when process PID (the console that started it) is gone")

    schedules = sub.add_parser("schedules", help="runs started on time").add_subparsers(dest="action", required=True)
    add = schedules.add_parser("add", parents=[acting], help="add a schedule for a published template")
    add.add_argument("template")
    add.add_argument("--cron", help="5 or 6 field cron expression, e.g. '0 9 * * 1-5'")
    add.add_argument("--every", choices=["once", "hourly", "daily", "weekly", "monthly"],
                     help="instead of --cron: a frequency with --at")
    add.add_argument("--at", help="':15' hourly, '09:30' daily, 'mon 09:30' weekly, '1 09:30' monthly, ISO for once")
    add.add_argument("--timezone", default="UTC")
    add.add_argument("--input", default="{}", help="inputs of each run as a JSON object")
    add.add_argument("--priority", type=int, default=50)
    schedules.add_parser("list", help="schedules and their next runs")
    for verb in ("pause", "resume", "remove"):
        schedules.add_parser(verb, parents=[acting], help=f"{verb} a schedule").add_argument("id")

    workflow = sub.add_parser("workflow", help="workflow runs").add_subparsers(dest="action", required=True)
    run = workflow.add_parser("run", parents=[acting], help="start a run of a published template")
    run.add_argument("name")
    run.add_argument("--input", default="{}", help="inputs as a JSON object")
    run.add_argument("--priority", type=int, default=50)
    run.add_argument("--version", type=int, default=None)
    run.add_argument("--wait", action="store_true", help="execute now and wait for the end")
    status = workflow.add_parser("status", help="progress of a run (or of a workflow's latest run)")
    status.add_argument("id")
    listing = workflow.add_parser("list", help="runs, newest first")
    listing.add_argument("--status")
    listing.add_argument("--template")
    listing.add_argument("--limit", type=int, default=50)
    terminate = workflow.add_parser("terminate", parents=[acting], help="cancel a run (or a workflow's latest run)")
    terminate.add_argument("id")
    terminate.add_argument("--reason", required=True)
    retry = workflow.add_parser("retry", parents=[acting], help="retry the failed steps of a run")
    retry.add_argument("id")
    retry.add_argument("--wait", action="store_true")

    store = sub.add_parser("store", help="check, back up and restore the store").add_subparsers(
        dest="action", required=True)
    store.add_parser("check", help="full integrity_check and foreign_key_check; exit 1 if damaged")
    backup = store.add_parser("backup", help="copy the store while it is in use, and check the copy")
    backup.add_argument("dest", nargs="?", default=None,
                        help="file or directory (default: <data-dir>/backups/labconsole-YYYYmmdd-HHMMSS.sqlite3)")
    restore = store.add_parser("restore", help="replace the store with a checked backup (console closed)")
    restore.add_argument("backup", type=Path)
    archive = store.add_parser("archive", help="move orders finished before DATE (whole runs, with their "
                               "transitions) into labconsole-archive.sqlite3 next to the store; "
                               "safe while the console runs")
    archive.add_argument("--before", required=True, metavar="DATE",
                         help="2026-08-01 (local midnight), 2026-08-01T12:00, or an age such as 90d")
    archive.add_argument("--batch", type=int, default=500, metavar="N",
                         help="orders per batch (the console's writer waits for one batch at most)")
    ds = sub.add_parser("data-services", help="run the embedded Data Services alone, headless (uses "
                        "--bind, --port, --token/--token-file and --max-body-mb)")
    ds.add_argument("--certfile", default=None, help="PEM certificate chain: serve HTTPS")
    ds.add_argument("--keyfile", default=None, help="PEM private key of --certfile")
    headless = sub.add_parser("headless", help="work the orders of a Data Services without a window "
                              "(uses --data-services-url or config.ini, --workcell, --token/--token-file)")
    headless.add_argument("--module-id", default=None, help="this console's module id (default: "
                          "[DATA SERVICES] module_id of config.ini, else 'labconsole')")
    headless.add_argument("--templates", type=Path, default=None, help="directory of templates (default: samples)")
    headless.add_argument("--speed", type=float, default=1.0, help="simulated time runs this many times faster")
    headless.add_argument("--lease", type=float, default=None, help="seconds a claim outlives the last "
                          "heartbeat (default: [DATA SERVICES] lease of config.ini, else 60)")
    headless.add_argument("--poll", type=float, default=1.0, help="seconds between looks for new orders")
    headless.add_argument("--backlog", type=int, default=None, help="most orders claimed and not started "
                          "yet (default: twice the instruments' capacity, at least 4)")
    audit = sub.add_parser("audit", help="the tamper-evident audit trail").add_subparsers(
        dest="action", required=True)
    verify = audit.add_parser("verify", help="check the hash chains; exit 1 naming the first broken row")
    verify.add_argument("--file", type=Path, default=None, metavar="EXPORT",
                        help="verify an export file instead of the store")
    export = audit.add_parser("export", help="write transitions and audit rows with their hashes")
    export.add_argument("--from", dest="start", required=True, metavar="DATE", help="YYYY-MM-DD[THH:MM] (UTC)")
    export.add_argument("--to", dest="end", required=True, metavar="DATE", help="end, exclusive")
    export.add_argument("--format", choices=["csv", "json"], default="json")
    export.add_argument("out", type=Path)

    admin = argparse.ArgumentParser(add_help=False)  # who changes users: a named admin, or the OS user
    admin.add_argument("--user", default=None, metavar="NAME",
                       help=f"act as this named user, an admin (password from {PASSWORD_ENV} or a prompt); "
                            "recorded in the audit as them (default: the operating-system user)")
    users = sub.add_parser("users", help="named users with roles").add_subparsers(dest="action", required=True)
    users_add = users.add_parser("add", parents=[admin],
                                 help="add a user (password from a prompt or --password-file)")
    users_add.add_argument("name")
    users_add.add_argument("--role", required=True, choices=["viewer", "operator", "supervisor", "admin"])
    users_add.add_argument("--password-file", type=Path, default=None, metavar="PATH",
                           help="file holding the password on its first line (default: prompt)")
    users.add_parser("list", help="users, roles and whether they are enabled")
    users_disable = users.add_parser("disable", parents=[admin], help="disable a user (kept for the audit trail)")
    users_disable.add_argument("name")
    users_enable = users.add_parser("enable", parents=[admin], help="enable a disabled user again")
    users_enable.add_argument("name")
    users_passwd = users.add_parser("passwd", parents=[admin], help="set a new password")
    users_passwd.add_argument("name")
    users_passwd.add_argument("--password-file", type=Path, default=None, metavar="PATH")
    users_token = users.add_parser("token", parents=[admin], help="issue a Data Services bearer token for a user "
                                   "(printed once; only its hash is kept)")
    users_token.add_argument("name")
    users_token.add_argument("--revoke", action="store_true", help="revoke every token of the user instead")

    agent = sub.add_parser("agent", help="run a remote robot agent that executes the console's jobs")
    agent.add_argument("--console", required=True, metavar="URL",
                       help="the console's agent hub, ws://HOST:PORT (the workcell's options.url)")
    agent.add_argument("--name", required=True, help="the instrument id of this agent in the workcell")
    agent.add_argument("--capabilities", required=True, metavar="A,B",
                       help="comma-separated Feature.Command names it offers")
    agent.add_argument("--token-env", metavar="VAR", default=None,
                       help="environment variable holding the token the console requires")
    agent.add_argument("--handler", metavar="MODULE:FUNCTION", default=None,
                       help="function that runs each job (default: simulate it)")
    agent.add_argument("--max-concurrent", type=int, default=None, help="jobs run at once (default: no limit)")
    agent.add_argument("--seed", default=None, help="seed of the built-in simulation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The store's writer thread and the GUI share the GIL; hand it over every 1 ms instead of
    # 5 ms so a burst of commits never stalls the event loop for more than ~2 ms (bench/store.py).
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if args.command == "templates" and args.action == "validate":
            return _validate(args.files, args.workcell)
        if args.command == "rehearse":
            return _rehearse(args)
        if args.command == "sila-sim":
            return _sila_sim(args)
        if args.command == "agent":
            return _agent(args)
        from core.store import resolve_data_dir

        data_dir = resolve_data_dir(args.data_dir)
        if args.command == "open":
            return _open(args.target, data_dir)
        if args.command in (None, "gui"):
            from console.app import main_gui
            from core.dataservices.config import resolve_token, resolve_url
            from core.dataservices.server import ServerLimits
            from core.errors import ConfigError

            if args.data_services_url is not None:  # a bad flag fails before any window opens
                resolve_url(args.data_services_url)
            token = resolve_token(args.token, token_file=args.token_file)
            if not args.max_body_mb > 0:
                raise ConfigError.at(f"must be more than 0, not {args.max_body_mb:g}",
                                     field="--max-body-mb")
            limits = ServerLimits(max_body_bytes=int(args.max_body_mb * 1024 * 1024))
            return main_gui(data_dir, demo_orders=args.demo_orders, workcell=args.workcell,
                            faults=args.faults, data_services_url=args.data_services_url,
                            config=args.config, bind=args.bind, port=args.port, token=token,
                            limits=limits, demo_runs=args.demo_runs)
        if args.command == "store":
            return _store(args, data_dir)
        if args.command == "data-services":
            return _data_services(args, data_dir)
        if args.command == "headless":
            return _headless_console(args, data_dir)
        if args.command == "audit":
            return _audit(args, data_dir)
        if args.command == "users":
            return _users(args, data_dir)
        if args.command == "demo-orders":
            from core import demo
            from core.store import Store

            with Store.open_in(data_dir) as store:
                made = demo.generate(store, args.count, seed=args.seed)
            print(f"{made} demo orders written to {store.path}")
            return 0
        return asyncio.run(_headless(args, data_dir))
    except LabconsoleError as exc:
        print(f"labconsole: {exc}", file=sys.stderr)
        return 2


LINK_TIMEOUT_MS = 60_000
"""How long ``labconsole open`` waits for the console's answer (a console still starting answers
once its orders are listed)."""


def parse_link(target: str) -> str:
    """The order id of ``ORDER_ID`` or ``labconsole://order/ID`` (percent-escapes decoded)."""
    from urllib.parse import unquote, urlsplit

    from core.errors import ConfigError

    text = target.strip()
    if "://" not in text:
        if not text:
            raise ConfigError.at("an order id or a labconsole://order/ID link is needed", field="ORDER_ID")
        return text
    parts = urlsplit(text)
    order_id = unquote(parts.path.strip("/"))
    if parts.scheme.lower() != "labconsole" or parts.netloc.lower() != "order" or not order_id or "/" in order_id:
        raise ConfigError.at(f"'{target}' is not a labconsole link: expected labconsole://order/ID",
                             field="ORDER_ID")
    return order_id


def _open(target: str, data_dir: Path) -> int:
    """Send the order id to the console listening for this data dir; print what it did."""
    from PySide6.QtNetwork import QLocalSocket

    from console.app import link_server_name

    order_id = parse_link(target)
    sock = QLocalSocket()
    sock.connectToServer(link_server_name(data_dir))
    if not sock.waitForConnected(2000):
        print(f"labconsole: no console is running on {data_dir}", file=sys.stderr)
        return 1
    sock.write(json.dumps({"open": order_id}).encode() + b"\n")
    sock.waitForBytesWritten(2000)
    answer = b""
    while not answer.endswith(b"\n") and sock.waitForReadyRead(LINK_TIMEOUT_MS):
        answer += bytes(sock.readAll().data())
    sock.disconnectFromServer()
    try:
        reply = json.loads(answer.decode("utf-8", "replace"))
    except ValueError:
        print(f"labconsole: the console on {data_dir} did not answer", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"labconsole: {reply.get('error')}", file=sys.stderr)
        return 1
    where = "selected in Jobs" if reply.get("selected") else "shown in Detail (not listed in Jobs)"
    print(f"{order_id}: {where} in the console on {data_dir}")
    return 0


def _rehearse(args: argparse.Namespace) -> int:
    from core.rehearsal import rehearse
    from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES

    speed = args.speed if args.speed == "max" else float(args.speed)
    report = asyncio.run(rehearse(args.rehearse_workcell or DEMO_WORKCELL, args.templates or SAMPLE_TEMPLATES,
                                  args.orders, speed=speed, faults=args.rehearse_faults, seed=args.seed,
                                  strategy=args.strategy))
    print(report.render())
    return 0


def _data_services(args: argparse.Namespace, data_dir: Path) -> int:
    from core.dataservices.config import resolve_token
    from core.dataservices.server import ServerLimits, TlsFiles
    from core.dataservices.standalone import serve
    from core.errors import ConfigError

    if (args.certfile is None) != (args.keyfile is None):
        raise ConfigError.at("give both --certfile and --keyfile, or neither", field="--certfile")
    tls = TlsFiles(args.certfile, args.keyfile) if args.certfile else None
    if not args.max_body_mb > 0:
        raise ConfigError.at(f"must be more than 0, not {args.max_body_mb:g}", field="--max-body-mb")
    limits = ServerLimits(max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    token = resolve_token(args.token, token_file=args.token_file)
    return asyncio.run(serve(data_dir, host=args.bind, port=args.port, token=token, limits=limits,
                             tls=tls, ready=lambda url: print(f"Data Services listening: {url}", flush=True)))


def _headless_console(args: argparse.Namespace, data_dir: Path) -> int:
    from console.app import config_file, data_services_settings
    from core import headless
    from core.dataservices.config import (
        compatible_from_ini,
        lease_from_ini,
        module_id_from_ini,
        resolve_token,
    )
    from core.dataservices.fleet import DEFAULT_LEASE
    from core.errors import ConfigError

    config = config_file(data_dir, args.config)
    settings = data_services_settings(data_dir, args.data_services_url, args.config)
    if settings is None:
        raise ConfigError.at("a Data Services to work with is needed: --data-services-url URL or "
                             "[DATA SERVICES] url of config.ini", field="--data-services-url")
    module_id = args.module_id or module_id_from_ini(config) or "labconsole"
    lease = args.lease if args.lease is not None else lease_from_ini(config) or DEFAULT_LEASE
    if not lease > 0:
        raise ConfigError.at(f"must be more than 0 seconds, not {lease:g}", field="--lease")
    token = resolve_token(args.token, token_file=args.token_file)
    return asyncio.run(headless.run(
        data_dir, settings, module_id=module_id, workcell=args.workcell, templates=args.templates,
        speed=args.speed, lease=lease, poll_interval=args.poll, token=token, backlog=args.backlog,
        compatible=compatible_from_ini(config),
        ready=lambda m: print(f"module {m} working {settings.url}", flush=True),
        stopped=lambda text: print(text, flush=True)))


def _store(args: argparse.Namespace, data_dir: Path) -> int:
    from core import backup
    from core.store import DB_FILENAME
    from core.storefile import full_check

    db = data_dir / DB_FILENAME
    if args.action == "restore":
        result = backup.restore(db, args.backup)
        print(f"{db}: restored from {args.backup} (schema {result.restored.schema_version}, "
              f"{result.restored.orders} orders, checked)")
        if result.replaced is not None:
            print(f"the replaced file is kept as {result.replaced}")
        return 0
    if not db.is_file():
        print(f"labconsole: {db}: there is no store here (see --data-dir)", file=sys.stderr)
        return 2
    if args.action == "archive":
        return _archive(args, db)
    if args.action == "check":
        check = full_check(db)
        if check.ok:
            print(f"{db}: OK (integrity_check, foreign_key_check; {check.seconds:.1f} s)")
            return 0
        print(f"{db}: damaged, {len(check.problems)} problem{'s' if len(check.problems) != 1 else ''}:")
        for problem in check.problems:
            print(f"  {problem}")
        print("Restore from a backup with `labconsole store restore BACKUP`, or move the file away.")
        return 1
    dest = None if args.dest is None else Path(args.dest)
    if dest is not None and args.dest.endswith(("/", os.sep)):  # a directory to make
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"labconsole: cannot create {dest}: {exc.strerror}", file=sys.stderr)
            return 2
    info = backup.backup(db, dest)
    print(f"{info.path}: backup of {db} ({info.orders} orders, {info.size / 1e6:.1f} MB, "
          f"integrity_check ok, {info.seconds:.1f} s)")
    return 0


def _audit(args: argparse.Namespace, data_dir: Path) -> int:
    from core import audit_chain
    from core.store import Store

    if args.action == "verify" and args.file is not None:
        report = audit_chain.verify_export(args.file)
    elif args.action == "verify":
        with Store.open_in(data_dir) as store:
            report = store.verify_chain()
    else:
        start = audit_chain.parse_when(args.start, "--from")
        end = audit_chain.parse_when(args.end, "--to")
        if end <= start:
            print(f"labconsole: --to {args.end} is not after --from {args.start}", file=sys.stderr)
            return 2
        with Store.open_in(data_dir) as store:
            data = store.export_chain(start, end)
        try:
            count = audit_chain.write_export(data, args.out, args.format)
        except OSError as exc:
            print(f"labconsole: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
        spans = ", ".join(f"{t} {len(e['rows'])}" for t, e in data["tables"].items())
        print(f"{args.out}: {count} rows ({spans}) with their hashes; verify with "
              f"`labconsole audit verify --file {args.out}`")
        return 0
    print(report.render())
    if not report.ok:
        print(f"audit trail broken: first problem at {report.first_problem}", file=sys.stderr)
        return 1
    return 0


def _read_password(args: argparse.Namespace, name: str) -> str:
    import getpass

    from core.errors import ConfigError

    if args.password_file is not None:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError.at(f"cannot read: {exc}", file=args.password_file) from None
        return lines[0] if lines else ""
    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError.at("the two passwords differ", field="password")
    return first


PASSWORD_ENV = "LABCONSOLE_PASSWORD"
"""Environment variable holding the ``--user`` password (read when no file is given, before a prompt)."""


def _acting_password(name: str, path: Path | None = None) -> str:
    """The password of ``--user NAME``: the first line of ``path``, else :data:`PASSWORD_ENV`,
    else asked at the terminal (not echoed)."""
    import getpass

    from core.errors import ConfigError

    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError.at(f"cannot read: {exc}", file=path) from None
        return lines[0] if lines else ""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    return getpass.getpass(f"Password for {name}: ")


class Actor:
    """Who acts from the command line: the operating-system user, or ``--user`` (password checked
    once, off the event loop). :meth:`sign` makes the electronic signature an action needs when
    ``[SIGNATURES] require`` lists it and named users are on."""

    def __init__(self, args: argparse.Namespace, runtime: Any) -> None:
        self.name: str | None = getattr(args, "user", None)
        self.meaning: str = getattr(args, "meaning", "approved")
        self.runtime = runtime
        self._args = args
        self._password: str | None = None

    def _secret(self) -> str:
        if self._password is None:
            assert self.name is not None
            self._password = _acting_password(self.name, self._args.password_file)
        return self._password

    async def login(self) -> str | None:
        """The acting user's name (checked), or None for the operating-system user."""
        if self.name is None:
            return None
        from core.users import aauthenticate

        user = await aauthenticate(self.runtime.store, self.name, self._secret(), purpose="command line")
        self.name = user.name
        return user.name

    async def sign(self, action: str, target: str | None) -> Any:
        """The signature ``action`` on ``target`` needs, or None when it needs none; refused
        (naming --user) when one is needed and no --user was given."""
        from core.errors import ConfigError
        from core.users import asign, has_users

        policy = self.runtime.signatures
        if not (policy.needs(action) and await asyncio.to_thread(has_users, self.runtime.store)):
            return None
        if self.name is None:
            raise ConfigError.at(f"{action} needs an electronic signature ([SIGNATURES] require in "
                                 f"{policy.source}): give --user NAME (password from a prompt or "
                                 "--password-file)", field="--user")
        self.runtime.authorize(action, self.name)  # a refused role is not asked to sign
        return await asign(self.runtime.store, self.name, self._secret(), self.meaning, action, target)


def _users(args: argparse.Namespace, data_dir: Path) -> int:
    from core import users
    from core.store import Store
    from core.users import os_user

    with Store.open_in(data_dir) as store:
        who = os_user()
        if getattr(args, "user", None) is not None:  # a named admin: checked, then recorded as them
            who = users.authenticate(store, args.user, _acting_password(args.user), purpose="command line").name
        if args.action == "add":
            user = users.add_user(store, args.name, args.role, _read_password(args, args.name), who=who)
            print(f"{user.name}: added as {user.role}")
        elif args.action == "list":
            listed = users.list_users(store)
            for u in listed:
                print(f"{u.name:<20} {u.role:<10} {'enabled' if u.enabled else 'disabled'}")
            if not listed:
                print("no users: single-user mode (actions are recorded as the operating-system user)")
        elif args.action in ("disable", "enable"):
            users.set_enabled(store, args.name, args.action == "enable", who=who)
            print(f"{args.name}: {args.action}d")
        elif args.action == "passwd":
            users.set_password(store, args.name, _read_password(args, args.name), who=who)
            print(f"{args.name}: password changed")
        elif args.revoke:
            n = users.revoke_tokens(store, args.name, who=who)
            print(f"{args.name}: {n} token{'s' if n != 1 else ''} revoked")
        else:
            token = users.issue_token(store, args.name, who=who)
            print(token)
            print(f"Data Services bearer token of {args.name}; it is shown only now", file=sys.stderr)
    return 0


def _archive(args: argparse.Namespace, db: Path) -> int:
    from core.archive import Archiver, parse_before
    from core.errors import ConfigError
    from core.store import Store

    before = parse_before(args.before)
    if args.batch < 1:
        raise ConfigError.at(f"must be at least 1, not {args.batch}", field="--batch")
    with Store(db).open() as store:
        archiver = Archiver(store, batch_orders=args.batch)
        stamp = datetime.fromtimestamp(before).astimezone().isoformat(timespec="seconds")
        print(f"archiving orders finished before {stamp} into {archiver.path}", flush=True)
        result = archiver.run_sync(before)
    if result.settled:
        print(f"{result.settled} copies left by an interrupted archive run were removed from the archive "
              "(their orders are in the store)")
    print(result.summary())
    return 0


def _listening(host: str, port: int) -> bool:
    """Whether a TCP server already accepts connections on ``host:port``."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _sila_sim(args: argparse.Namespace) -> int:
    import time

    from core.drivers.faults import FaultSpec
    from core.drivers.sila_sim import SimulatedSilaServer
    from core.workcell import load_workcell

    path = args.sila_workcell or Path(__file__).resolve().parent.parent / "resources" / "workcells" / "demo-sila.yaml"
    workcell = load_workcell(path)
    instruments = [i for i in workcell.instruments if i.driver == "sila"]
    if args.sila_only is not None:
        wanted = {name.strip() for name in args.sila_only.split(",") if name.strip()}
        unknown = sorted(wanted - {i.id for i in instruments})
        if unknown:
            print(f"labconsole: --only: {path} has no SiLA instrument {', '.join(unknown)} "
                  f"(SiLA instruments: {', '.join(i.id for i in instruments) or 'none'})", file=sys.stderr)
            return 2
        instruments = [i for i in instruments if i.id in wanted]
    if not instruments:
        print(f"labconsole: {path}: no instrument uses driver: sila", file=sys.stderr)
        return 2
    spec = FaultSpec.parse(args.sila_faults, source="--faults") if args.sila_faults else FaultSpec()
    spec.check_instruments([i.id for i in workcell.instruments], source="--faults")
    seed = args.sila_seed if args.sila_seed is not None else (spec.seed or workcell.seed or 0)
    servers = []
    try:
        for inst in instruments:
            server = SimulatedSilaServer(inst, seed=seed, faults=spec.for_instrument(inst.id))
            if _listening(server.host, server.port):  # gRPC would share the port (SO_REUSEPORT)
                print(f"labconsole: {inst.id}: cannot serve on {server.host}:{server.port}: something "
                      f"already listens there (another labconsole sila-sim?)", file=sys.stderr)
                return 2
            try:
                server.start()
            except RuntimeError as exc:
                print(f"labconsole: {inst.id}: cannot serve on {server.host}:{server.port}: {exc}",
                      file=sys.stderr)
                return 2
            servers.append(server)
            print(f"{inst.id}: SiLA 2 server on {server.host}:{server.port} "
                  f"(server UUID {server.server_uuid})", flush=True)
        deadline = None if args.sila_for is None else time.monotonic() + args.sila_for
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
            if args.sila_parent is not None and os.getppid() != args.sila_parent:
                break  # the console that started these servers is gone
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
    return 0
def _agent(args: argparse.Namespace) -> int:
    import os
    import signal

    from core.agent_client import AgentClient, AgentRefused, load_handler
    from core.errors import ConfigError

    if logging.getLogger().level > logging.INFO:
        logging.getLogger("labconsole.agent").setLevel(logging.INFO)
    capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    if not capabilities:
        raise ConfigError("--capabilities: give at least one Feature.Command")
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ConfigError(f"--token-env {args.token_env}: the environment variable is not set")
    handler = load_handler(args.handler) if args.handler else None
    client = AgentClient(args.console, args.name, capabilities, token=token, handler=handler,
                         max_concurrent=args.max_concurrent, seed=args.seed)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, client.stop)
        try:
            await client.run()
        except AgentRefused as exc:
            print(f"labconsole agent: {exc}", file=sys.stderr)
            return 2
        return 0

    return asyncio.run(run())


def _capabilities(workcell: Path | None) -> frozenset[str] | None:
    """The capabilities of ``--workcell`` (templates are checked against them), or None."""
    from core.workcell import load_workcell

    return load_workcell(workcell).capabilities if workcell is not None else None


def _validate(files: list[Path], workcell: Path | None = None) -> int:
    from core.templates import load_template

    capabilities = _capabilities(workcell)
    bad = 0
    for path in files:
        try:
            t = load_template(path, capabilities=capabilities)
        except LabconsoleError as exc:
            bad += 1
            print(exc)
        else:
            print(f"{path}: ok ({t.name}, {len(t.steps)} steps)")
    return 1 if bad else 0


async def _headless(args: argparse.Namespace, data_dir: Path) -> int:
    from core.backup import find_config
    from core.runtime import DEMO_WORKCELL, Runtime
    from core.users import SignaturePolicy, os_user

    signatures = SignaturePolicy.from_ini(find_config(data_dir, args.config))
    runtime = Runtime.build(data_dir, workcell=args.workcell or DEMO_WORKCELL, faults=args.faults,
                            signatures=signatures)
    try:
        # The console executes runs; the command line only executes the run it waits for.
        await runtime.start(execute=False)
        engine = runtime.engine
        actor = Actor(args, runtime)
        who = await actor.login()
        if args.command == "schedules":
            return await _schedules(args, runtime, who)
        if args.command == "templates":
            if args.action == "publish":
                from core.templates import load_template

                capabilities = _capabilities(args.workcell)
                for path in args.files:
                    template = load_template(path, capabilities=capabilities)
                    runtime.authorize("template publish", who)
                    signature = await actor.sign("template publish", template.name)
                    t = await runtime.publish_template(template, who=who, signature=signature)
                    print(f"{t.name}: version {t.version}")
            else:
                for t in engine.templates.latest():
                    print(f"{t.name}  v{t.version}  {len(t.steps)} steps  {', '.join(t.tags)}")
            return 0
        if args.action == "run":
            try:
                inputs = json.loads(args.input)
            except json.JSONDecodeError as exc:
                print(f"labconsole: --input is not JSON: {exc.msg} (column {exc.colno})", file=sys.stderr)
                return 2
            if not isinstance(inputs, dict):
                print("labconsole: --input must be a JSON object", file=sys.stderr)
                return 2
            runtime.authorize("start run", who)
            run_id = await engine.create_instance(args.name, inputs, priority=args.priority,
                                                  version=args.version, who=who or os_user())
            print(run_id)
            if args.wait:
                if runtime.dispatcher is not None:
                    await runtime.dispatcher.start()
                await engine.execute_workflow(run_id, async_execution=False)
                _print_progress(engine.get_workflow_progress(run_id))
                return 0 if engine.run_status(run_id).value == "completed" else 1
            return 0
        if args.action == "status":
            _print_progress(engine.get_workflow_progress(_run_id(engine, args.id)))
            return 0
        if args.action == "list":
            from core.engine import RunStatus

            statuses = [s.value for s in RunStatus]
            if args.status is not None and args.status.lower() not in statuses:
                print(f"labconsole: --status {args.status!r} is not a run status; use one of: "
                      f"{', '.join(statuses)}", file=sys.stderr)
                return 2
            rows, total = engine.query_instances(status=args.status, template=args.template, limit=args.limit)
            for r in rows:
                print(f"{r['id']}  {r['status']:<10} {r['template_name']} v{r['template_version']}  "
                      f"priority {r['priority']}  {_when(r['created_at'])}")
            print(f"{len(rows)} of {total} runs")
            return 0
        if args.action == "terminate":
            run_id = _run_id(engine, args.id)
            runtime.authorize("cancel", who)
            signature = await actor.sign("cancel", run_id)
            await runtime.cancel(run_id, who=who, reason=args.reason, signature=signature)
            print(f"{run_id}: cancelled")
            return 0
        if args.action == "retry":
            inst = engine.get_instance(args.id)
            failed = [s["id"] for s in inst["steps"] if s["status"] in ("failed", "unknown", "cancelled")]
            if not failed:
                print(f"labconsole: run {args.id} has no failed step to retry", file=sys.stderr)
                return 2
            runtime.authorize("retry", who)
            signature = await actor.sign("retry", args.id)
            await runtime.retry(args.id, who=who, reason="retry from the command line", signature=signature)
            if args.wait:
                if runtime.dispatcher is not None:
                    await runtime.dispatcher.start()
                await engine.wait(args.id)
            else:
                print("the console continues the run when it next looks at the store")
            _print_progress(engine.get_workflow_progress(args.id))
            return 0
    finally:
        await runtime.close()
    return 1


async def _schedules(args: argparse.Namespace, runtime: RuntimeApi, who: str | None) -> int:
    from core.schedules import Frequency, Schedule, Scheduler
    from core.users import os_user

    by = who or os_user()

    scheduler = Scheduler(runtime)
    if args.action == "add":
        if bool(args.cron) == bool(args.every):
            print("labconsole: give either --cron or --every (with --at)", file=sys.stderr)
            return 2
        try:
            inputs = json.loads(args.input)
        except json.JSONDecodeError as exc:
            print(f"labconsole: --input is not JSON: {exc.msg} (column {exc.colno})", file=sys.stderr)
            return 2
        # check_schedule refuses inputs that are not an object, and a cron that never fires,
        # naming the field
        s = await scheduler.add(Schedule(args.template, Frequency(args.every or "cron"), cron=args.cron, at=args.at,
                                         timezone=args.timezone, inputs=inputs, priority=args.priority), who=by)
        print(f"{s.id}: {s.template} '{s.expression()}' ({s.timezone}), next run {scheduler.get_next_run(s.id)}")
    elif args.action == "list":
        for s in scheduler.entries():
            state = "enabled" if s.enabled else "paused"
            print(f"{s.id}  {state:<8} {s.template:<24} {s.expression():<20} {s.timezone:<14} "
                  f"next {scheduler.get_next_run(s.id) or '-'}  last run {s.last_run_id or '-'}")
    elif args.action == "remove":
        await scheduler.remove(args.id, who=by)
        print(f"{args.id}: removed")
    else:
        s = await scheduler.set_enabled(args.id, args.action == "resume", who=by)
        print(f"{s.id}: {'enabled' if s.enabled else 'paused'}, next run {scheduler.get_next_run(s.id) or '-'}")
    print("the console starts scheduled runs while it is open")
    return 0


def _run_id(engine: Any, id_or_name: str) -> str:
    """A run id as given, or (seed 004: ``workflow status NAME``) the latest run of that workflow."""
    from core.errors import NotFoundError

    if engine.views.exists(id_or_name):
        return id_or_name
    rows, _ = engine.query_instances(template=id_or_name, limit=1)
    if not rows:
        raise NotFoundError(f"no run and no workflow with runs named '{id_or_name}'")
    return str(rows[0]["id"])


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _print_progress(p: dict[str, Any]) -> None:
    print(f"{p['workflow_id']}: {p['status']}, {p['progress']}% ({p['completed_tasks']}/{p['total_tasks']} "
          f"steps), recovery {p['recovery_attempts']}/{p['max_recovery_attempts']}")
    for t in p["tasks"]:
        err = f"  {t['error_message']}" if t["error_message"] else ""
        print(f"  {t['id']:<16} {t['status']:<10} {t['type']:<28} retries {t['retry_count']}{err}")


if __name__ == "__main__":
    sys.exit(main())
