"""What the engineer reads when an OPC-UA server refuses our certificate or reports failed sensors.

Real asyncua servers on free loopback ports. The strict server behaves like servers with a file
PKI (open62541, node-opcua): it answers OpenSecureChannel from an untrusted client with a Bad
result and files the client's certificate under ``pki/rejected/``; asyncua's client turns that
answer into a bare AssertionError (shared/MEASURED.md trap 15).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from asyncua import Server, ua
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary

from edge.config import OpcuaSettings
from edge.sources.opcua import OpcuaSource
from edge.sources.stats import SourceStats
from plantwire.plant import Quality
from plantwire.status import Status
from tests.test_opcua_source import FAST, OpcServer, Recorder, free_port, make_table, running, wait_for

pytestmark = pytest.mark.integration


def warnings_of(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines()
            if any(f" {lv} " in line for lv in ("WARNING", "ERROR", "CRITICAL"))]


class StrictPki:
    """A server-side trust list with ``trusted/certs`` and ``rejected`` folders, checked at OpenSecureChannel."""

    def __init__(self, root: Path) -> None:
        self.trusted = root / "trusted" / "certs"
        self.rejected = root / "rejected"
        self.trusted.mkdir(parents=True)
        self.rejected.mkdir(parents=True)

    def is_trusted(self, der: bytes) -> bool:
        return any(p.read_bytes() == der for p in self.trusted.iterdir())

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = UaProcessor.open_secure_channel
        pki = self

        def open_secure_channel(self: UaProcessor, algohdr: Any, seqhdr: Any, body: Any) -> None:
            der = algohdr.SenderCertificate
            if not der or pki.is_trusted(der):
                original(self, algohdr, seqhdr, body)
                return
            (pki.rejected / f"{hashlib.sha1(der).hexdigest()}.der").write_bytes(der)
            request = struct_from_binary(ua.OpenSecureChannelRequest, body)
            self._connection.select_policy(algohdr.SecurityPolicyURI, der, request.Parameters.SecurityMode)
            response = ua.OpenSecureChannelResponse()
            response.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadSecurityChecksFailed)
            self.send_response(request.RequestHeader.RequestHandle, seqhdr, response, ua.MessageType.SecureOpen)

        monkeypatch.setattr(UaProcessor, "open_secure_channel", open_secure_channel)


def test_untrusted_certificate_names_the_file_and_the_rejected_folder(
        tmp_path: Path, log_text: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncua.crypto import cert_gen
    from cryptography.x509.oid import ExtendedKeyUsageOID

    pki = StrictPki(tmp_path / "server-pki")
    pki.patch(monkeypatch)

    async def main() -> SourceStats:
        port = free_port()
        table = make_table(port, machines=1, signals=3)
        server_key, server_cert = tmp_path / "server.pem", tmp_path / "server.der"
        await cert_gen.setup_self_signed_certificate(server_key, server_cert, "urn:test:server", "localhost",
                                                     [ExtendedKeyUsageOID.SERVER_AUTH], {})
        opc = OpcServer(port, table.ids)
        orig_start = Server.start

        async def start(self: Server) -> None:
            await self.set_application_uri("urn:test:server")
            await self.load_certificate(str(server_cert))
            await self.load_private_key(str(server_key))
            self.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await orig_start(self)

        monkeypatch.setattr(Server, "start", start)
        await opc.start()
        monkeypatch.setattr(Server, "start", orig_start)
        cert, key = tmp_path / "pki" / "client.der", tmp_path / "pki" / "client.pem"
        cfg = OpcuaSettings.model_validate({**FAST.model_dump(), "security": {
            "mode": "SignAndEncrypt", "certificate": cert, "private_key": key}})
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, cfg, sink, stats)
        try:
            async with running(source):
                await wait_for(lambda: stats.connect_failures >= 3 and any(pki.rejected.iterdir()),
                               what="refused connects")
                # The engineer follows the line: moves the rejected file to trusted; no restart needed.
                for f in pki.rejected.iterdir():
                    f.rename(pki.trusted / f.name)
                await wait_for(lambda: stats.samples_good >= len(table), timeout_s=30, what="secure data")
        finally:
            await opc.stop()
        return stats

    stats = asyncio.run(main())
    cert = tmp_path / "pki" / "client.der"
    thumb = hashlib.sha1(cert.read_bytes()).hexdigest()
    ours = [line for line in warnings_of(log_text) if "edge.sources.opcua" in line]
    refused = [line for line in ours if "refuses our client certificate" in line]
    assert len(refused) == 1, ours  # once per streak, not per retry
    assert str(cert) in refused[0] and thumb in refused[0] and "rejected/" in refused[0]
    assert not [line for line in ours if "unexpected failure" in line or "AssertionError" in line], ours
    assert "Traceback" not in log_text.getvalue()
    assert len(warnings_of(log_text)) <= 6, warnings_of(log_text)  # asyncua's own lines: shortened and limited
    assert stats.connected is False  # closed at the end of the test


def test_a_failed_sensor_is_one_state_not_an_error_per_notification(log_text: io.StringIO) -> None:
    async def main() -> tuple[SourceStats, Recorder]:
        port = free_port()
        table = make_table(port, machines=1, signals=4)
        opc = OpcServer(port, table.ids)
        await opc.start()
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, FAST, sink, stats)
        try:
            async with running(source):
                await wait_for(lambda: stats.samples_good >= 4, what="initial values")
                for i in range(20):  # the broken sensor keeps notifying Bad (the server alternates its diagnosis)
                    code = ua.StatusCodes.BadSensorFailure if i % 2 else ua.StatusCodes.BadOutOfService
                    await opc.write(table.ids[0], float(i), code)
                    await opc.write(table.ids[1], float(i))
                    await asyncio.sleep(0.06)
                await wait_for(lambda: stats.samples_bad >= 10, what="bad notifications")
                await opc.write(table.ids[0], 5.0)  # repaired
                await wait_for(lambda: stats.bad_signals.count == 0, what="recovery")
                assert stats.bad_signals.entered == 1 and stats.bad_signals.left == 1
                assert stats.errors == 0 and stats.exceptions == 0  # a sensor state; nothing of ours failed
                assert set(stats.bad_by_status) == {Status.BAD_SENSOR_FAILURE, 0x808D0000}  # BadOutOfService
                assert sum(stats.bad_by_status.values()) == stats.samples_bad >= 10
        finally:
            await opc.stop()
        return stats, sink

    stats, sink = asyncio.run(main())
    # One line when the sensor went bad, naming it, its node and the status; not one per notification.
    went = [line for line in warnings_of(log_text) if "reported BAD by the server" in line]
    assert len(went) == 1, warnings_of(log_text)
    assert "1 signal reported BAD" in went[0] and "m1.s1 (ns=" in went[0] and ";s=m1.s1)" in went[0]
    assert "BadOutOfService" in went[0] and "check the sensors" in went[0]
    # The stop delivers one BAD sample per signal (the outage is visible), counted as BadNoCommunication.
    assert stats.bad_by_status[Status.BAD_NO_COMMUNICATION] == 4
    _, rows, _, quality = sink.columns()
    assert (quality[rows == 0] == Quality.BAD).sum() == stats.samples_bad - 3


def test_clean_session_and_stop_log_no_warnings_and_no_library_chatter(log_text: io.StringIO) -> None:
    async def main() -> str:
        port = free_port()
        table = make_table(port, machines=1, signals=3)
        opc = OpcServer(port, table.ids)
        await opc.start()
        start = len(log_text.getvalue())  # the test server's own start-up warnings are not the edge's
        sink, stats = Recorder(), SourceStats()
        source = OpcuaSource(table.devices[0], table, FAST, sink, stats)
        try:
            async with running(source):
                await wait_for(lambda: stats.samples_good >= len(table) and "connected; 3" in log_text.getvalue(),
                               what="initial values")
            return log_text.getvalue()[start:]  # the source has stopped; the server is still up
        finally:
            await opc.stop()

    text = asyncio.run(main())
    assert not warnings_of(io.StringIO(text)), text
    assert "asyncua" not in text, text  # asyncua's INFO chatter only at --log-level DEBUG
