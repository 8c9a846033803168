"""Topic names of contracts.md for model bundles and model commands, and the slots they address.

A slot is one ``(kind, template)`` under one scope: the gateway itself, its site (``_all``), or every
gateway (``_all/_all``). The most specific scope holding a bundle wins, so a site-wide model can be
overridden for one gateway and an empty head in the gateway's own slot falls back to the site's.
"""

from __future__ import annotations

import enum

ALL = "_all"
MODELS_ROOT = "plantwire/models/v1"
CMD_ROOT = "plantwire/cmd/v1"


class Scope(enum.IntEnum):
    """Most specific first: a lower value wins."""

    GATEWAY = 0
    SITE = 1
    GLOBAL = 2


def scope_path(scope: Scope, site: str, gateway: str) -> str:
    if scope is Scope.GATEWAY:
        return f"{MODELS_ROOT}/{site}/{gateway}"
    if scope is Scope.SITE:
        return f"{MODELS_ROOT}/{site}/{ALL}"
    return f"{MODELS_ROOT}/{ALL}/{ALL}"


def head_topic(scope: Scope, site: str, gateway: str, kind: str, template: str) -> str:
    return f"{scope_path(scope, site, gateway)}/{kind}/{template}/head"


def chunk_topic(scope: Scope, site: str, gateway: str, kind: str, template: str, i: int) -> str:
    return f"{scope_path(scope, site, gateway)}/{kind}/{template}/chunk/{i}"


def command_topic(site: str, gateway: str) -> str:
    return f"{CMD_ROOT}/{site}/{gateway}/models"


def result_topic(site: str, gateway: str) -> str:
    return f"plantwire/v1/{site}/{gateway}/cmdresult"
