"""``plantwire actions``: ask a gateway to write one allow-listed value (``request``), and list the audit trail
of actions (``list``).

A request is a command on ``plantwire/cmd/v1/{site}/{gateway}/actions`` published as the broker user
``plantwire-operator`` (the only identity the shipped ACL lets publish commands); the CLI then waits for the
gateway's answer on ``plantwire/v1/{site}/{gateway}/cmdresult``. The edge decides (listed, enabled, in range,
rate limit, dry run or write: docs/actions.md), writes, and audits; the CLI only asks and reports the answer.
The broker connection, TLS and password options are those of ``plantwire alarms`` (same code).

Exit codes: 0 applied (written), 5 dry run (decided and audited, nothing written), 1 refused or failed by the
gateway, 2 usage or configuration errors, 3 no answer within ``--timeout`` (the request is queued for the
gateway's persistent session and may still be applied: ``plantwire actions list`` shows whether it was),
4 InfluxDB or the broker unreachable or refusing us. A dry run has its own code so that a script that meant
to write does not mistake it for a write.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import uuid
from typing import Any

from cloud.alarms import query
from cloud.alarms.cli import BrokerError, _settings, add_operator_options, send_command
from cloud.retention import qualified
from cloud.schema import M_AUDIT

__all__ = ["EXIT_DRY_RUN", "main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_UNREACHABLE, EXIT_DRY_RUN = 0, 1, 2, 3, 4, 5


def _value(text: str) -> float | int:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    return int(f) if f.is_integer() and "." not in text else f


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwire actions", description=__doc__.split("\n\n")[0])
    add_operator_options(p, actor_help="who asks (default: the login name)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("request", help="ask a gateway to write a value to an allow-listed target")
    r.add_argument("target", help="the target's name in the gateway's actions: config (e.g. leak01.hold)")
    r.add_argument("value", type=_value, help="the value to write (a number; 0/1 for a coil)")
    r.add_argument("--site", required=True, help="the gateway's site")
    r.add_argument("--gateway", required=True, help="the gateway")
    r.add_argument("--reason", default="", help="why (goes into the audit record)")
    ls = sub.add_parser("list", help="recent action requests and their outcomes (the audit trail in InfluxDB)")
    ls.add_argument("--hours", type=float, default=24.0, help="how far back")
    ls.add_argument("--gateway", help="only this gateway")
    ls.add_argument("--json", action="store_true")
    return p


def _request(args: argparse.Namespace, broker: Any) -> int:
    doc = {"id": uuid.uuid4().hex, "actor": args.actor or getpass.getuser(), "ts_ns": time.time_ns(),
           "action": "write", "target": args.target, "value": args.value, "reason": args.reason}
    out = send_command(broker, args.site, args.gateway, doc, timeout_s=args.timeout, service="actions")
    if out.result is None:
        print(f"plantwire actions: no answer from gateway {args.gateway} (site {args.site}) within {args.timeout:g} s "
              f"to request {out.request_id}; it is queued for the gateway and may still be applied: check "
              "`plantwire actions list`", file=sys.stderr)
        return EXIT_NO_ANSWER
    outcome = out.result.get("outcome")
    detail = out.result.get("detail")
    print(f"{args.target} = {args.value} on {args.gateway}: {outcome}" + (f" ({detail})" if detail else ""))
    return {"applied": EXIT_OK, "dry_run": EXIT_DRY_RUN}.get(str(outcome), EXIT_REFUSED)


def _list(args: argparse.Namespace, db: query.InfluxQL) -> int:
    since_ns = time.time_ns() - int(args.hours * 3.6e12)
    q = f"SELECT * FROM {qualified(M_AUDIT)} WHERE service = 'actions' AND time >= {since_ns}"  # RP audit
    if args.gateway:
        q += f" AND gateway = '{args.gateway.replace(chr(39), '')}'"
    rows = db.rows(q + " ORDER BY time DESC LIMIT 200")
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print("no action requests")
        return EXIT_OK
    print(f"{'time (UTC)':19}  {'gateway':12} {'actor':16} {'target':24} {'outcome':8} detail")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(r["time"]) / 1e9))
        print(f"{when:19}  {r.get('gateway', ''):12} {r.get('actor', ''):16} {r.get('target', ''):24} "
              f"{r.get('outcome', ''):8} {r.get('detail', '')}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        db, broker = _settings(args)
    except Exception as exc:  # a config error: one line, exit 2
        print(f"plantwire actions: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _request(args, broker) if args.cmd == "request" else _list(args, db)
    except (query.QueryError, BrokerError) as exc:
        print(f"plantwire actions: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
