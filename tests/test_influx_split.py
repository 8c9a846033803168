"""How a write group is cut into InfluxDB requests (cloud.sinks.split): large, even, one share per connection."""

from __future__ import annotations

import pytest

from cloud.sinks.split import lines_per_request


def _sizes(lines: int, max_lines: int, connections: int) -> list[int]:
    per = lines_per_request(lines, max_lines, connections)
    return [min(per, lines - a) for a in range(0, lines, per)]


@pytest.mark.parametrize(
    ("lines", "max_lines", "connections", "expected"),
    [
        (123_000, 100_000, 2, [61_500] * 2),  # 10 Hz demo group: one even share per connection
        (123_000, 50_000, 2, [30_750] * 4),  # a lower limit: two even shares per connection
        (41_000, 50_000, 2, [20_500] * 2),  # under the limit, still one request per connection
        (123_000, 50_000, 1, [41_000] * 3),  # one connection: as few requests as the limit allows, even
        (40_000, 50_000, 1, [40_000]),
        (6_000, 50_000, 2, [6_000]),  # too small to be worth splitting
        (12_000, 50_000, 2, [6_000, 6_000]),
        (200_000, 100_000, 2, [100_000] * 2),  # a back-log group (max_batch_samples)
        (250, 100, 2, [100, 100, 50]),  # a limit under MIN_PARALLEL_LINES (tests) is taken as it is
        (0, 50_000, 2, []),
    ],
)
def test_group_split(lines: int, max_lines: int, connections: int, expected: list[int]) -> None:
    sizes = _sizes(lines, max_lines, connections)
    assert sizes == expected
    assert sum(sizes) == lines
    assert all(s <= max_lines for s in sizes)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_lines"):
        lines_per_request(10, 0, 1)
