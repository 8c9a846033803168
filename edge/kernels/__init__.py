"""Pure numba kernels: arrays and state arrays in, arrays out; no I/O, no logging, cache=True.

Each kernel has a plain numpy reference in ``tests/naive.py`` and an equivalence test.
"""
