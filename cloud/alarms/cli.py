"""``plantwire alarms``: list open incidents, act on them as the operator, and print the EEMUA 191 report.

Reads come from InfluxDB (what the ingestor stored); actions go to the gateway that owns the incident,
as a command on ``plantwire/cmd/v1/{site}/{gateway}/alarms`` published as the broker user
``plantwire-operator`` (the only identity the shipped ACL lets publish commands), and the command then
waits for the gateway's answer on ``plantwire/v1/{site}/{gateway}/cmdresult``. The edge applies the
action and writes the audit record; the CLI only asks and reports the answer. No answer within
``--timeout`` is said plainly (exit 3): the command may still be applied later, when the gateway
reconnects (QoS 1, its persistent session), and ``plantwire alarms list`` shows whether it was.

Exit codes: 0 applied (or dry run), 1 refused or failed by the gateway, 2 usage or configuration
errors, 3 no answer, 4 InfluxDB or the broker unreachable or refusing us.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud import schema as s
from cloud.alarms import query
from cloud.alarms.kpi import Report

__all__ = ["CommandOutcome", "main", "send_command"]

OPERATOR = "plantwire-operator"
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class CommandOutcome:
    """The gateway's answer (``result`` is the cmdresult document), or None when none came in time."""

    request_id: str
    result: dict[str, Any] | None


class BrokerError(RuntimeError):
    """The broker could not be reached, or refused us (connection or the command's publication)."""


def send_command(broker: Broker, site: str, gateway: str, doc: dict[str, Any], *, timeout_s: float,
                 client_id: str | None = None, service: str = "alarms") -> CommandOutcome:
    """Publish one command (QoS 1) to the gateway's ``service`` (alarms, actions) and wait up to ``timeout_s`` for
    its cmdresult."""
    rid = str(doc["id"])
    result_topic = f"plantwire/v1/{site}/{gateway}/cmdresult"
    cmd_topic = f"plantwire/cmd/v1/{site}/{gateway}/{service}"
    cond = threading.Condition()
    state: dict[str, Any] = {}
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=client_id or f"{OPERATOR}-cli-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    if broker.ca_file is not None:
        from plantwire.tls import client_context

        c.tls_set_context(client_context(broker.ca_file, broker.cert_file, broker.key_file))
    if broker.username:
        c.username_pw_set(broker.username, broker.password)

    def note(key: str, value: object) -> None:
        with cond:
            state[key] = value
            cond.notify_all()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        try:
            r = json.loads(m.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return  # not ours to judge; another tool's answer
        if isinstance(r, dict) and r.get("id") == rid:
            note("result", r)

    c.on_connect = lambda _c, _u, _f, rc, _p=None: note("connect", int(getattr(rc, "value", rc)))
    c.on_subscribe = lambda _c, _u, mid, rcs, _p=None: note(f"sub{mid}", [int(getattr(r, "value", r)) for r in rcs])
    c.on_publish = lambda _c, _u, mid, rc, _p=None: note(f"pub{mid}", int(getattr(rc, "value", rc)))
    c.on_message = on_message
    deadline = time.monotonic() + timeout_s

    def wait(key: str) -> Any:
        with cond:
            if not cond.wait_for(lambda: key in state, max(0.0, deadline - time.monotonic())):
                return None
            return state[key]

    try:
        c.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise BrokerError(f"broker {broker.host}:{broker.port}: {exc}") from None
    c.loop_start()
    try:
        rc = wait("connect")
        if rc is None or rc != 0:
            raise BrokerError(f"broker {broker.host}:{broker.port}: connection "
                              f"{'timed out' if rc is None else f'refused (reason code {rc})'}")
        _, mid = c.subscribe(result_topic, qos=1)
        granted = wait(f"sub{mid}")
        if granted is None or granted[0] >= 0x80:
            raise BrokerError(f"broker refused our subscription to {result_topic} (ACL: connect as {OPERATOR})")
        info = c.publish(cmd_topic, json.dumps(doc).encode(), qos=1)
        puback = wait(f"pub{info.mid}")
        if puback is not None and puback >= 0x80:
            raise BrokerError(f"broker refused the command on {cmd_topic} (reason code {puback}): only the user "
                              f"{OPERATOR} may publish commands (configs/mosquitto/acl)")
        return CommandOutcome(rid, wait("result"))
    finally:
        c.disconnect()
        c.loop_stop()


# -- argument handling ------------------------------------------------------------------------------


def _duration_s(text: str) -> int:
    """``24h``, ``30m``, ``7d``, ``90s`` -> seconds."""
    try:
        value, unit = int(text[:-1]), text[-1]
        return value * _UNITS_S[unit]
    except (ValueError, KeyError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number and a unit (s, m, h, d), e.g. 24h") from None


def add_operator_options(p: argparse.ArgumentParser, actor_help: str) -> None:
    """Where the operator's commands and queries go and as whom: the options every operator CLI shares
    (``plantwire alarms``, ``plantwire actions``)."""
    p.add_argument("--config", type=Path, help="the ingestor's config: InfluxDB and broker address from it")
    p.add_argument("--influx", help="InfluxDB URL (default from --config, else http://127.0.0.1:8086)")
    p.add_argument("--database", help="InfluxDB database (default from --config, else plantwire)")
    p.add_argument("--broker", help="HOST:PORT of the broker (default from --config, else 127.0.0.1:1883)")
    p.add_argument("--ca", type=Path, help="CA file for TLS to the broker")
    p.add_argument("--cert", type=Path, help=f"client certificate of the {OPERATOR} identity (TLS)")
    p.add_argument("--key", type=Path, help="its key")
    p.add_argument("--username", help=f"broker user name (password auth; default {OPERATOR} with --password-env)")
    p.add_argument("--password-env", help="environment variable holding the broker password")
    p.add_argument("--actor", default=None, help=actor_help)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway's answer")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwire alarms", description=__doc__.split("\n\n")[0])
    add_operator_options(p, actor_help="who acts (default: the login name)")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="open incidents: active or unacknowledged")
    ls.add_argument("--area", help="only this area")
    ls.add_argument("--priority", choices=("critical", "high", "low"), help="only this priority")
    ls.add_argument("--json", action="store_true")
    for verb, helptext in (("ack", "acknowledge"), ("shelve", "shelve for a while"), ("unshelve", "unshelve"),
                           ("oos", "take out of service"), ("return", "return to service"),
                           ("maintenance", "a machine is in maintenance: its process alarms are suppressed"),
                           ("maintenance-end", "the machine's maintenance is over")):
        a = sub.add_parser(verb, help=helptext)
        if verb.startswith("maintenance"):
            a.add_argument("target", metavar="machine", help="machine id")
        else:
            a.add_argument("target", metavar="id", help="incident id (as `list` shows it), or with --machine a "
                           "machine id: the command then applies to that machine's alarm, present and future")
            a.add_argument("--machine", action="store_true", help="the target is a machine, not an incident")
        a.add_argument("--gateway", help="the gateway, when the target is not unique or not stored yet")
        a.add_argument("--site", help="the site, with --gateway when the target is not stored yet")
        a.add_argument("--reason", default="", required=verb == "oos", help="why (required for oos)")
        if verb == "shelve":
            a.add_argument("--minutes", type=float, required=True, help="how long (the edge caps it)")
    r = sub.add_parser("report", help="EEMUA 191 alarm performance figures")
    r.add_argument("--since", type=_duration_s, default=_duration_s("24h"), help="window, e.g. 24h, 7d")
    r.add_argument("--json", action="store_true")
    return p


def _settings(args: argparse.Namespace) -> tuple[query.InfluxQL, Broker]:
    url, database, host, port = "http://127.0.0.1:8086", "plantwire", "127.0.0.1", 1883
    user = password = None
    ca = None
    if args.config is not None:
        from cloud.config import load_cloud

        cfg = load_cloud(args.config)
        url, database, host, port = cfg.influx.url, cfg.influx.database, cfg.mqtt.host, cfg.mqtt.port
        user = cfg.influx.username
        password = os.environ.get(cfg.influx.password_env, "") if cfg.influx.password_env else None
        ca = cfg.mqtt.tls.ca_file if cfg.mqtt.tls is not None else None
    if args.broker:
        h, _, p = args.broker.rpartition(":")
        host, port = h or host, int(p)
    db = query.InfluxQL(args.influx or url, args.database or database, username=user, password=password)
    broker_password = os.environ.get(args.password_env, "") if args.password_env else None
    broker = Broker(host, port, ca_file=args.ca or ca, cert_file=args.cert, key_file=args.key,
                    username=args.username or (OPERATOR if broker_password is not None else None),
                    password=broker_password)
    return db, broker


def _fmt_time(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9))


def _print_list(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no open incidents")
        return
    print(f"{'started (UTC)':19}  {'gateway':12} {'id':24} {'area':10} {'priority':8} {'state':16} signals")
    for r in rows:
        print(f"{_fmt_time(int(r['time'])):19}  {r.get('gateway', ''):12} {r.get(s.F_ID, ''):24} "
              f"{r.get('area', ''):10} {r.get(s.F_PRIORITY, ''):8} {r.get(s.F_STATE, ''):16} "
              f"{', '.join(r['signals'])}")


def _print_report(rep: Report) -> None:
    hours = (rep.end_ns - rep.start_ns) / 3.6e12
    print(f"alarm performance (EEMUA 191), {_fmt_time(rep.start_ns)} .. {_fmt_time(rep.end_ns)} UTC ({hours:g} h)")
    print(f"annunciated alarms: {rep.annunciated}")
    print(f"\n{'area':16} {'alarms':>7} {'avg/10min':>10} {'peak/10min':>11} {'flood %':>8}")
    for a in rep.areas:
        print(f"{a.area:16} {a.alarms:7d} {a.avg_per_10min:10.2f} {a.peak_per_10min:11d} {a.flood_pct:8.2f}")
    print("\npriority distribution:")
    for p, (n, pct) in rep.priorities.items():
        print(f"  {p:9} {n:6d}  {pct:5.1f} %")
    print("\ntop 10 most frequent (source: alarms):")
    for src, n in rep.top10:
        print(f"  {src}: {n}")
    print(f"\nchattering incidents: {len(rep.chattering)}" + (f" ({', '.join(rep.chattering)})" if rep.chattering
                                                              else ""))
    print(f"standing incidents (active > 24 h): {len(rep.standing)}" + (f" ({', '.join(rep.standing)})"
                                                                        if rep.standing else ""))


def _report_json(rep: Report) -> dict[str, Any]:
    return {
        "start_ns": rep.start_ns, "end_ns": rep.end_ns, "annunciated": rep.annunciated,
        "areas": [vars(a) for a in rep.areas], "top10": rep.top10, "chattering": rep.chattering,
        "standing": rep.standing, "priorities": {k: {"alarms": n, "pct": p} for k, (n, p) in rep.priorities.items()},
    }


def _act(args: argparse.Namespace, db: query.InfluxQL, broker: Broker) -> int:
    site, gateway = args.site, args.gateway
    by_machine = args.cmd.startswith("maintenance") or args.machine
    what = f"machine {args.target!r}" if by_machine else f"incident {args.target!r}"
    if not (site and gateway):
        found = (query.find_machine(db, args.target, gateway) if by_machine
                 else query.find_incident(db, args.target, gateway))
        places = sorted({(r["site"], r["gateway"]) for r in found})
        if not places:
            print(f"plantwire alarms: {what} not found in InfluxDB; give --site and --gateway "
                  "to send the command anyway", file=sys.stderr)
            return EXIT_USAGE
        if len(places) > 1:
            print(f"plantwire alarms: {what} exists on several gateways "
                  f"({', '.join(g for _, g in places)}); choose one with --gateway", file=sys.stderr)
            return EXIT_USAGE
        site, gateway = places[0]
    doc: dict[str, Any] = {"id": uuid.uuid4().hex, "actor": args.actor or getpass.getuser(), "ts_ns": time.time_ns(),
                           "action": args.cmd.replace("-", "_"), "machine" if by_machine else "incident": args.target,
                           "reason": args.reason}
    if args.cmd == "shelve":
        doc["minutes"] = args.minutes
    out = send_command(broker, site, gateway, doc, timeout_s=args.timeout)
    if out.result is None:
        print(f"plantwire alarms: no answer from gateway {gateway} (site {site}) within {args.timeout:g} s to "
              f"request {out.request_id}; it is queued for the gateway and may still be applied: check "
              "`plantwire alarms list`", file=sys.stderr)
        return EXIT_NO_ANSWER
    outcome = out.result.get("outcome")
    print(f"{args.cmd} {args.target} on {gateway}: {outcome}"
          + (f" ({out.result.get('detail')})" if out.result.get("detail") else ""))
    return EXIT_OK if outcome in ("applied", "dry_run") else EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        db, broker = _settings(args)
    except Exception as exc:  # a config error: one line, exit 2
        print(f"plantwire alarms: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.cmd == "list":
            rows = [r for r in query.open_incidents(db) if (args.area is None or r.get(s.TAG_AREA) == args.area)
                    and (args.priority is None or r.get(s.F_PRIORITY) == args.priority)]
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                _print_list(rows)
            return EXIT_OK
        if args.cmd == "report":
            end_ns = time.time_ns()
            rep = query.report(db, end_ns - args.since * 10**9, end_ns)
            if args.json:
                print(json.dumps(_report_json(rep), indent=1))
            else:
                _print_report(rep)
            return EXIT_OK
        return _act(args, db, broker)
    except (query.QueryError, BrokerError) as exc:
        print(f"plantwire alarms: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
