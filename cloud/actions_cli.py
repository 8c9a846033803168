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

``list`` reads the ``audit`` measurement (cloud/schema.py). Its InfluxQL is built from the schema's names and
the user's filters quoted as InfluxQL literals (identifiers in double quotes, strings in single quotes, each
with its backslashes and quotes escaped; numbers formatted as numbers), never pasted in: a gateway name with
a quote in it matches that gateway and nothing else.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import uuid
from typing import Any

from cloud import schema
from cloud.alarms import query
from cloud.alarms.cli import BrokerError, _settings, add_operator_options, send_command
from cloud.retention import qualified
from cloud.schema import M_AUDIT

__all__ = ["EXIT_DRY_RUN", "main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_UNREACHABLE, EXIT_DRY_RUN = 0, 1, 2, 3, 4, 5


def _ident(name: str) -> str:
    """An InfluxQL identifier (measurement, tag or field key), double-quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: str) -> str:
    """An InfluxQL string literal, single-quoted."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hours(text: str) -> float:
    try:
        h = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of hours") from None
    if not 0 < h <= 24 * 3660:
        raise argparse.ArgumentTypeError(f"{text!r}: hours must be > 0 and at most ten years")
    return h


def list_query(since_ns: int, *, gateway: str | None = None, site: str | None = None, limit: int = 200) -> str:
    """The InfluxQL of ``list``: actions' audit points since ``since_ns``, newest first."""
    where = [f"{_ident(schema.TAG_SERVICE)} = {_literal('actions')}", f"time >= {int(since_ns)}"]
    if gateway is not None:
        where.append(f"{_ident(schema.TAG_GATEWAY)} = {_literal(gateway)}")
    if site is not None:
        where.append(f"{_ident(schema.TAG_SITE)} = {_literal(site)}")
    return (f"SELECT * FROM {qualified(M_AUDIT)} WHERE {' AND '.join(where)} "  # RP audit
            f"ORDER BY time DESC LIMIT {int(limit)}")


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
    ls.add_argument("--hours", type=_hours, default=24.0, help="how far back")
    ls.add_argument("--gateway", help="only this gateway")
    ls.add_argument("--site", help="only this site")
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
    rows = db.rows(list_query(since_ns, gateway=args.gateway, site=args.site))
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
