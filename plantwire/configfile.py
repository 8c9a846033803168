"""Loading and validating YAML config files, with every error reported by its path.

Validation never touches the network (house rule 4): a typo must make the daemon exit 2 with
``machines[2].template: unknown template 'prss'`` rather than restart-loop under systemd.

A file may say what it is with a top-level ``kind: plant | edge | ingestor``; ``plantwire check``
then checks it as that kind instead of inferring it, and a loader for another kind refuses it
with that reason (rather than with a list of unknown fields). Cross-field checks that can run on
the raw mapping (``raw_checks``) are reported together with the field errors, not only once those
are fixed.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config file that cannot be used; ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(f"{source}: " + "; ".join(self.errors))

    def report(self) -> str:
        return "\n".join(f"{self.source}: {e}" for e in self.errors)


def format_loc(loc: Sequence[int | str]) -> str:
    """``('machines', 2, 'template')`` -> ``machines[2].template``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def pydantic_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = format_loc(err["loc"])
        if prefix:
            loc = prefix + ("" if loc.startswith("[") else ".") + loc if loc != "(top level)" else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"{loc}: {msg}")
    return lines


class ConfigKind(enum.StrEnum):
    """What a config file configures; the value of its optional top-level ``kind:``."""

    PLANT = "plant"
    EDGE = "edge"
    INGESTOR = "ingestor"


def read_yaml(path: Path, *, kind: ConfigKind | None = None) -> dict[str, Any]:
    """The file's top-level mapping, without its ``kind:`` (checked against ``kind`` when given)."""
    data = _read_mapping(path)
    declared = data.get("kind")
    if isinstance(declared, str) and declared in {k.value for k in ConfigKind}:
        del data["kind"]
        if kind is not None and declared != kind:
            raise ConfigError(str(path), [f"kind: the file says {declared!r}, but it is read as a {kind.value} config"])
    return data


def declared_kind(path: Path) -> tuple[ConfigKind | None, dict[str, Any]]:
    """(the ``kind:`` the file declares, or None; its mapping without it). Unknown kinds are errors."""
    data = _read_mapping(path)
    if "kind" not in data:
        return None, data
    declared = data.pop("kind")
    try:
        return ConfigKind(declared), data
    except ValueError:
        raise ConfigError(
            str(path), [f"kind: {declared!r} is not one of {', '.join(k.value for k in ConfigKind)}"]
        ) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["(top level): expected a mapping of settings"])
    return data


def validate(
    model: type[M],
    data: dict[str, Any],
    source: str,
    semantic: Callable[[M], list[str]] | None = None,
    *,
    raw_checks: Callable[[dict[str, Any]], list[str]] | None = None,
) -> M:
    """Validate ``data`` as ``model``; raise ConfigError listing every structural and semantic error.

    ``raw_checks`` run on the raw mapping when field validation fails, so that cross-field errors
    (references, clashes) come in the same report; they must tolerate malformed values. Once the
    fields validate, ``semantic`` (which may also run the raw checks) sees the model.
    """
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        errors = pydantic_errors(exc)
        if raw_checks is not None:
            errors += [e for e in raw_checks(data) if not any(e in have or have in e for have in errors)]
        raise ConfigError(source, errors) from None
    if semantic is not None:
        errors = semantic(obj)
        if errors:
            raise ConfigError(source, errors)
    return obj


def load_plant(path: Path) -> Any:
    """Load a plant file; ``imports: [file, ...]`` (relative paths) contribute shared templates."""
    from plantwire.plant import PlantConfig

    data = read_yaml(path, kind=ConfigKind.PLANT)
    imports = data.pop("imports", [])
    if not isinstance(imports, list):
        raise ConfigError(str(path), ["imports: expected a list of template files"])
    templates: dict[str, Any] = {}
    for i, name in enumerate(imports):
        ipath = Path(name) if Path(name).is_absolute() else path.parent / str(name)
        try:
            doc = read_yaml(ipath)
        except ConfigError as exc:
            raise ConfigError(str(path), [f"imports[{i}]: {e}" for e in exc.errors]) from None
        extra = doc.get("templates")
        if not isinstance(extra, dict):
            raise ConfigError(str(path), [f"imports[{i}]: {ipath} has no 'templates' mapping"])
        templates.update(_with_register_maps(extra, ipath, str(path)))
    own = data.get("templates") or {}
    if not isinstance(own, dict):
        raise ConfigError(str(path), ["templates: expected a mapping of template name to template"])
    data["templates"] = {**templates, **_with_register_maps(own, path, str(path))}
    from plantwire.plantrefs import cross_errors

    return validate(PlantConfig, data, str(path), PlantConfig.semantic_errors, raw_checks=cross_errors)


def _with_register_maps(templates: dict[str, Any], declared_in: Path, source: str) -> dict[str, Any]:
    """Replace each template's ``register_map: FILE.csv`` (relative to the YAML declaring it) by the
    signals it lists (plantwire.registermap), followed by the template's own ``signals``, if any."""
    from plantwire.registermap import RegisterMapError, read_register_map

    out: dict[str, Any] = {}
    errors: list[str] = []
    for name, tpl in templates.items():
        if not isinstance(tpl, dict) or "register_map" not in tpl:
            out[name] = tpl
            continue
        tpl = dict(tpl)
        ref = tpl.pop("register_map")
        if not isinstance(ref, str):
            errors.append(f"templates.{name}.register_map: expected a CSV file path")
            continue
        csv_path = Path(ref) if Path(ref).is_absolute() else declared_in.parent / ref
        try:
            rows = read_register_map(csv_path)
        except RegisterMapError as exc:
            errors += [f"templates.{name}.register_map: {e}" for e in exc.errors]
            continue
        tpl["signals"] = rows + list(tpl.get("signals") or [])
        out[name] = tpl
    if errors:
        raise ConfigError(source, errors)
    return out



def ensure_state_dir(path: Path) -> str | None:
    """Create ``path`` (and parents) and check it is writable; None, or one line saying why not.

    Daemons call this before anything else touches the disk: an uncreatable or read-only state
    directory is an operator's error like a typo, so it is one clean line and exit 2, not a traceback.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"state_dir {path}: cannot be created: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"state_dir {path}: not writable by this user"
    return None
