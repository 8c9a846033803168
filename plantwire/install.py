"""``plantwire install`` / ``plantwire uninstall``: systemd units, the ``plantwire`` user and directories.

What an operator of a Debian edge box expects from a package, without building one:

- Units go to ``/etc/systemd/system`` (the administrator's place; ``/usr/lib/systemd/system`` belongs
  to dpkg), with ``ExecStart`` pointing at the ``plantwire`` executable actually installed (by default
  the one next to the running Python, i.e. the virtualenv's).
- The system user comes from a ``sysusers.d`` file applied by ``systemd-sysusers`` (Debian's own
  packages do the same since bookworm), so the user is declared, not just created, and the same
  file works on an image built offline with ``--root``.
- ``/etc/plantwire`` gets example configs (``*.example``, always refreshed) and the secret files
  ``edge.env``/``ingest.env`` (mode 0600, created only when absent: an operator's secrets are never
  overwritten); ``/etc/plantwire/tls`` (0700) holds keys handed over with ``LoadCredential=``. The
  state directories under ``/var/lib/plantwire`` are left to systemd's ``StateDirectory=``, which
  creates them owned by the service user.
- ``uninstall`` stops and removes the units and the sysusers file but keeps config, state and the
  user: the state holds the write-ahead log, i.e. data not yet in the database, and a removed
  system user's UID could be handed to someone else while files still carry it. ``--purge``
  removes those too, as ``apt purge`` would.

``--root DIR`` does all of it inside DIR (an image being built, or a test's temp dir) and never
touches the running system: ``systemctl --root`` only creates the ``wants`` symlinks, nothing is
started and no daemon-reload is sent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["UNITS", "InstallError", "Layout", "install", "main", "render_unit", "uninstall"]

#: Unit name -> the short name ``--enable`` takes.
UNITS = {"edge": "plantwire-edge.service", "ingest": "plantwire-ingest.service", "sim": "plantwire-sim.service"}
#: The ExecStart binary written in the shipped unit files; replaced by the real one at install.
SHIPPED_EXEC = "/opt/plantwire/venv/bin/plantwire"
SHIPPED_PYTHON = "/opt/plantwire/venv/bin/python3"
USER = "plantwire"
#: Example files copied to /etc/plantwire: (source name, target name, mode, overwrite).
_ETC_FILES = (
    ("edge.yaml", "edge.yaml.example", 0o644, True),
    ("cloud.yaml", "cloud.yaml.example", 0o644, True),
    ("edge.env", "edge.env", 0o600, False),
    ("ingest.env", "ingest.env", 0o600, False),
)


class InstallError(RuntimeError):
    """Installation cannot proceed; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes under ``root`` ("/" on a live system)."""

    root: Path

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def live(self) -> bool:
        return self.root.resolve() == Path("/")

    @property
    def unit_dir(self) -> Path:
        return self._p("/etc/systemd/system")

    @property
    def sysusers_file(self) -> Path:
        return self._p("/usr/lib/sysusers.d/plantwire.conf")

    @property
    def etc_dir(self) -> Path:
        return self._p("/etc/plantwire")

    @property
    def tls_dir(self) -> Path:
        return self._p("/etc/plantwire/tls")

    @property
    def state_dir(self) -> Path:
        return self._p("/var/lib/plantwire")

    @property
    def cache_dir(self) -> Path:
        return self._p("/var/cache/plantwire")

    @property
    def doc_dir(self) -> Path:
        return self._p("/usr/share/doc/plantwire")


def source_dir() -> Path:
    """The ``systemd/`` folder shipped with plantwire (a clone or an editable install)."""
    here = Path(__file__).resolve().parent.parent / "systemd"
    if (here / UNITS["edge"]).is_file():
        return here
    raise InstallError(f"unit files not found in {here}: run from a clone of plantwire or pass --units-dir")


def default_exec() -> Path:
    """The ``plantwire`` console script of the running Python (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("plantwire")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("plantwire")
    if found:
        return Path(found)
    raise InstallError("no `plantwire` executable found next to this Python or on PATH: pass --exec PATH")


def render_unit(text: str, exec_path: Path, python_path: Path | None = None) -> str:
    """The shipped unit with ``ExecStart`` pointing at ``exec_path`` (and at ``python_path``, default
    the ``python3`` beside it or this Python, where the unit runs a module).

    systemd splits ExecStart on whitespace and expands ``%`` and ``$``: a path holding any of them
    would run something else, so it is refused rather than quoted.
    """
    if python_path is None:
        beside = exec_path.parent / "python3"
        python_path = beside if os.access(beside, os.X_OK) else Path(sys.executable)
    for path in (exec_path, python_path):
        if not path.is_absolute() or any(c.isspace() or c in "%$\\\"'" for c in str(path)):
            raise InstallError(f"--exec {str(path)!r}: systemd needs an absolute path without spaces, %, $, quotes")
    lines = text.splitlines(keepends=True)
    rewritten = 0
    for i, line in enumerate(lines):
        if line.startswith("ExecStart="):
            new = line.replace(SHIPPED_EXEC, str(exec_path)).replace(SHIPPED_PYTHON, str(python_path))
            rewritten += new != line
            lines[i] = new
    if not rewritten:
        raise InstallError(f"unit has no ExecStart={SHIPPED_EXEC} line to rewrite")
    return "".join(lines)


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError as exc:
        raise InstallError(f"{argv[0]} not found: is this a systemd-based Debian system?") from exc
    if proc.returncode != 0:
        raise InstallError(f"`{' '.join(argv)}` failed with {proc.returncode}: {proc.stderr.strip()}")


def _systemctl(layout: Layout, *args: str) -> list[str]:
    return ["systemctl", *([] if layout.live else [f"--root={layout.root}"]), *args]


def _write(path: Path, data: str, mode: int) -> None:
    """Atomically: a unit half-written by a crash would be worse than none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _resolve_units(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        unit = UNITS.get(name) or (name if name in UNITS.values() else None)
        if unit is None:
            raise InstallError(f"unknown unit {name!r}: choose from {', '.join(UNITS)}")
        out.append(unit)
    return out


def _build_kernels(exe: Path) -> str:
    """Compile the edge's kernels ahead of time for the installed plantwire (edge RSS ~110 MB instead of ~215).

    Not fatal: without a compiler the edge daemon runs the same kernels under numba's JIT and logs why.
    """
    proc = subprocess.run([str(exe), "kernels"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"kernels: ahead-of-time build failed ({last}); the edge will run them under numba JIT"
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "kernels: built"


def install(
    root: Path = Path("/"),
    *,
    exec_path: Path | None = None,
    enable: Sequence[str] = (),
    start: bool = False,
    units_dir: Path | None = None,
    create_user: bool = True,
) -> list[str]:
    """Install units, user and directories under ``root``; returns what was done, one line each."""
    layout = Layout(root)
    if layout.live and os.geteuid() != 0:
        raise InstallError("installing into / needs root (or use --root DIR to build an image)")
    if start and not layout.live:
        raise InstallError("--now starts services: only on a live system, not with --root")
    src = units_dir or source_dir()
    exe = exec_path or default_exec()
    to_enable = _resolve_units(enable)
    done: list[str] = []
    for unit in UNITS.values():
        _write(layout.unit_dir / unit, render_unit((src / unit).read_text(), exe), 0o644)
        done.append(f"unit {layout.unit_dir / unit} (ExecStart={exe})")

    examples = src / "examples"
    _write(layout.sysusers_file, (examples / "sysusers.conf").read_text(), 0o644)
    done.append(f"sysusers {layout.sysusers_file}")
    if create_user:
        (layout.root / "etc").mkdir(parents=True, exist_ok=True)  # systemd-sysusers --root needs it
        cmd = ["systemd-sysusers", *([] if layout.live else [f"--root={layout.root}"]), str(layout.sysusers_file)]
        _run(cmd)
        done.append(f"user {USER} (systemd-sysusers)")

    for path, mode in ((layout.etc_dir, 0o755), (layout.tls_dir, 0o700), (layout.state_dir, 0o755)):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        done.append(f"dir {path} ({mode:o})")
    for name, target, mode, overwrite in _ETC_FILES:
        dest = layout.etc_dir / target
        if dest.exists() and not overwrite:
            done.append(f"kept {dest} (exists)")
            continue
        _write(dest, (examples / name).read_text(), mode)
        done.append(f"file {dest} ({mode:o})")
    doc = src.parent / "docs" / "operations.md"
    if doc.is_file():
        _write(layout.doc_dir / "operations.md", doc.read_text(), 0o644)
        done.append(f"doc {layout.doc_dir / 'operations.md'}")

    if layout.live:
        done.append(_build_kernels(exe))
        _run(["systemctl", "daemon-reload"])
        done.append("systemctl daemon-reload")
    if to_enable:
        _run(_systemctl(layout, "enable", *(["--now"] if start else []), *to_enable))
        done.append(f"enabled {' '.join(to_enable)}" + (" and started" if start else ""))
    return done


def uninstall(root: Path = Path("/"), *, purge: bool = False) -> list[str]:
    """Stop, disable and remove the units and the sysusers file; ``purge`` also config, state and user."""
    layout = Layout(root)
    if layout.live and os.geteuid() != 0:
        raise InstallError("removing from / needs root (or use --root DIR)")
    done: list[str] = []
    present = [u for u in UNITS.values() if (layout.unit_dir / u).exists()]
    if present:
        # disable --now: stop first, so the edge flushes its log and saves detector state (SIGTERM).
        _run(_systemctl(layout, "disable", *(["--now"] if layout.live else []), *present))
        done.append(f"disabled {' '.join(present)}" + (" and stopped" if layout.live else ""))
    for unit in present:
        (layout.unit_dir / unit).unlink()
        done.append(f"removed {layout.unit_dir / unit}")
    if layout.live and present:
        _run(["systemctl", "daemon-reload"])
    if layout.sysusers_file.exists():
        layout.sysusers_file.unlink()
        done.append(f"removed {layout.sysusers_file}")
    doc = layout.doc_dir
    if doc.exists():
        shutil.rmtree(doc)
        done.append(f"removed {doc}")
    if not purge:
        done.append(f"kept {layout.etc_dir}, {layout.state_dir} (unsent data) and user {USER}: --purge removes them")
        return done
    for path in (layout.etc_dir, layout.state_dir, layout.cache_dir):
        if path.exists():
            shutil.rmtree(path)
            done.append(f"removed {path}")
    chroot = [] if layout.live else ["-R", str(layout.root)]
    passwd = (layout.root / "etc/passwd").read_text() if (layout.root / "etc/passwd").exists() else ""
    if any(line.startswith(f"{USER}:") for line in passwd.splitlines()):
        _run(["userdel", *chroot, USER])
        done.append(f"removed user {USER}")
    group = (layout.root / "etc/group").read_text() if (layout.root / "etc/group").exists() else ""
    if any(line.startswith(f"{USER}:") for line in group.splitlines()):
        _run(["groupdel", *chroot, USER])
        done.append(f"removed group {USER}")
    return done


def main(argv: Sequence[str] | None = None, *, remove: bool = False) -> int:
    """``plantwire install`` (``remove=False``) or ``plantwire uninstall``; exit 1 on failure."""
    prog = "plantwire uninstall" if remove else "plantwire install"
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="install into this directory (default /)")
    if remove:
        parser.add_argument("--purge", action="store_true", help="also remove config, state and the user")
    else:
        parser.add_argument("--exec", dest="exec_path", type=Path, help="the plantwire executable for ExecStart")
        parser.add_argument("--enable", action="append", default=[], choices=sorted(UNITS),
                            help="enable this unit (repeatable)")
        parser.add_argument("--now", action="store_true", help="also start the enabled units (live system only)")
        parser.add_argument("--units-dir", type=Path, help="where the unit files are (default: the clone's systemd/)")
        parser.add_argument("--no-user", action="store_true", help="do not create the plantwire user")
    args = parser.parse_args(argv)
    try:
        if remove:
            done = uninstall(args.root, purge=args.purge)
        else:
            done = install(
                args.root, exec_path=args.exec_path, enable=args.enable, start=args.now,
                units_dir=args.units_dir, create_user=not args.no_user,
            )
    except (InstallError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    return 0
