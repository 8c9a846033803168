"""Wire format cost: bytes per sample and encode/decode ns per sample, v1 vs v2, on realistic columns.

v3 adds the sparse status column: ``v3`` with every sample Good (what a healthy plant sends),
``v3-31bad`` with 31 signals failed (BadSensorFailure on every one of their samples, as in issue 14).

Columns are the demo plant's simulated values (simulators.signals, with its sensor resolution) as the
edge sees them after acquisition: Modbus integer registers ``rint((v - offset) / scale)`` read back
as ``raw * scale + offset`` (the edge codec's numpy operations), float32 registers rounded to float32
and scaled the same way, float64 registers as is, bool/bit as 0/1, OPC-UA values as float64. Batches
are one flush interval (1 s) of every signal at the given rate, in acquisition order (signal-major
within each tick). Prints one JSON line per (rate, variant). Not collected by pytest.

    .venv/bin/python bench/wire.py                          # demo plant, 1 Hz and 10 Hz
    .venv/bin/python bench/wire.py --plant configs/dev/plant.yaml --rates 1 2 10 --batches 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plantwire import wire  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.plant import TYPE_ORDER, Protocol, RegisterType, SignalTable, expand  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402

_INT_TYPES = [TYPE_ORDER.index(t) for t in (RegisterType.INT16, RegisterType.UINT16, RegisterType.INT32,
                                             RegisterType.UINT32, RegisterType.INT64)]
_F32 = TYPE_ORDER.index(RegisterType.FLOAT32)
_BITS = [TYPE_ORDER.index(t) for t in (RegisterType.BOOL, RegisterType.BIT)]


def acquired(table: SignalTable, v: np.ndarray) -> np.ndarray:
    """What the edge holds for true values ``v``: the register round trip of each signal's type."""
    modbus = np.array([table.devices[d].protocol is Protocol.MODBUS for d in table.device])
    sc, of = table.scale, table.value_offset
    out = v.copy()
    with np.errstate(all="ignore"):
        raw = (v - of) / sc
        is_int = modbus & np.isin(table.reg_type, _INT_TYPES)
        is_f32 = modbus & (table.reg_type == _F32)
        is_bit = modbus & np.isin(table.reg_type, _BITS)
        r = np.where(is_int, np.rint(raw), np.where(is_f32, raw.astype(np.float32).astype(np.float64), raw))
        back = np.where(sc != 1.0, r * sc, r)
        back = np.where(of != 0.0, back + of, back)
        sel = is_int | is_f32
        out[sel] = back[sel]
        out[is_bit] = (v[is_bit] != 0).astype(np.float64)
    return out


def run(plant: Path, rate_hz: int, batches: int, repeat: int) -> list[dict[str, object]]:
    table = expand(load_plant(plant))
    n_sig = len(table)
    model = SignalModel(table, np.arange(n_sig), seed=7)
    quant = wire.quantisation(table.scale, table.value_offset)
    t0 = 1_700_000_000_000_000_000
    step_ns = 1_000_000_000 // rate_hz
    cols = []
    tick = 0
    for _ in range(batches):
        ts = np.empty(rate_hz * n_sig, dtype=np.int64)
        val = np.empty(rate_hz * n_sig, dtype=np.float64)
        for j in range(rate_hz):
            ts[j * n_sig : (j + 1) * n_sig] = t0 + tick * step_ns
            val[j * n_sig : (j + 1) * n_sig] = acquired(table, model.step(tick, tick / rate_hz))
            tick += 1
        sig = np.tile(np.arange(n_sig, dtype=np.uint32), rate_hz)
        cols.append(dict(ts_ns=ts, signal=sig, value=val, quality=np.zeros(ts.shape[0], dtype=np.uint8)))
    failed = np.random.default_rng(3).choice(n_sig, size=min(31, n_sig), replace=False)
    good = [np.zeros(c["ts_ns"].shape[0], dtype=np.uint32) for c in cols]
    bad = [np.where(np.isin(c["signal"], failed), np.uint32(0x808C0000), np.uint32(0)) for c in cols]
    out = []
    for name, kw in (("v1", {}), ("v2-no-quant", {"version": wire.VERSION_V2}),
                     ("v2", {"version": wire.VERSION_V2, "quant": quant}),
                     ("v3", {"version": wire.VERSION_V3, "quant": quant, "status": good}),
                     ("v3-31bad", {"version": wire.VERSION_V3, "quant": quant, "status": bad})):
        nbytes = 0
        enc_s = dec_s = float("inf")
        n = sum(c["ts_ns"].shape[0] for c in cols)
        for _ in range(repeat):
            a = time.perf_counter()
            payloads = [wire.encode_batch(gateway="gw-bench", boot_epoch_ns=t0, seq=i, table_hash=b"\0" * 8,
                                          **c, **{k: (v[i] if k == "status" else v) for k, v in kw.items()})
                        for i, c in enumerate(cols)]
            b = time.perf_counter()
            decoded = [wire.decode_batch(p) for p in payloads]
            c_ = time.perf_counter()
            enc_s, dec_s = min(enc_s, b - a), min(dec_s, c_ - b)
        nbytes = sum(len(p) for p in payloads)
        for d, c in zip(decoded, cols, strict=True):
            assert np.array_equal(d.value.view(np.uint64), c["value"].view(np.uint64)), "not bit-exact"
        out.append({"rate_hz": rate_hz, "variant": name, "samples": n, "bytes_per_sample": round(nbytes / n, 3),
                    "encode_ns_per_sample": round(enc_s / n * 1e9, 1),
                    "decode_ns_per_sample": round(dec_s / n * 1e9, 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", type=Path, default=ROOT / "configs/demo/plant.yaml")
    ap.add_argument("--rates", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--batches", type=int, default=4, help="consecutive 1 s batches per rate")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (the best is printed)")
    args = ap.parse_args()
    for r in args.rates:
        for line in run(args.plant, r, args.batches, args.repeat):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
