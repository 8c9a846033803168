"""Vibration features of waveform blocks: RMS, kurtosis, crest factor and band energies.

Why these: RMS tracks overall vibration severity (ISO 10816 is stated in RMS velocity), kurtosis
and crest factor rise with the impulsive bursts of a spalled bearing long before RMS does, and the
energy in chosen bands (shaft order, bearing defect frequencies, gear mesh) says where the energy
went. Each block becomes a handful of scalars that then feed the per-signal stack as ordinary
signals (``<signal>.rms``, ``<signal>.kurtosis``, ...), so waveforms need no detector of their own.

Definitions, on the block minus its mean: ``rms = sqrt(mean(x^2))``; ``kurtosis = mean(x^4) / rms^4``
(3 for Gaussian noise, 1.5 for a sine); ``crest = max|x| / rms``; band ``b`` energy = sum over DFT
bins ``k`` with ``edges[b] <= k fs / L < edges[b+1]`` of the one-sided power ``c_k |X_k|^2 / L^2``
(``c_k`` = 2, or 1 for DC and Nyquist), so bands that tile [0, fs/2] sum to ``rms^2`` (Parseval).
Bins are computed with the Goertzel recurrence (numba has no FFT), O(L) per bin in a band.
A block with a non-finite value gives NaN features (a gap); a constant block gives all zeros.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit

F_RMS = 0
F_KURTOSIS = 1
F_CREST = 2
F_BANDS = 3


def n_features(n_bands: int) -> int:
    return F_BANDS + n_bands


@njit(cache=True, nogil=True)
def waveform_features(blocks: np.ndarray, fs_hz: float, band_edges_hz: np.ndarray, out: np.ndarray) -> None:
    """Features of each row of ``blocks`` (n, L) into ``out`` (n, 3 + len(band_edges_hz) - 1)."""
    n, length = blocks.shape
    nb = band_edges_hz.shape[0] - 1
    half = length // 2
    for r in range(n):
        ok = True
        mean = 0.0
        for i in range(length):
            v = blocks[r, i]
            if not np.isfinite(v):
                ok = False
                break
            mean += v
        if not ok or length == 0:
            for f in range(F_BANDS + nb):
                out[r, f] = math.nan
            continue
        mean /= length
        m2 = 0.0
        m4 = 0.0
        peak = 0.0
        for i in range(length):
            d = blocks[r, i] - mean
            d2 = d * d
            m2 += d2
            m4 += d2 * d2
            if abs(d) > peak:
                peak = abs(d)
        m2 /= length
        m4 /= length
        if m2 <= 0.0:
            for f in range(F_BANDS + nb):
                out[r, f] = 0.0
            continue
        rms = math.sqrt(m2)
        out[r, F_RMS] = rms
        out[r, F_KURTOSIS] = m4 / (m2 * m2)
        out[r, F_CREST] = peak / rms
        for b in range(nb):
            k_lo = math.ceil(band_edges_hz[b] * length / fs_hz)
            k_hi = math.ceil(band_edges_hz[b + 1] * length / fs_hz)  # exclusive
            if k_lo < 0:
                k_lo = 0
            if k_hi > half + 1:
                k_hi = half + 1
            e = 0.0
            for kb in range(k_lo, k_hi):
                cw = 2.0 * math.cos(2.0 * math.pi * kb / length)
                s1 = 0.0
                s2 = 0.0
                for i in range(length):
                    s0 = (blocks[r, i] - mean) + cw * s1 - s2
                    s2 = s1
                    s1 = s0
                pw = s1 * s1 + s2 * s2 - cw * s1 * s2
                c = 1.0 if (kb == 0 or (length % 2 == 0 and kb == half)) else 2.0
                e += c * pw / (length * length)
            out[r, F_BANDS + b] = e
