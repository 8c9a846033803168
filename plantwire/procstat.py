"""CPU time and peak memory of processes and their descendants, read from /proc (Linux only).

Benchmarks attribute CPU per component (simulator, edge, broker, ingestor, InfluxDB); a component
may be a tree (the simulator runs one process per OPC-UA server), so its figures sum the tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_s: float  # user + system seconds of the live tree
    rss_peak_bytes: int  # sum of VmHWM over the live tree
    rss_bytes: int  # sum of VmRSS
    pss_bytes: int = 0  # sum of Pss: shared library pages (LLVM, numpy) split among the processes mapping them


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def _one(pid: int) -> tuple[float, int, int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
        hwm = rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return cpu, hwm, rss
    except (OSError, IndexError, ValueError):
        return 0.0, 0, 0


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def sample(pid: int) -> ProcSample:
    cpu = 0.0
    hwm = rss = pss = 0
    for p in tree(pid):
        c, h, r = _one(p)
        cpu += c
        hwm += h
        rss += r
        pss += _pss(p)
    return ProcSample(cpu, hwm, rss, pss)
