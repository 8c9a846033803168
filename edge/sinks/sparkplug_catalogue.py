"""Which Sparkplug devices and metrics the plant becomes, and the report-by-exception test, as columns.

Built once from the signal table. Every metric has an index ``i``: signals first (``i`` = the signal's
index in the table, so a frame's ``signal`` column indexes metrics directly), then the analytics metrics of
each machine. The alias of metric ``i`` is ``i``: unique across the edge node, as the specification asks
(tck-id-payloads-alias-uniqueness), and stable for a given plant file.

Devices (``DeviceMapping``):

- ``machine`` (default): one Sparkplug device per machine, named by its machine id; a metric is named by
  the signal's name within the machine (``oil_temp``), analytics under ``Health/`` and ``Alarms/``.
- ``plc``: one device per PLC (plant device); metrics are folders per machine (``press07/oil_temp``).

Characters the specification reserves in ids (+ / #) become ``_`` in device ids.

Analytics metrics per machine: ``Alarms/Active`` (Int32, open alarm episodes of the machine and its signals)
and, when the edge runs a health model, ``Health/Index``, ``Health/RUL``, ``Health/RUL Low`` and
``Health/RUL High`` (Double, null for machines the model does not cover or before it has all inputs).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import numpy as np

from edge.sinks.sparkplug_payload import DataType, MetricColumns
from edge.sinks.sparkplug_settings import DeviceMapping, SparkplugSettings
from plantwire.plant import SignalTable

ALARMS_ACTIVE = "Alarms/Active"
HEALTH_METRICS = ("Health/Index", "Health/RUL", "Health/RUL Low", "Health/RUL High")
_RESERVED = re.compile(r"[+/#]")


@dataclass(frozen=True, slots=True)
class Catalogue:
    n_signals: int
    n_machines: int
    with_health: bool
    device_ids: list[str]
    plc_of_device: np.ndarray  # int32, plant device index serving each Sparkplug device
    device_of: np.ndarray  # int32 per metric
    metrics: MetricColumns  # all metrics, row i = metric i
    threshold: np.ndarray  # float64 per metric: report when |new - sent| > threshold
    device_metrics: list[np.ndarray]  # metric indices of each device (for its DBIRTH)

    @property
    def n_metrics(self) -> int:
        return len(self.metrics)

    def alarm_metric(self, machine: np.ndarray) -> np.ndarray:
        """Metric index of ``Alarms/Active`` of each machine."""
        return self.n_signals + machine * self._per_machine

    def health_metric(self, machine: np.ndarray, k: int) -> np.ndarray:
        """Metric index of HEALTH_METRICS[k] of each machine."""
        return self.n_signals + machine * self._per_machine + 1 + k

    @property
    def _per_machine(self) -> int:
        return 1 + (len(HEALTH_METRICS) if self.with_health else 0)

    def columns(self, idx: np.ndarray) -> MetricColumns:
        m = self.metrics
        il = idx.tolist()
        return MetricColumns([m.name[i] for i in il], m.alias[idx], m.datatype[idx], [m.unit[i] for i in il],
                             m.low[idx], m.high[idx])


def _device_id(name: str) -> str:
    return _RESERVED.sub("_", name)


def build(table: SignalTable, settings: SparkplugSettings, *, with_health: bool) -> Catalogue:
    n_sig, n_mach = len(table), len(table.machine_ids)
    per_machine = 1 + (len(HEALTH_METRICS) if with_health else 0)
    machine = table.machine.astype(np.int64)
    # Plant device of each machine (all of a machine's signals sit on one device; the first one decides).
    machine_plc = np.full(n_mach, -1, dtype=np.int64)
    first = np.unique(machine, return_index=True)
    machine_plc[first[0]] = table.device[first[1]]

    if settings.devices is DeviceMapping.MACHINE:
        used = np.flatnonzero(machine_plc >= 0)
        device_ids = [_device_id(table.machine_ids[m]) for m in used.tolist()]
        dev_of_machine = np.full(n_mach, -1, dtype=np.int64)
        dev_of_machine[used] = np.arange(used.size)
        plc_of_device = machine_plc[used].astype(np.int32)
        sig_dev = dev_of_machine[machine]
    else:
        used = np.unique(table.device)
        device_ids = [_device_id(table.devices[d].name) for d in used.tolist()]
        dev_of_plc = np.full(len(table.devices), -1, dtype=np.int64)
        dev_of_plc[used] = np.arange(used.size)
        plc_of_device = used.astype(np.int32)
        sig_dev = dev_of_plc[table.device]
        dev_of_machine = np.where(machine_plc >= 0, dev_of_plc[np.maximum(machine_plc, 0)], -1)

    names: list[str] = []
    for sid, m in zip(table.ids, machine.tolist(), strict=True):
        mid = table.machine_ids[m]
        local = sid[len(mid) + 1:] if sid.startswith(mid + ".") else sid
        names.append(local if settings.devices is DeviceMapping.MACHINE else f"{_device_id(mid)}/{local}")
    units = list(table.units)
    datatype = np.full(n_sig, DataType.DOUBLE, dtype=np.uint32)
    low, high = table.low.astype(np.float64), table.high.astype(np.float64)
    threshold = np.full(n_sig, settings.deadband_absolute, dtype=np.float64)
    if settings.deadbands:
        assigned = np.zeros(n_sig, dtype=bool)
        for rule in settings.deadbands:
            hit = np.array([any(fnmatch.fnmatchcase(s, p) for p in rule.match) for s in table.ids], dtype=bool)
            hit &= ~assigned
            span = np.where(np.isfinite(high - low), np.abs(high - low), 0.0)
            threshold[hit] = np.maximum(rule.absolute, rule.percent / 100.0 * span[hit])
            assigned |= hit

    an_names, an_units, an_types, an_dev = [], [], [], []
    for m in range(n_mach):
        prefix = "" if settings.devices is DeviceMapping.MACHINE else f"{_device_id(table.machine_ids[m])}/"
        an_names.append(prefix + ALARMS_ACTIVE)
        an_units.append("")
        an_types.append(DataType.INT32)
        if with_health:
            an_names += [prefix + h for h in HEALTH_METRICS]
            an_units += ["", "cycles", "cycles", "cycles"]
            an_types += [DataType.DOUBLE] * len(HEALTH_METRICS)
        an_dev += [int(dev_of_machine[m])] * per_machine
    n_an = n_mach * per_machine
    metrics = MetricColumns(
        names + an_names,
        np.arange(n_sig + n_an, dtype=np.uint64),
        np.concatenate([datatype, np.asarray(an_types, dtype=np.uint32)]),
        units + an_units,
        np.concatenate([low, np.full(n_an, np.nan)]),
        np.concatenate([high, np.full(n_an, np.nan)]),
    )
    device_of = np.concatenate([sig_dev, np.asarray(an_dev, dtype=np.int64)]).astype(np.int32)
    order = np.argsort(device_of, kind="stable")
    starts = np.searchsorted(device_of[order], np.arange(len(device_ids) + 1))
    device_metrics = [order[starts[d]:starts[d + 1]] for d in range(len(device_ids))]
    return Catalogue(n_sig, n_mach, with_health, device_ids, plc_of_device, device_of, metrics,
                     np.concatenate([threshold, np.zeros(n_an)]), device_metrics)


def exceptions(new_v: np.ndarray, new_q: np.ndarray, sent_v: np.ndarray, sent_q: np.ndarray,
               threshold: np.ndarray) -> np.ndarray:
    """Report-by-exception, vectorised: True where a metric must be reported.

    A metric is reported when its quality changed, when it went from a value to no value (NaN) or back,
    or when it moved by more than its deadband (any change with a deadband of 0).
    """
    diff = np.abs(new_v - sent_v)
    both_nan = np.isnan(new_v) & np.isnan(sent_v)
    return (new_q != sent_q) | (~(diff <= threshold) & ~both_nan)
