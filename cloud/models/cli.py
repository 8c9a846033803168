"""``plantwire models ...``: keygen, fit, bundle-rul, verify, publish, status (docs/models.md).

Connection settings come from the ingestor's config file (``--config cloud.yaml``: its ``mqtt`` and
``influx`` sections, TLS and credential environment variables included) or from options; options win. The
broker identity for publishing is ``plantwire-models`` (the client certificate's CN, or ``--username``).
Exit codes: 0 done, 1 the work failed (InfluxDB, broker, a refused bundle), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plantwire import bundle

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _add_mqtt(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker (default: the ingestor config's mqtt section)")
    g.add_argument("--config", type=Path, help="the ingestor's config file (cloud.yaml)")
    g.add_argument("--broker", help="HOST:PORT of the broker")
    g.add_argument("--ca", type=Path, help="CA certificate for the broker (TLS)")
    g.add_argument("--cert", type=Path, help="client certificate (CN plantwire-models)")
    g.add_argument("--key", dest="tls_key", type=Path, help="client certificate's key")
    g.add_argument("--username", help="broker user name (without client certificates)")
    g.add_argument("--password-env", help="environment variable holding the broker password")
    g.add_argument("--timeout-s", type=float, default=30.0, help="wait this long for each broker answer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwire models", description="the cloud side of the model loop")
    sub = p.add_subparsers(dest="cmd", required=True)

    k = sub.add_parser("keygen", help="create the Ed25519 signing key pair (private 0600; the public one for gateways)")
    k.add_argument("private", type=Path, help="private key file to create (PEM); refuses to replace one")
    k.add_argument("--public", type=Path, help="public key file (default: PRIVATE with .pub)")

    f = sub.add_parser("fit", help="fit every template's models from a site's history in InfluxDB, sign and store")
    f.add_argument("--plant", type=Path, required=True, help="the site's plant file (templates and machines)")
    f.add_argument("--config", type=Path, help="the ingestor's config file (its influx section is read)")
    f.add_argument("--influx-url", help="InfluxDB URL (default: the config's, else http://127.0.0.1:8086)")
    f.add_argument("--database", help="v1 database (or v2 bucket)")
    f.add_argument("--api", choices=["v1", "v2"], help="v1: InfluxQL /query; v2: Flux (InfluxDB 2.x)")
    f.add_argument("--retention-policy", help="v1 retention policy holding raw samples (default: the default one)")
    f.add_argument("--start", required=True, help="first instant, ISO-8601 UTC or ns")
    f.add_argument("--end", required=True, help="end instant (exclusive), ISO-8601 UTC or ns")
    f.add_argument("--template", action="append", default=[], help="fit only this template (repeatable)")
    f.add_argument("--exclude", action="append", default=[], metavar="START/END[/MACHINE_GLOB]",
                   help="also leave out this period (maintenance, trials, out of service); repeatable")
    f.add_argument("--period-s", type=int, default=10, help="row period: the edge's machine.period_s")
    f.add_argument("--holdout", type=float, default=0.2, help="later fraction of the range held back for validation")
    f.add_argument("--max-rows", type=int, default=50_000, help="rows per template after even thinning")
    f.add_argument("--instances", type=int, default=0, help="read at most N machines per template (0: all)")
    f.add_argument("--window-s", type=int, default=3600, help="seconds of one machine per InfluxDB query")
    f.add_argument("--read-ticks", type=int, default=100_000,
                   help="ticks read per template at most (about); beyond, each machine reads every k-th window")
    f.add_argument("--parallel", type=int, default=2, help="InfluxDB queries in flight")
    f.add_argument("--signing-key", type=Path, help="private key: sign and store bundles (else: report only)")
    f.add_argument("--store", type=Path, default=Path("bundles"), help="bundle store directory")
    f.add_argument("--json", action="store_true", help="print the report as JSON")

    r = sub.add_parser("bundle-rul", help="sign a RUL model (.npz from tools/fit_rul.py) into a bundle")
    r.add_argument("model", type=Path)
    r.add_argument("--template", required=True)
    r.add_argument("--signing-key", type=Path, required=True)
    r.add_argument("--store", type=Path, default=Path("bundles"))
    r.add_argument("--validation", default="{}", help="JSON object of validation figures to record")

    v = sub.add_parser("verify", help="check a bundle's signature, hashes and arrays; print its manifest")
    v.add_argument("bundles", type=Path, nargs="+")
    v.add_argument("--public-key", type=Path, action="append", required=True, help="trusted key (repeatable)")

    pub = sub.add_parser("publish", help="deliver bundles to gateways over MQTT (chunked, retained)")
    pub.add_argument("bundles", type=Path, nargs="*", help="bundle files (with --clear: none)")
    pub.add_argument("--site")
    pub.add_argument("--gateway", help="one gateway (needs --site)")
    pub.add_argument("--all", action="store_true", help="every gateway of every site")
    pub.add_argument("--clear", metavar="KIND/TEMPLATE", action="append", default=[],
                     help="empty this slot at the target instead (repeatable)")
    pub.add_argument("--public-key", type=Path, action="append", default=[],
                     help="verify each bundle with this key before sending (recommended)")
    _add_mqtt(pub)

    st = sub.add_parser("status", help="each gateway's active/shadow/previous model versions and refusals")
    st.add_argument("--json", action="store_true")
    st.add_argument("--settle-s", type=float, default=1.0, help="collect retained health documents this long")
    _add_mqtt(st)
    return p


# -- settings ---------------------------------------------------------------------------------------


def _mqtt_settings(args: argparse.Namespace) -> Any:
    from cloud.config import MqttSettings, TlsSettings, load_cloud

    s = load_cloud(args.config).mqtt if args.config else MqttSettings()
    upd: dict[str, Any] = {"client_id": f"plantwire-models-{time.time_ns()}"}
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--broker: expected HOST:PORT, got {args.broker!r}")
        upd |= {"host": host, "port": int(port)}
    if args.username:
        upd |= {"username": args.username, "password_env": args.password_env}
    if args.ca or args.cert or args.tls_key:
        upd["tls"] = TlsSettings(ca_file=args.ca, cert_file=args.cert, key_file=args.tls_key)
    return s.model_copy(update=upd)


def _history(args: argparse.Namespace) -> Any:
    import os

    from cloud.config import InfluxApi, InfluxSettings, load_cloud
    from cloud.models.history import FluxHistory, InfluxQLHistory

    s = load_cloud(args.config).influx if args.config else InfluxSettings()
    url = args.influx_url or s.url
    api = InfluxApi(args.api) if args.api else s.api
    database = args.database or s.database
    token = os.environ.get(s.token_env) if s.token_env else None
    if api is InfluxApi.V2:
        return FluxHistory(url, org=s.org, bucket=args.database or s.bucket or database, token=token,
                           timeout_s=max(s.timeout_s, 120.0), chunk_s=args.window_s)
    password = os.environ.get(s.password_env) if s.password_env else None
    return InfluxQLHistory(url, database, retention_policy=args.retention_policy or s.retention_policy,
                           username=s.username, password=password, token=token,
                           timeout_s=max(s.timeout_s, 120.0), chunk_s=args.window_s)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# -- commands ---------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from cloud.models.keys import generate

    priv, pub, kid = generate(args.private, args.public)
    print(f"signing key {priv} (mode 0600, keep it on the cloud side only)\npublic key {pub} (key id {kid}): "
          f"install on every gateway")
    return EXIT_OK


def cmd_fit(args: argparse.Namespace) -> int:
    from cloud.models import store
    from cloud.models.exclude import _time_ns, parse_declared
    from cloud.models.fit import FitOptions, fit_site
    from plantwire.configfile import load_plant

    plant = load_plant(args.plant)
    start, end = _time_ns(args.start, "--start"), _time_ns(args.end, "--end")
    if end <= start:
        raise ValueError("--end must be after --start")
    declared = [parse_declared(t, f"--exclude[{i}]") for i, t in enumerate(args.exclude)]
    unknown = [t for t in args.template if t not in plant.templates]
    if unknown:
        raise ValueError(f"--template: not in {args.plant}: {unknown}")
    key = bundle.load_private_key(args.signing_key) if args.signing_key else None
    opts = FitOptions(period_s=args.period_s, holdout=args.holdout, max_rows=args.max_rows,
                      instances=args.instances, templates=tuple(args.template), window_s=args.window_s,
                      read_ticks=args.read_ticks, parallel=args.parallel)
    t0 = time.monotonic()
    result = fit_site(_history(args), plant, start, end, opts, declared)
    written: list[str] = []
    report: dict[str, Any] = {"site": result.site, "fitted_from_ns": start, "validation_from_ns": result.split_ns,
                              "to_ns": end, "templates": []}
    for rep in result.templates:
        entry: dict[str, Any] = {"template": rep.template, "machines": rep.machines, "machines_read": rep.machines_read,
                                 "samples": rep.samples, "ticks": rep.ticks, "ticks_kept": rep.ticks_kept,
                                 "stride": rep.stride, "fitted": [], "skipped": rep.skipped}
        for m in rep.fitted:
            item: dict[str, Any] = {"kind": m.kind, "signals": len(m.signals), "rows": m.rows,
                                    "validation": m.validation}
            if key is not None:
                data, manifest = store.make(m.kind, m.template, m.signals, m.arrays, m.manifest,
                                            fitted_from_ns=start, fitted_to_ns=result.split_ns, rows=m.rows,
                                            data_sha256=m.data_sha256, validation=m.validation, key=key)
                path = store.write(args.store, data, manifest)
                item |= {"bundle": str(path), "version": manifest["version"], "bytes": len(data)}
                written.append(str(path))
            entry["fitted"].append(item)
        report["templates"].append(entry)
    report["seconds"] = round(time.monotonic() - t0, 3)
    report["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    report["influx_queries"] = result.queries
    report["influx_bytes"] = result.bytes_read
    report["influx_wait_s"] = round(result.query_s, 3)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_fit(report)
    return EXIT_OK


def _print_fit(r: dict[str, Any]) -> None:
    print(f"site {r['site']}: fitted on [{r['fitted_from_ns']}, {r['validation_from_ns']}), validated on "
          f"[{r['validation_from_ns']}, {r['to_ns']})")
    for t in r["templates"]:
        print(f"{t['template']}: {t['machines_read']}/{t['machines']} machines, {t['samples']:,} samples read as "
              f"{t['ticks']:,} ticks (each machine every {t['stride']}. hour), {t['ticks_kept']:,} kept for fitting")
        for m in t["fitted"]:
            where = f" -> {m['bundle']} ({m['bytes']:,} bytes)" if "bundle" in m else ""
            print(f"  {m['kind']}: {m['signals']} signals, {m['rows']:,} rows, validation {m['validation']}{where}")
        for kind, why in t["skipped"].items():
            print(f"  {kind}: not fitted: {why}")
    print(f"took {r['seconds']:.1f} s ({r['influx_wait_s']:.1f} s waiting for InfluxDB), peak memory "
          f"{r['peak_rss_mb']:.0f} MB, {r['influx_queries']} InfluxDB queries ({r['influx_bytes'] / 1e6:.1f} MB)")


def cmd_bundle_rul(args: argparse.Namespace) -> int:
    import hashlib

    import numpy as np

    from cloud.models import store

    key = bundle.load_private_key(args.signing_key)
    with np.load(args.model, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    names = [str(n) for n in arrays.get("op_names", [])] + [str(n) for n in arrays.get("sensor_names", [])]
    if not names:
        raise ValueError(f"{args.model}: no op_names/sensor_names: not a RUL model of tools/fit_rul.py")
    validation = json.loads(args.validation)
    if not isinstance(validation, dict):
        raise ValueError("--validation: expected a JSON object")
    digest = hashlib.sha256(args.model.read_bytes()).hexdigest()
    data, manifest = store.make("rul", args.template, names, arrays, {}, fitted_from_ns=0, fitted_to_ns=0, rows=0,
                                data_sha256=digest, validation=validation, key=key)
    print(store.write(args.store, data, manifest))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    keys = bundle.load_public_keys(args.public_key)
    bad = 0
    for path in args.bundles:
        try:
            b = bundle.read_file(path, keys)
        except bundle.BundleError as exc:
            print(f"REFUSED {exc}", file=sys.stderr)
            bad += 1
            continue
        m = b.manifest
        shapes = {k: list(a.shape) for k, a in b.arrays.items()}
        print(json.dumps({"file": str(path), "ok": True, "sha256": b.sha256, "kind": m["kind"],
                          "template": m["template"], "version": m["version"], "signals": len(m["signals"]),
                          "rows": m["rows"], "validation": m["validation"], "key_id": m["key_id"],
                          "arrays": shapes}))
    return EXIT_FAILED if bad else EXIT_OK


def _targets(args: argparse.Namespace) -> list[Any]:
    from cloud.models.publish import ALL, Target

    if args.all:
        if args.site or args.gateway:
            raise ValueError("--all goes alone (not with --site/--gateway)")
        return [Target(ALL, ALL)]
    if not args.site:
        raise ValueError("a target is needed: --site S [--gateway G], or --all")
    return [Target(args.site, args.gateway or ALL)]


def cmd_publish(args: argparse.Namespace) -> int:
    from cloud.models import publish
    from cloud.models.mqtt import Session

    targets = _targets(args)
    if bool(args.clear) == bool(args.bundles):
        raise ValueError("give bundle files, or --clear KIND/TEMPLATE (not both)")
    slots = []
    for c in args.clear:
        kind, _, template = c.partition("/")
        if kind not in bundle.KINDS or not template:
            raise ValueError(f"--clear: expected KIND/TEMPLATE with KIND in {list(bundle.KINDS)}, got {c!r}")
        slots.append((kind, template))
    loaded = []
    keys = bundle.load_public_keys(args.public_key) if args.public_key else None
    for path in args.bundles:
        data = path.read_bytes()
        if keys is not None:
            manifest = bundle.read(data, keys, where=str(path)).manifest
        else:  # unverified here (the gateway verifies): the manifest only addresses the slot
            manifest = bundle.peek_manifest(data, where=str(path))
        loaded.append((path, data, manifest))
    with Session(_mqtt_settings(args), timeout_s=args.timeout_s) as s:
        for path, data, manifest in loaded:
            for topic, n in publish.publish(s, data, manifest, targets).items():
                print(f"{path.name}: version {manifest['version']} -> {topic} ({n} chunk(s), {len(data):,} bytes)")
        for kind, template in slots:
            for topic, n in publish.clear(s, kind, template, targets).items():
                print(f"cleared {topic} ({n} chunk(s))")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cloud.models import status
    from cloud.models.mqtt import Session

    with Session(_mqtt_settings(args), timeout_s=args.timeout_s) as s:
        gws = status.collect(s, args.settle_s)
    if args.json:
        print(json.dumps([asdict(g) for g in gws], indent=1))
    else:
        print(status.render(gws))
    return EXIT_OK


COMMANDS = {"keygen": cmd_keygen, "fit": cmd_fit, "bundle-rul": cmd_bundle_rul, "verify": cmd_verify,
            "publish": cmd_publish, "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from cloud.models.history import HistoryError
    from cloud.models.mqtt import MqttCommandError
    from plantwire.configfile import ConfigError

    try:
        return COMMANDS[args.cmd](args)
    except (ConfigError, ValueError, FileExistsError) as exc:
        print(f"plantwire models {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (HistoryError, MqttCommandError, bundle.BundleError, OSError) as exc:
        print(f"plantwire models {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_FAILED
