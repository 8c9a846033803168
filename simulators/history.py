"""OPC-UA history for the simulator's servers, kept in numpy ring buffers and fed once per tick.

Why not asyncua's own history: it subscribes to every historized node inside the server, so each
value change runs the monitored-item path (deepcopy included) a second time and a historizing
server costs about three times as much CPU as one without (measured with bench/simulator.py), and
it keeps a Python list of DataValue objects per node. Here the server's tick hands the changed
values to :meth:`RingHistory.record` as arrays (one vectorised store per tick) and DataValue
objects are only built when a client reads history (back-fill after an outage: rare and small).

Semantics follow asyncua's HistoryDict so clients see the same behaviour: raw reads only,
``start``/``end`` either given or the "unspecified" epoch, newest-first when start > end or only
an end is given, ``nb_values`` and a response-size cap with a continuation point (the next
timestamp). Each node keeps its last ``capacity`` values; older ones are overwritten.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

__all__ = ["RingHistory"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _to_ns(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return (t - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _from_ns(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


class RingHistory(HistoryStorageInterface):
    """The last ``capacity`` values of each of ``node_ids`` (a node's row is its position in the list)."""

    def __init__(self, node_ids: list[ua.NodeId], capacity: int, max_history_data_response_size: int = 10000) -> None:
        super().__init__(max_history_data_response_size)
        self.row = {nid: i for i, nid in enumerate(node_ids)}
        n = len(node_ids)
        self.capacity = int(capacity)
        self.ts_ns = np.zeros((n, self.capacity), dtype=np.int64)
        self.value = np.zeros((n, self.capacity), dtype=np.float64)
        self.status = np.zeros((n, self.capacity), dtype=np.uint32)
        self.count = np.zeros(n, dtype=np.int64)

    def record(self, ts_ns: int, rows: np.ndarray, values: np.ndarray, status: np.ndarray | int = 0) -> None:
        """Store one tick: ``values`` (and status codes) of node rows ``rows`` at ``ts_ns``."""
        pos = self.count[rows] % self.capacity
        self.ts_ns[rows, pos] = ts_ns
        self.value[rows, pos] = values
        self.status[rows, pos] = status
        self.count[rows] += 1

    def _chronological(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = int(self.count[row])
        k = min(n, self.capacity)
        order = (np.arange(n - k, n) % self.capacity) if k else np.zeros(0, dtype=np.int64)
        return self.ts_ns[row, order], self.value[row, order], self.status[row, order]

    async def read_node_history(self, node_id: ua.NodeId, start: dt.datetime | None, end: dt.datetime | None,
                                nb_values: int) -> tuple[list[ua.DataValue], dt.datetime | None]:
        row = self.row.get(node_id)
        if row is None:
            return [], None
        unspecified = ua.get_win_epoch()
        ts, val, st = self._chronological(row)
        lo = -(2**62) if start is None or start == unspecified else _to_ns(start)
        hi = 2**62 if end is None or end == unspecified else _to_ns(end)
        newest_first = (start is None or start == unspecified) and not (end is None or end == unspecified)
        if lo > hi:  # start after end: the spec's way of asking newest first
            lo, hi, newest_first = hi, lo, True
        sel = np.flatnonzero((ts >= lo) & (ts <= hi))
        if newest_first:
            sel = sel[::-1]
        if nb_values and sel.size > nb_values:
            sel = sel[:nb_values]
        cont: dt.datetime | None = None
        if sel.size > self.max_history_data_response_size:
            cont = _from_ns(int(ts[sel[self.max_history_data_response_size]]))
            sel = sel[: self.max_history_data_response_size]
        out = []
        for i in sel.tolist():
            t = _from_ns(int(ts[i]))
            code = int(st[i])
            if code:
                out.append(ua.DataValue(StatusCode=ua.StatusCode(code), SourceTimestamp=t, ServerTimestamp=t))
            else:
                out.append(ua.DataValue(ua.Variant(float(val[i]), ua.VariantType.Double), SourceTimestamp=t,
                                        ServerTimestamp=t))
        return out, cont

    # The rest of the storage interface: nodes are registered up front, events are not historized.
    async def init(self) -> None:
        pass

    async def new_historized_node(self, node_id: ua.NodeId, period: Any, count: int = 0) -> None:
        pass

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        pass

    async def new_historized_event(self, source_id: Any, evtypes: Any, period: Any, count: int = 0) -> None:
        pass

    async def save_event(self, event: Any) -> None:
        pass

    async def read_event_history(self, source_id: Any, start: Any, end: Any, nb_values: Any,
                                 evfilter: Any) -> tuple[list[Any], None]:
        return [], None

    async def stop(self) -> None:
        pass
