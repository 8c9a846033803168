"""An uncreatable state directory is one clean line and exit 2 in every daemon, never a traceback.

Exit 2 is the daemons' "fix the configuration" status (systemd does not restart-loop on it). The
directory is made uncreatable by putting a regular file where a parent folder should be, which
fails for root too (ENOTDIR), unlike permission bits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run(daemon: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plantwire.cli", daemon, str(cfg)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    (tmp_path / "not-a-folder").write_text("a file where the state directory's parent should be\n")
    return tmp_path / "not-a-folder" / "state"


def _assert_one_clean_line(proc: subprocess.CompletedProcess[str], blocked: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if str(blocked) in line]
    assert len(lines) == 1 and "state_dir" in lines[0] and "cannot be created" in lines[0], proc.stderr


def test_edge_state_dir_that_cannot_be_created(tmp_path: Path, blocked: Path) -> None:
    edge = yaml.safe_load((ROOT / "configs" / "dev" / "edge.yaml").read_text())
    edge["plant"] = str(ROOT / "configs" / "dev" / "plant.yaml")
    edge["state_dir"] = str(blocked)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(edge))
    _assert_one_clean_line(_run("edge", cfg), blocked)


def test_ingest_state_dir_that_cannot_be_created(tmp_path: Path, blocked: Path) -> None:
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(blocked), "metrics": {"port": 0}}))
    _assert_one_clean_line(_run("ingest", cfg), blocked)
