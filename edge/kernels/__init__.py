"""Pure numba kernels: arrays and state arrays in, arrays out; no I/O, no logging, cache=True.

Each kernel has a plain numpy reference in ``tests/naive.py`` (``tests/test_rul.py`` for ``health``) and
an equivalence test.

Two rules that keep the per-signal stack at tens of ns per sample (measured, not folklore):
- Per-sample helpers that take arrays are compiled with ``_nrt=False``. A jitted call that passes arrays
  otherwise increments and decrements each array's reference count atomically, which cost 20-40 ns
  per call -- ten times the arithmetic (robust_chunk: 45 ns -> 4 ns per sample). Such helpers must
  not allocate; the chunk-level kernels that do (``np.empty``) keep the runtime.
- Data-dependent choices (the sign of a z-score, whether a sample repeats, which component scores
  highest) use ``min``/``max`` and selects, not ``if`` blocks: with 15,000 interleaved signals those
  branches are coin flips and mispredictions cost more than the work (CUSUM: 29 ns -> 3.4 ns).
"""
