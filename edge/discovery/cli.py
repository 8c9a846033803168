"""``plantwire discover URL``: describe a server's contents as a plant file or a register-map skeleton.

- ``opc.tcp://HOST:PORT/PATH`` browses the server and writes a plant YAML (edge.discovery.opcua_plant)
  that ``plantwire check`` accepts and the edge reads unchanged. Security as the edge's
  ``opcua.security``: either ``--edge-config FILE`` (its ``opcua.security`` section) or the
  ``--security-mode``/``--certificate``/``--private-key``/... options; a certificate generated on
  first use must then be trusted on the server, as for the edge.
- ``modbus://HOST:PORT --unit N`` probes the unit's four tables (edge.discovery.modbus_probe) and
  writes a register-map CSV skeleton (plantwire.registermap).

Output goes to ``--out`` (or stdout); progress to stderr about once a second (``--quiet`` silences
it). Any failure is one line on stderr, ``plantwire discover: <what and what to do>``, exit status 1;
bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from edge.config import OpcuaSecurity

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwire discover", description="Describe a server's contents: an OPC-UA "
                                "server as a plant file, a Modbus TCP unit as a register-map CSV skeleton.")
    p.add_argument("url", help="opc.tcp://HOST:PORT/PATH or modbus://HOST:PORT")
    p.add_argument("--out", "-o", type=Path, help="write here instead of stdout")
    p.add_argument("--timeout-s", type=float, help="per request (default: 10 for OPC-UA, 2 for Modbus)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    ua = p.add_argument_group("OPC-UA")
    ua.add_argument("--site", default="site", help="site name of the plant file")
    ua.add_argument("--device", help="device name (default: from the host)")
    ua.add_argument("--root", help="browse from this node id instead of the Objects folder")
    ua.add_argument("--edge-config", type=Path,
                    help="take the security settings from this edge config's opcua.security")
    ua.add_argument("--security-mode", choices=["None", "Sign", "SignAndEncrypt"], default="None")
    ua.add_argument("--certificate", type=Path, help="client certificate (DER); generated when absent")
    ua.add_argument("--private-key", type=Path, help="client private key (PEM); generated when absent")
    ua.add_argument("--server-certificate", type=Path, help="pin the server's certificate")
    ua.add_argument("--application-uri", default="urn:plantwire:edge")
    ua.add_argument("--credentials-file", type=Path, help="KEY=value file holding the user and password")
    ua.add_argument("--username-key", help="variable naming the user (file or environment)")
    ua.add_argument("--password-key", help="variable naming the password (file or environment)")
    mb = p.add_argument_group("Modbus")
    mb.add_argument("--unit", type=int, help="unit id to probe (required for modbus://)")
    mb.add_argument("--max-address", type=int, default=9999, help="highest 0-based address probed (default 9999)")
    mb.add_argument("--probe-step", type=int, default=8, help="largest step inside exception ranges (default 8)")
    mb.add_argument("--max-reads", type=int, default=20_000, help="read budget per table (default 20000)")
    mb.add_argument("--max-rows", type=int, default=5000, help="rows written at most (default 5000)")
    return p


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _security(args: argparse.Namespace) -> OpcuaSecurity:
    """The edge's security settings, from an edge config or from the options."""
    from pydantic import ValidationError

    from edge.config import OpcuaSecurity
    from plantwire.configfile import ConfigError, pydantic_errors, read_yaml

    from .errors import DiscoveryError

    if args.edge_config is not None:
        try:
            data = read_yaml(args.edge_config)
        except ConfigError as exc:
            raise DiscoveryError(exc.report()) from None
        section = ((data.get("opcua") or {}).get("security") or {}) if isinstance(data, dict) else {}
        source = f"{args.edge_config}: opcua.security"
    else:
        section = {k: v for k, v in {
            "mode": args.security_mode, "certificate": args.certificate, "private_key": args.private_key,
            "server_certificate": args.server_certificate, "application_uri": args.application_uri,
            "credentials_file": args.credentials_file, "username_key": args.username_key,
            "password_key": args.password_key}.items() if v is not None}
        source = "security options"
    try:
        return OpcuaSecurity.model_validate(section)
    except ValidationError as exc:
        raise DiscoveryError(f"{source}: " + "; ".join(pydantic_errors(exc))) from None


def _write(out: Path | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


async def _opcua(args: argparse.Namespace, host: str, port: int, path: str) -> str:
    from plantwire.plant import PlantConfig

    from .errors import DiscoveryError
    from .opcua_browse import browse_server
    from .opcua_plant import plant_from_browse

    def progress(nodes: int, variables: int) -> None:
        _say(args.quiet, f"discover: {nodes} nodes browsed, {variables} variables")

    result = await browse_server(args.url, _security(args), timeout_s=args.timeout_s, root=args.root,
                                 progress=progress)
    device = args.device or f"opc_{host.replace('.', '_')}"
    try:
        plant = plant_from_browse(result, site=args.site, device=device, host=host, port=port, path=path)
    except ValueError as exc:
        raise DiscoveryError(f"{args.url}: {exc}") from None
    errors = PlantConfig.model_validate(plant).semantic_errors()
    if errors:  # a plant we wrote must pass check; this is our bug, said plainly
        raise DiscoveryError(f"the discovered plant does not validate (a plantwire bug): {errors[0]}")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items())) or "none"
    limits = ", ".join(f"{k}={v or 'none'}" for k, v in result.limits.items())
    head = (f"# plantwire discover {args.url}: {len(result.variables)} variables in {len(plant['machines'])} "
            f"machines; skipped: {skipped}\n# server limits: {limits}; {result.requests} requests\n")
    _say(args.quiet, f"discover: {len(result.variables)} variables in {len(plant['machines'])} machines "
                     f"(skipped: {skipped})")
    return head + yaml.safe_dump(plant, sort_keys=False, default_flow_style=None, allow_unicode=True, width=120)


async def _modbus(args: argparse.Namespace, host: str, port: int) -> str:
    from plantwire.plant import Table
    from plantwire.registermap import format_register_map

    from .modbus_map import register_map_rows
    from .modbus_probe import ProbeSettings, probe_unit

    settings = ProbeSettings(max_address=args.max_address, probe_step=args.probe_step, max_reads=args.max_reads,
                             timeout_s=args.timeout_s)

    def progress(table: Table, address: int, reads: int) -> None:
        _say(args.quiet, f"discover: {table.value} at address {address} of {settings.max_address}, {reads} reads")

    result = await probe_unit(host, port, args.unit, settings, progress=progress)
    rows, comments = register_map_rows(result, settings, max_rows=args.max_rows)
    for t, probe in result.tables.items():
        answering = sum(r.end - r.start for r in probe.answering)
        _say(args.quiet, f"discover: {t.value}: {answering} answering, {len(probe.ranges) - len(probe.answering)} "
                         f"exception ranges, {probe.reads} reads")
    return format_register_map(rows, comments)


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """Silence asyncua and pymodbus while discovering, then restore their levels.

    They log tracebacks, per-timeout hex dumps and per-request chatter for failures this command reports
    itself in one line. Restored afterwards: ``main`` also runs in-process (tests, an embedding tool), where a
    level left at CRITICAL would hide those libraries from everything that logs after it.
    """
    loggers = [logging.getLogger(name) for name in ("asyncua", "pymodbus")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def main(argv: list[str]) -> int:
    from .errors import DiscoveryError

    parser = _parser()
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if url.scheme not in ("opc.tcp", "modbus") or not host:
        parser.error(f"{args.url!r}: expected opc.tcp://HOST:PORT/PATH or modbus://HOST:PORT")
    if url.scheme == "modbus" and args.unit is None:
        parser.error("modbus:// needs --unit N (the unit id; 1 on most Modbus TCP devices, 255 or 0 on some)")
    try:
        if args.timeout_s is None:
            args.timeout_s = 10.0 if url.scheme == "opc.tcp" else 2.0
        with _libraries_quiet():
            if url.scheme == "opc.tcp":
                text = asyncio.run(_opcua(args, host, port or 4840, url.path))
            else:
                text = asyncio.run(_modbus(args, host, port or 502))
        if text:
            _write(args.out, text)
    except DiscoveryError as exc:
        print(f"plantwire discover: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("plantwire discover: interrupted", file=sys.stderr)
        return 130
    if args.out is not None:
        _say(args.quiet, f"discover: wrote {args.out}")
    return 0
