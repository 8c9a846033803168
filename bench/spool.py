"""Write-ahead log cost: append and fsync throughput, bytes per sample, ack and recovery-scan cost.

Batches are real wire.encode_batch payloads of the demo plant's simulated values (simulators.signals,
values rounded to float32 as the Modbus PLCs deliver them), so bytes per sample match what the edge
logs. Runs on the disk the state directory lives on (not /tmp, which may be RAM), in a temporary
folder it removes. Not collected by pytest.

    .venv/bin/python bench/spool.py                          # demo plant, batches of 1 tick (15,000 samples)
    .venv/bin/python bench/spool.py --batch-samples 1000 15000 50000 --records 300

Modes per batch size:
  page-cache    append only (what the event loop pays per batch; durable at the next group commit)
  fsync-each    append + fsync per record (fsync_interval_ms -> 0: the ceiling for no-loss-on-power-cut)
  group-200ms   append as fast as possible while a thread fsyncs every 200 ms (the default)
  full-disk     (``--full-disk``, needs root) a 64 MiB tmpfs filled by another writer, the log bounded to
                32 MiB (2 MiB preallocated segments): appends go on in the log's own space, spending its
                reserve and then dropping its oldest segments; prints the append cost and the drops
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.spool import RECORD_HEADER, Spool, SpoolSettings  # noqa: E402
from plantwire import wire  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.plant import expand  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402


def make_batches(plant: Path, batch_samples: int, count: int) -> tuple[list[bytes], int]:
    """``count`` encoded batches of ``batch_samples`` samples: consecutive 1 Hz ticks of all signals."""
    table = expand(load_plant(plant))
    n_sig = len(table)
    model = SignalModel(table, np.arange(n_sig), seed=7)
    thash = table.table_hash()
    t0 = 1_700_000_000_000_000_000
    need = batch_samples * count
    ticks = -(-need // n_sig)
    ts = np.empty(ticks * n_sig, dtype=np.int64)
    sig = np.tile(np.arange(n_sig, dtype=np.uint32), ticks)
    val = np.empty(ticks * n_sig, dtype=np.float64)
    for k in range(ticks):
        ts[k * n_sig : (k + 1) * n_sig] = t0 + k * 1_000_000_000
        val[k * n_sig : (k + 1) * n_sig] = model.step(k, float(k)).astype(np.float32)
    q = np.zeros(ticks * n_sig, dtype=np.uint8)
    out = []
    for i in range(count):
        a, b = i * batch_samples, (i + 1) * batch_samples
        out.append(
            wire.encode_batch(
                gateway="gw-bench", boot_epoch_ns=t0, seq=i, table_hash=thash,
                ts_ns=ts[a:b], signal=sig[a:b], value=val[a:b], quality=q[a:b],
            )
        )
    return out, n_sig


def run_mode(mode: str, batches: list[bytes], n: int, workdir: Path) -> dict[str, float]:
    d = Path(tempfile.mkdtemp(dir=workdir))
    settings = SpoolSettings(max_bytes=64 * 1024**3, segment_bytes=16 * 1024**2, fsync_interval_ms=200)
    sp = Spool(settings, d)
    stop = threading.Event()
    syncer = None
    if mode == "group-200ms":
        def loop() -> None:
            while not stop.wait(0.2):
                sp.sync()
        syncer = threading.Thread(target=loop, name="spool-fsync")
        syncer.start()
    t0 = time.perf_counter()
    for i, p in enumerate(batches):
        sp.append(p, epoch=1, seq=i, n_samples=n)
        if mode == "fsync-each":
            sp.sync()
    t_append = time.perf_counter() - t0
    stop.set()
    if syncer is not None:
        syncer.join()
    sp.sync()
    elapsed = time.perf_counter() - t0
    nbytes = sp.stats.appended_bytes
    syncs, sync_s = sp.stats.syncs, sp.stats.sync_s
    # replay cost: re-read and CRC-check every record, as the forwarder does for the back-log
    t3 = time.perf_counter()
    for rec in sp.live():
        sp.read(rec)
    read_us = (time.perf_counter() - t3) / len(batches) * 1e6
    # ack cost: one ack message per record (watermark advancing), as the ingestor sends them
    t1 = time.perf_counter()
    for i in range(len(batches) // 2):
        sp.ack_covered(1, i)
    ack_us = (time.perf_counter() - t1) / max(1, len(batches) // 2) * 1e6
    sp.close()
    # recovery scan of what is left (CRC of every record)
    left = sum(f.stat().st_size for f in (d / "wal").glob("*.wal"))
    t2 = time.perf_counter()
    sp2 = Spool(settings, d)
    scan_s = time.perf_counter() - t2
    sp2.close()
    shutil.rmtree(d)
    recs = len(batches)
    return {
        "mode": mode,
        "batch_samples": n,
        "records": recs,
        "us_per_batch": round(t_append / recs * 1e6, 1),
        "records_per_s": round(recs / elapsed, 1),
        "MB_per_s": round(nbytes / elapsed / 1e6, 1),
        "samples_per_s_M": round(recs * n / elapsed / 1e6, 2),
        "fsyncs": syncs,
        "ms_per_fsync": round(sync_s / max(syncs, 1) * 1e3, 2),
        "us_per_replay_read": round(read_us, 1),
        "us_per_ack": round(ack_us, 1),
        "scan_MB_per_s": round(left / scan_s / 1e6, 1) if scan_s > 0 else 0.0,
    }


def run_full_disk(batches: list[bytes], n: int, workdir: Path, rounds: int) -> dict[str, float]:
    """Append ``rounds`` x the batches to a log on a small, full tmpfs (nothing acked, as with the broker down)."""
    d = Path(tempfile.mkdtemp(dir=workdir))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d)], check=False).returncode:
        shutil.rmtree(d)
        return {"mode": "full-disk", "skipped": 1.0}
    try:
        sp = Spool(SpoolSettings(max_bytes=32 * 1024**2, segment_bytes=2 * 1024**2), d)
        with open(d / "filler", "wb", buffering=0) as f:  # another writer takes every free byte
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
        free = os.statvfs(d).f_bavail
        t0 = time.perf_counter()
        seq = 0
        for _ in range(rounds):
            for p in batches:
                sp.append(p, epoch=1, seq=seq, n_samples=n)
                seq += 1
        elapsed = time.perf_counter() - t0
        st = sp.stats
        out = {
            "mode": "full-disk", "batch_samples": n, "records": seq, "free_blocks_at_start": float(free),
            "us_per_batch": round(elapsed / seq * 1e6, 1), "MB_per_s": round(st.appended_bytes / elapsed / 1e6, 1),
            "reserve_releases": st.reserve_releases, "dropped_disk_full_records": st.dropped_disk_full_records,
            "live_records": st.records, "append_errors": 0,
        }
        sp.close()
        return out
    finally:
        subprocess.run(["umount", str(d)], check=False)
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", type=Path, default=ROOT / "configs/demo/plant.yaml")
    ap.add_argument("--batch-samples", type=int, nargs="+", default=[1000, 15000, 50000])
    ap.add_argument("--records", type=int, default=200, help="batches per mode and size")
    ap.add_argument("--workdir", type=Path, default=ROOT / "state", help="a folder on the real disk")
    ap.add_argument("--full-disk", action="store_true", help="only the full-disk mode (root: mounts a tmpfs)")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for n in args.batch_samples:
        batches, n_sig = make_batches(args.plant, n, args.records)
        payload = sum(len(b) for b in batches)
        logged = payload + RECORD_HEADER.size * len(batches)
        print(json.dumps({
            "batch_samples": n, "signals": n_sig,
            "wire_bytes_per_sample": round(payload / (n * len(batches)), 3),
            "log_bytes_per_sample": round(logged / (n * len(batches)), 3),
            "log_bytes_per_batch": round(logged / len(batches)),
        }), flush=True)
        if args.full_disk:
            print(json.dumps(run_full_disk(batches, n, args.workdir, rounds=max(1, 200_000_000 // max(payload, 1)))),
                  flush=True)
            continue
        for mode in ("page-cache", "fsync-each", "group-200ms"):
            print(json.dumps(run_mode(mode, batches, n, args.workdir)), flush=True)


if __name__ == "__main__":
    main()
