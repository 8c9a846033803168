"""One property test, two runs: a short one in the default run and the full count under ``slow``.

Why: the default run (``make test``) must stay well inside its 10 minutes on a loaded 2-core box, while a
property test earns its keep by the number of examples. The default run keeps a few dozen examples, enough
to fail at once when the behaviour breaks (Hypothesis tries its edge cases, empty and extreme values, first);
``make test-slow`` runs the same body and strategies with the full count, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings


def quick_and_full(body: Callable[..., None], *strategies: Any, quick: int, full: int,
                   **named_strategies: Any) -> tuple[Any, Any]:
    """(default-run test with ``quick`` examples, ``slow`` test with ``full``) of ``body`` over the strategies
    (as ``hypothesis.given`` takes them); assign them to two ``test_*`` names."""
    run = given(*strategies, **named_strategies)
    short = settings(max_examples=quick, deadline=None)(run(body))
    long = pytest.mark.slow(settings(max_examples=full, deadline=None)(run(body)))
    return short, long
