"""The shipped systemd units, checked by systemd's own tools, and ``plantwire install``/``uninstall``.

There is no systemd PID 1 on a build box, but ``systemd-analyze`` works offline: ``verify`` loads a
unit as the manager would (unknown keys, bad values, a missing ExecStart binary all fail), and
``security --offline=yes`` scores its sandboxing. The units are checked as installed by
``plantwire install --root`` (ExecStart then points at this venv's real ``plantwire``), which is
also how the installer itself is tested without touching this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantwire.install import SHIPPED_EXEC, UNITS, InstallError, render_unit

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "systemd"
EXE = Path(sys.executable).with_name("plantwire")
MAX_EXPOSURE = 3.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def directives(text: str) -> dict[str, list[str]]:
    """``Key -> [values]`` over all sections (systemd allows a key several times, e.g. SystemCallFilter)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plantwire.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)


def exposure(unit: Path) -> float:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert m, f"no exposure level in:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp root with plantwire installed into it (units, user, directories), edge enabled."""
    assert os.access(EXE, os.X_OK), f"{EXE}: run `pip install -e .` first"
    d = tmp_path_factory.mktemp("root")
    proc = cli("install", "--root", str(d), "--exec", str(EXE), "--enable", "edge")
    assert proc.returncode == 0, proc.stderr
    yield d


@pytest.mark.parametrize("unit", sorted(UNITS.values()))
def test_unit_has_what_the_issue_asks(unit: str) -> None:
    d = directives((SHIPPED / unit).read_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify"
    assert int(one["WatchdogSec"]) > 0
    assert one["Restart"] == "on-failure" and int(one["StartLimitBurst"]) > 1 and int(one["StartLimitIntervalSec"]) > 0
    assert one["RestartPreventExitStatus"] == "2"  # a config error (exit 2) must not restart-loop
    assert one["User"] == "plantwire" and one["StateDirectory"].startswith("plantwire/")
    assert one["ConfigurationDirectory"] == "plantwire"
    assert "EnvironmentFile" in d or "LoadCredential" in d
    assert one["ProtectSystem"] == "strict" and one["ProtectHome"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["NoNewPrivileges"] == "yes" and one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "@system-service" in d["SystemCallFilter"] and one["MemoryMax"]
    assert f"{SHIPPED_EXEC} " in one["ExecStart"]


def test_install_lays_out_units_user_and_directories(root: Path) -> None:
    for unit in UNITS.values():
        text = (root / "etc/systemd/system" / unit).read_text()
        assert f" {EXE} " in text.replace("ExecStart=", "ExecStart= ") and "/opt/plantwire" not in text
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / UNITS["edge"]).is_symlink() and not (wants / UNITS["ingest"]).exists()
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^plantwire:x:\d+:\d+:[^:]*:/var/lib/plantwire:/usr/sbin/nologin$", passwd, re.M), passwd
    assert "plantwire:" in (root / "etc/group").read_text()
    etc = root / "etc/plantwire"
    assert stat.S_IMODE((etc / "edge.env").stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "tls").stat().st_mode) == 0o700
    assert (etc / "edge.yaml.example").is_file() and (etc / "cloud.yaml.example").is_file()


@pytest.mark.parametrize("unit", sorted(UNITS.values()))
def test_installed_unit_passes_systemd_analyze_verify(root: Path, unit: str) -> None:
    proc = verify(root / "etc/systemd/system" / unit)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@pytest.mark.parametrize("unit", sorted(UNITS.values()))
def test_installed_unit_exposure_is_at_most_3(root: Path, unit: str) -> None:
    level = exposure(root / "etc/systemd/system" / unit)
    assert level <= MAX_EXPOSURE, f"{unit}: exposure {level}"


def test_verify_and_security_checks_catch_broken_units(root: Path, tmp_path: Path) -> None:
    """Guards the two checks above: they must fail on a broken or unhardened unit."""
    text = (root / "etc/systemd/system" / UNITS["edge"]).read_text()
    typo = tmp_path / "typo.service"
    typo.write_text(text.replace("Type=notify", "Type=notfy").replace("ProtectSystem=", "ProtectSytem="))
    warnings = verify(typo).stderr  # systemd ignores bad lines with a warning (exit 0): hence the stderr check
    assert "notfy" in warnings and "ProtectSytem" in warnings
    missing = tmp_path / "missing.service"
    missing.write_text(text.replace(f"ExecStart={EXE} ", "ExecStart=/nonexistent/plantwire "))
    assert verify(missing).returncode != 0
    bare = tmp_path / "bare.service"
    keep = ("[", "Type=", "ExecStart=", "User=", "Description=")
    bare.write_text("\n".join(line for line in text.splitlines() if line.startswith(keep)) + "\n")
    assert exposure(bare) > MAX_EXPOSURE


def test_reinstall_keeps_secrets_and_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "r"
    assert cli("install", "--root", str(root), "--exec", str(EXE), "--enable", "edge", "--enable", "ingest"
               ).returncode == 0
    env = root / "etc/plantwire/edge.env"
    env.write_text("PLANTWIRE_MQTT_PASSWORD=s3cret\n")
    wal = root / "var/lib/plantwire/edge/wal-000001.seg"
    wal.parent.mkdir(parents=True)
    wal.write_bytes(b"unsent")
    proc = cli("install", "--root", str(root), "--exec", str(EXE))
    assert proc.returncode == 0 and f"kept {env}" in proc.stdout
    assert env.read_text() == "PLANTWIRE_MQTT_PASSWORD=s3cret\n"

    proc = cli("uninstall", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert not list((root / "etc/systemd/system").rglob("plantwire-*"))  # units and wants symlinks
    assert not (root / "usr/lib/sysusers.d/plantwire.conf").exists()
    assert env.exists() and wal.read_bytes() == b"unsent"  # unsent data survives a plain uninstall
    assert "plantwire:" in (root / "etc/passwd").read_text()

    proc = cli("uninstall", "--root", str(root), "--purge")
    assert proc.returncode == 0, proc.stderr
    assert not (root / "etc/plantwire").exists() and not (root / "var/lib/plantwire").exists()
    assert "plantwire:" not in (root / "etc/passwd").read_text()
    assert "plantwire:" not in (root / "etc/group").read_text()


def test_install_refuses_what_systemd_would_misread(tmp_path: Path) -> None:
    text = (SHIPPED / UNITS["edge"]).read_text()
    for bad in ("relative/plantwire", "/opt/my venv/bin/plantwire", "/opt/100%/plantwire"):
        with pytest.raises(InstallError, match="absolute path without spaces"):
            render_unit(text, Path(bad))
    proc = cli("install", "--root", str(tmp_path), "--exec", str(EXE), "--enable", "nope")
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
    proc = cli("install", "--root", str(tmp_path), "--exec", str(EXE), "--now", "--enable", "edge")
    assert proc.returncode == 1 and "--now" in proc.stderr


def test_tls_credential_dropin_verifies(root: Path, tmp_path: Path) -> None:
    """systemd/examples/tls-credential.conf, as an operator installs it, loads without a warning."""
    unit_dir = tmp_path / "units"
    dropin = unit_dir / f"{UNITS['edge']}.d"
    dropin.mkdir(parents=True)
    shutil.copy(root / "etc/systemd/system" / UNITS["edge"], unit_dir)
    shutil.copy(SHIPPED / "examples/tls-credential.conf", dropin)
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", UNITS["edge"]], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    assert "LoadCredential=mqtt-client.key:" in (dropin / "tls-credential.conf").read_text()
    (dropin / "typo.conf").write_text("[Service]\nLoadCredentia=x:y\n")  # the check sees drop-ins at all
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", UNITS["edge"]], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert "LoadCredentia" in proc.stderr


def test_example_configs_validate() -> None:
    """The examples `plantwire install` puts in /etc/plantwire must pass the daemons' own validation."""
    from cloud.config import CloudConfig
    from edge.config import EdgeConfig
    from plantwire.configfile import read_yaml, validate

    examples = SHIPPED / "examples"
    edge = validate(EdgeConfig, read_yaml(examples / "edge.yaml"), "edge.yaml")
    assert edge.mqtt.password_env and edge.metrics.host == "127.0.0.1"
    cloud = validate(CloudConfig, read_yaml(examples / "cloud.yaml"), "cloud.yaml")
    assert cloud.mqtt.password_env and cloud.metrics.host == "127.0.0.1"
