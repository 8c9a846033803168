"""``plantwire models keygen`` and ``bundle-rul`` (no servers): key files and a RUL model shipped as a bundle."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from cloud.models.cli import main
from plantwire import bundle


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_replaces_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys" / "signing.key"
    assert main(["keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = key.with_suffix(".pub")
    kid = bundle.key_id(bundle.load_public_key(pub))
    assert kid in capsys.readouterr().out
    assert bundle.key_id(bundle.load_private_key(key).public_key()) == kid
    before = key.read_bytes()
    assert main(["keygen", str(key)]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert key.read_bytes() == before


def test_bundle_rul_ships_the_model_arrays_unchanged(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    assert main(["keygen", str(key)]) == 0
    arrays = {"__version__": np.int64(1), "op_names": np.array(["tonnage"]),
              "sensor_names": np.array(["motor_temp", "oil_temp"]), "w1": np.arange(12.0).reshape(4, 3),
              "p": np.ones(5)}
    model = tmp_path / "rul.npz"
    np.savez(model, **arrays)
    store = tmp_path / "store"
    assert main(["bundle-rul", str(model), "--template", "press", "--signing-key", str(key), "--store", str(store),
                 "--validation", '{"rmse_h": 12.5}']) == 0
    (path,) = store.glob("rul__press__*.pwbundle")
    b = bundle.read_file(path, bundle.load_public_key(key.with_suffix(".pub")))
    assert b.kind == "rul" and b.template == "press" and b.signals == ["tonnage", "motor_temp", "oil_temp"]
    assert b.manifest["validation"] == {"rmse_h": 12.5}
    assert set(b.arrays) == set(arrays)
    for k, a in arrays.items():
        np.testing.assert_array_equal(b.arrays[k], a)
