"""How one write group is cut into InfluxDB requests.

Two forces, both measured (bench/influx_cost.py, bench/RESULTS.md "InfluxDB's cost per stored
sample"): InfluxDB 1.x spends less CPU per point in larger requests (the demo plant at 10 Hz: 10.3 µs
at 10,000 lines, 8.2 at 31,000, 6.9 at 50,000, 6.5 at 100,000), while a group is acknowledged only
when its last request is answered, so with several connections the group's latency is that of the
busiest connection. Hence: as few requests of at most ``max_lines`` as the group needs, their number
rounded up to a multiple of the connections, cut evenly, so every connection carries the same share
(a 10 Hz group of 123,000 lines on two connections: two requests of 61,500, where 50,000-line
requests made 50 + 50 + 23 k with one connection doing two); but never cut below ``min_lines``,
where the per-request cost outweighs the parallelism.
"""

from __future__ import annotations

__all__ = ["MIN_PARALLEL_LINES", "lines_per_request"]

#: Below this many lines per request a group is not split for parallelism.
MIN_PARALLEL_LINES = 5_000


def lines_per_request(lines: int, max_lines: int, connections: int, min_lines: int = MIN_PARALLEL_LINES) -> int:
    """Lines per request for a group of ``lines`` lines (the last request may hold fewer)."""
    if max_lines < 1 or connections < 1:
        raise ValueError(f"max_lines and connections must be >= 1, got {max_lines} and {connections}")
    if lines <= max_lines and (connections == 1 or lines < 2 * min(min_lines, max_lines)):
        return max_lines  # one request
    requests = -(-lines // max_lines)
    requests = -(-requests // connections) * connections
    per = -(-lines // requests)
    if per < min(min_lines, max_lines):  # fewer, larger requests rather than tiny ones
        per = min(min_lines, max_lines)
    return per
