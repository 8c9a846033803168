"""Structured (JSON) logs and the rate limiter: a storm becomes a few lines and a counted summary."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from plantwire.logs import RateLimitFilter, active_limiter, is_library, log_source, setup_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_extras_and_exceptions(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("DEBUG", json=True, stream=out)
    log = logging.getLogger("plantwire.test")
    log.info("device %s connected", "plc1", extra={"device": "plc1", "samples": 3, "obj": {1, 2}})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("flush failed")
    log.warning("multi\nline \"quoted\" ünïcode")
    info, err, warn = lines(out)
    assert info["level"] == "info" and info["logger"] == "plantwire.test" and info["msg"] == "device plc1 connected"
    assert info["device"] == "plc1" and info["samples"] == 3 and info["obj"] == "{1, 2}"
    assert abs(float(info["ts"]) - time.time()) < 5 and str(info["time"]).endswith("+00:00")
    assert err["level"] == "error" and "ZeroDivisionError" in str(err["exc"])
    assert warn["msg"] == "multi\nline \"quoted\" ünïcode"  # one line on the wire, intact after parsing
    assert len(out.getvalue().splitlines()) == 3
    assert not {"args", "levelno", "pathname", "taskName"} & set(info)


def test_text_and_journal_formats(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("INFO", stream=out)
    logging.getLogger("plantwire.x").error("boom %d", 1)
    assert " ERROR plantwire.x: boom 1" in out.getvalue()
    out = io.StringIO()
    setup_logging("INFO", stream=out, journal=True)
    logging.getLogger("plantwire.x").error("boom")
    logging.getLogger("plantwire.x").warning("hmm")
    logging.getLogger("plantwire.x").info("ok")
    # journald reads the priority prefix (sd-daemon(3)) and stamps the time itself.
    assert out.getvalue().splitlines() == ["<3>plantwire.x: boom", "<4>plantwire.x: hmm", "<6>plantwire.x: ok"]


def test_a_storm_is_limited_counted_and_summarised(restore_root: None) -> None:
    out = io.StringIO()
    limiter = setup_logging("INFO", json=True, stream=out, burst=3, window_s=0.3)
    log = logging.getLogger("plantwire.modbus")
    for i in range(50):
        log.error("device %s timed out", f"plc{i % 5}")  # one template, many devices: one storm
    log.warning("device %s timed out", "plc0")  # another level: its own budget
    for i in range(10):
        log.info("poll %d", i)  # info is never limited
    got = lines(out)
    errors = [r for r in got if r["level"] == "error"]
    assert [r["msg"] for r in errors] == ["device plc0 timed out", "device plc1 timed out", "device plc2 timed out"]
    assert sum(1 for r in got if r["level"] == "info") == 10
    assert limiter.suppressed_total == 47
    # Once the window has closed, the next record of any kind brings the summary first.
    time.sleep(0.35)
    log.info("later")
    summary = lines(out)[len(got)]
    assert summary["level"] == "error" and summary["logger"] == "plantwire.modbus"
    assert summary["msg"].startswith("suppressed 47 similar messages") and "device %s timed out" in summary["msg"]
    assert summary["suppressed"] == 47
    assert lines(out)[-1]["msg"] == "later"
    # A new window: the budget is back.
    log.error("device %s timed out", "plc9")
    assert lines(out)[-1]["msg"] == "device plc9 timed out"


def test_pending_summaries_are_written_on_shutdown(restore_root: None) -> None:
    out = io.StringIO()
    limiter = setup_logging("INFO", stream=out, burst=1, window_s=3600)
    log = logging.getLogger("plantwire.mqtt")
    for _ in range(4):
        log.error("broker unreachable")
    assert out.getvalue().count("broker unreachable") == 1
    for h in logging.getLogger().handlers:
        h.close()  # what logging.shutdown() does at exit
    assert "suppressed 3 similar messages" in out.getvalue() and limiter.suppressed_total == 3


def test_summary_rides_on_the_same_message_when_it_comes_back() -> None:
    f = RateLimitFilter(burst=1, window_s=0.05)
    mk = lambda: logging.LogRecord("x", logging.ERROR, __file__, 1, "disk full", None, None)  # noqa: E731
    assert f.filter(mk()) and not f.filter(mk()) and not f.filter(mk())
    time.sleep(0.06)
    rec = mk()
    assert f.filter(rec) and "suppressed 2 similar messages" in rec.getMessage()
    assert f.pending_summaries(force=True) == []  # reported once, not twice
    with pytest.raises(ValueError):
        RateLimitFilter(burst=0)


def test_library_records_are_shortened_tagged_and_limited_under_a_stable_key(restore_root: None) -> None:
    """pymodbus makes every timeout message unique (tid, frame dump): keyed by text, all would pass."""
    out = io.StringIO()
    limiter = setup_logging("INFO", stream=out, burst=5, window_s=60)
    lib = logging.getLogger("pymodbus.logging")
    with log_source("press7"):
        for tid in range(40):
            dump = "".join(f"\n>>>>> send: 0x0 0x{tid:x} 0x0 0x0 0x0 0x6 0x1 0x3" for _ in range(20))
            lib.error(f"No response received after 0 retries, tid {tid}, continue with next request{dump}")
    with log_source("press8"):  # another device: its own budget
        lib.error("No response received after 0 retries, tid 1, continue with next request")
    text = out.getvalue()
    got = text.splitlines()
    assert len(got) == 2, got
    assert "[press7] No response received" in got[0] and "more characters at --log-level DEBUG" in got[0]
    assert "[press8]" in got[1] and ">>>>>" not in text
    assert limiter.suppressed_total == 39


def test_library_info_is_demoted_and_tracebacks_reduced(restore_root: None) -> None:
    out = io.StringIO()
    limiter = setup_logging("INFO", stream=out)
    chatty = logging.getLogger("asyncua.client.ua_client.UaClient")
    chatty.info("open_secure_channel")
    logging.getLogger("plantwire.edge").info("ours stays")
    try:
        raise AssertionError
    except AssertionError:
        chatty.exception("Error in watchdog loop")
    got = out.getvalue().splitlines()
    assert len(got) == 2 and "ours stays" in got[0], got
    assert got[1].endswith("Error in watchdog loop (AssertionError)") and "Traceback" not in out.getvalue()
    assert limiter.library_demoted_total == 1
    out = io.StringIO()
    setup_logging("DEBUG", stream=out)  # debugging a library: everything, whole
    chatty.info("open_secure_channel")
    dump = "first line\nsecond line"
    logging.getLogger("pymodbus.logging").error(dump)
    assert "open_secure_channel" in out.getvalue() and "second line" in out.getvalue()


def test_is_library() -> None:
    assert is_library("pymodbus.logging") and is_library("asyncua") and is_library("paho.mqtt.client")
    assert not is_library("edge.sources.modbus") and not is_library("plantwire") and not is_library("cloud.app")
    assert not is_library("asyncio") and not is_library("root")  # they report our own bugs: tracebacks stay


def test_active_limiter_is_the_installed_one(restore_root: None) -> None:
    limiter = setup_logging("INFO", stream=io.StringIO())
    assert active_limiter() is limiter
