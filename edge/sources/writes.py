"""Writes through a source's own connection (issue 18 item 4): the errors a writer raises.

A write to the plant goes over the connection the source already holds, so the gateway opens no
second session to a PLC and a device that is down for polling is down for writing too. What is
written, and whether at all, is decided by ``edge.actions``; a source only carries it out.
"""

from __future__ import annotations

__all__ = ["DeviceDown", "WriteFailed"]


class DeviceDown(Exception):
    """The device is not connected (or its circuit breaker is open): nothing was sent."""


class WriteFailed(Exception):
    """The device was asked and refused or did not answer in time; the message says which."""
