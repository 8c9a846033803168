"""Fit a machine's multivariate baseline from a history CSV: the same as ``plantwire fit-machine``.

    python tools/fit_machine.py HISTORY.csv -o model.npz [--rows 0:5000] [--columns ...] [--lags 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.models.fit_command import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
