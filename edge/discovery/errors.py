"""The one exception discovery raises: a sentence an engineer can act on, printed as is."""

from __future__ import annotations


class DiscoveryError(Exception):
    """Discovery cannot go on (unreachable, refused, timed out); the message says what to do."""
