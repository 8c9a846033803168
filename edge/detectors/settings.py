"""Detector stack settings: one validated, frozen model per stage, defaults a plant can start with.

Why a model of its own instead of ``edge.config.DetectorSettings``: that one holds the four knobs of
the first EWMA kernel; the stack has seven stages. ``AnalyticsSettings`` is meant to replace it as
``EdgeConfig.detector`` (the lead wires it). Thresholds are in the unit the engineer thinks in --
standard deviations for z-scores, decades of improbability for stuck, samples for debounce -- and
each maps to a score of 0.5, the alarm threshold, so one alarm setting serves every kind.

None of these values is part of the checkpoint fingerprint: retuning a threshold keeps the learned
state warm (see ``checkpoint.py``).
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelSettings(_Strict):
    alpha: float = Field(default=0.01, gt=0, lt=1, description="learning rate of the robust location/scale")
    huber_k: float = Field(default=3.0, gt=0, description="residuals are clipped at this many scales before learning")
    min_scale: float = Field(default=1e-6, gt=0, description="floor of the scale, in engineering units")
    threshold: float = Field(default=6.0, gt=0, description="|z| that scores 0.5")
    rel_resolution: float = Field(default=1e-6, ge=0,
                                  description="the level and slope scales are floored at this fraction of the value "
                                              "(a float32 register's last bits are no signal; 0: off)")
    guard: float = Field(default=1.0, ge=0, le=1,
                         description="learning-rate factor while a sample's level or change score keeps an alarm "
                                     "open (>= signal_alarm.off_threshold): below 1 a persistent fault is not "
                                     "absorbed into the baseline (0: frozen until `plantwire rebaseline`). Off (1) "
                                     "by default: measured on the simulated dev plant (seed 1), 0.01 turned every "
                                     "leak-test station that starts cycling after a night switched off into a "
                                     "chattering standing alarm (242 instead of 5 false alarms per 1,000 "
                                     "signal-hours); it needs an operating-mode baseline first")


class ChangeSettings(_Strict):
    """CUSUM. ``k`` 1 and ``h`` 10 (was 0.5 / 8) were chosen on the simulated dev plant (seed 1, history protocol):
    the old values gave 1,456 of 1,981 false alarms, mostly thermal signals following load with a lag; at k 1 / h 10
    (and at k 2 / h 8) none was left, with the same recall on every fault kind."""

    k: float = Field(default=1.0, ge=0, description="CUSUM allowance, standard deviations")
    h: float = Field(default=10.0, gt=0, description="CUSUM decision interval: scores 0.5")
    z_clip: float = Field(default=4.0, gt=0)
    cap: float = Field(default=2.0, ge=1, description="sums are capped at cap * h so alarms drain")
    rho_alpha: float = Field(default=0.001, ge=0, lt=1,
                             description="learning rate of the residuals' long-run variance, which scales the "
                                         "CUSUM input down to its long-run deviation (0: plain CUSUM)")


class TrendSettings(_Strict):
    """Slow trend (``edge.kernels.trend``): the slope of ``bin_s`` bin means against the slopes the signal shows in
    normal operation; reported as kind CHANGE. How the values were chosen: docs/detectors.md ("Drifts")."""

    enabled: bool = Field(default=False,
                          description="judge each change-enabled signal's slow trend. Off by default: with the class "
                                      "rule (class_fraction) and rel_per_h its load-ramp false alarms are gone on the "
                                      "simulated dev plant (+0.05 per 1,000 signal-hours held out), but on a tenth of "
                                      "the demo plant it adds 0.31 (welding cells' temperatures) and finds no drift "
                                      "earlier (bench/RESULTS.md, branch drift, late-night round)")
    bin_s: float = Field(default=10.0, gt=0, description="seconds averaged into one bin mean")
    beta: float = Field(default=0.2, gt=0, le=1, description="smoothing of the slope between bin means, per bin")
    alpha: float = Field(default=0.003, gt=0, lt=1, description="learning rate of the slope's location and scale, "
                                                                "per bin (0.003: ~55 minutes of 10-s bins)")
    huber_k: float = Field(default=3.0, gt=0, description="slopes are clipped at this many scales before learning")
    warmup: int = Field(default=360, ge=1, description="bins the slope statistics learn before they judge "
                                                        "(360: an hour of 10-s bins, a duty cycle)")
    threshold: float = Field(default=4.0, gt=0, description="|z| of the smoothed slope that scores 0.5")
    guard: float = Field(default=0.1, ge=0, le=1,
                         description="learning-rate factor of the slope statistics while the trend score is at "
                                     "signal_alarm.off_threshold or above (0: a drift never becomes the normal slope)")
    max_gap: float = Field(default=3.0, ge=1, description="bins between two bin means beyond which the slope restarts")
    peak_mult: float = Field(default=1.5, ge=0,
                             description="a slope scores 0.5 only beyond peak_mult x the largest deviation of the "
                                         "normal slope (decaying): duty-cycled signals have heavy-tailed slopes")
    peak_decay: float = Field(default=0.0005, ge=0, lt=1, description="decay of that largest deviation per bin "
                                                                     "(0.0005: ~5.5 hours of 10-s bins)")
    machine_fraction: float = Field(default=0.1, ge=0, description="a machine with at least max(machine_min, "
                                    "machine_fraction x its judged signals) trending at once changes its load: held")
    machine_min: int = Field(default=2, ge=1)
    run: int = Field(default=3, ge=1, description="bin slopes in a row with the trend's sign before it is reported "
                                                  "(a drift is steady; a duty cycle's slopes flip)")
    tail_max: float = Field(default=6.0, gt=0, description="a signal whose largest normal slope deviation exceeds this "
                                                          "many scales (heavy-tailed: a duty cycle's pulses) is not "
                                                          "judged")
    machine_hold_s: float = Field(default=600.0, ge=0, description="seconds a machine's trends stay held after that")
    quiet_s: float = Field(default=0.0, ge=0,
                           description="seconds after a machine's operating state changed (a start, a stop, an idle "
                                       "spell) or its operating-change hold ended in which its trend scores are not "
                                       "reported (0: off; 900 removed 2 of 21 false alarms on dev seed 1: not shipped)")
    common_z: float = Field(default=0.0, ge=0,
                            description="a machine whose other judged members' slope z average at least this much "
                                        "(either sign) moves as one: held like a machine-wide trend (0: off; 1.5 "
                                        "changed nothing on dev seeds 1-3 beside the class rule, 1.0 holds a machine "
                                        "whose signals share a duty cycle too often: not shipped)")
    common_clip: float = Field(default=4.0, gt=0, description="each member's slope z is clipped at this before it "
                                                              "enters that average")
    class_fraction: float = Field(default=0.25, ge=0,
                                  description="the same signal (name and unit) of several machines trending at once, "
                                              "at least max(machine_min, class_fraction x the class's judged "
                                              "signals): the plant's load changes (a shift), held (0: off; "
                                              "0.25: chosen on dev seed 1)")
    rel_per_h: float = Field(default=0.05, ge=0,
                             description="a slope under this fraction of the signal's value per hour scores under 0.5 "
                                         "(a noise-free signal's normal slope is 0: the first creep of a load ramp; "
                                         "0.05: 7x below the smallest simulated drift's slope relative to its base)")


class StuckSettings(_Strict):
    beta: float = Field(default=0.01, gt=0, lt=1, description="learning rate of the repeat probability")
    tol: float = Field(default=0.0, ge=0, description="a change this small counts as a repeat")
    threshold_decades: float = Field(default=8.0, gt=0, description="-log10 probability of the run that scores 0.5")
    p_floor: float = Field(default=0.05, gt=0, lt=1)


class RateSettings(_Strict):
    alpha: float = Field(default=0.01, gt=0, lt=1)
    huber_k: float = Field(default=3.0, gt=0)
    min_scale: float = Field(default=1e-9, gt=0, description="floor of the slope scale, units per second")
    threshold: float = Field(default=6.0, gt=0, description="|z| of the slope that scores 0.5")
    gap_factor: float = Field(default=5.0, gt=1, description="dt above this many typical periods is a gap")
    span_floor: float = Field(default=0.005, ge=0, description="the slope scale is at least this fraction of the "
                                                               "signal's [low, high] span per typical period (a "
                                                               "smaller move per sample is no fault; 0: off)")


class PerPartSettings(_Strict):
    """Signals of kind ``per_part`` (a value measured once per part or batch: a part's temperature entering a test).

    Such a value is flat while a part is in the station and steps to the next part's value at every part change.
    The rate stage is off for it (``kinds.EN_PER_PART``); the level stage judges it against a baseline learned at
    ``level_alpha`` instead of ``level.alpha``, so that its scale is the spread *between parts*. At the stack's
    ``level.alpha`` (0.01: ~100 samples, two 45-s parts at 1 Hz) the scale is the spread of the last two or three
    parts; a run of similar parts shrinks it to a third of the spread of parts and the next ordinary part reads
    as a 6-sigma level alarm (the simulated leak testers' ``part_temp``: ~0.19 level alarms per signal-hour on
    the demo plant, seed 1; bench/RESULTS.md, branch quiet).

    Why 0.003 (chosen on the simulated demo plant's 60 leak testers, seed 1: 20 h of their ``part_temp`` with the
    simulator's faults injected offline; reported on seeds 2 and 3 in bench/RESULTS.md): a memory of ~330 samples
    (~7 parts at 1 Hz and 45-s cycles; the scale's effective sample ~15 parts) gave no false alarm (largest clean
    |z| 4.6 against the threshold 6) and kept the most spike recall (0.92; 0.001: 0.78, its largest clean |z| 3.2;
    the stack's 0.01: 0.97 with 70 false alarms). It is per sample, like ``level.alpha``: a signal read at 10 Hz,
    or parts that take minutes, want it smaller (about ``1 / (7 x samples per part)``). What it costs: steps and
    calibration offsets of 2-4 K on a part temperature whose parts differ by 3.5 K are not level alarms any more
    (the stack's 0.01 found 17 % / 28 % of them, partly by chance at its false-alarm rate).
    """

    level_alpha: float = Field(default=0.003, gt=0, lt=1,
                               description="learning rate of the level's location and scale for kind per_part "
                                           "(per sample; 1 / alpha should cover several parts)")


class RangeSettings(_Strict):
    margin: float = Field(default=0.05, gt=0, description="excursion (fraction of span) that scores 0.75")


class MachineSelfFit(enum.StrEnum):
    """What the machine stage does for a machine no model file covers."""

    OFF = "off"  # nothing: only machines with a fitted model are scored (default, see MachineSettings)
    ON = "on"  # record fit_after_s of its own operation, fit a first baseline, then score against it


class MachineSettings(_Strict):
    """Multivariate monitoring per machine: a fitted PCA baseline per operating mode (``edge.detectors.machine``).

    A machine is scored against ``models`` (files from ``plantwire fit-machine``) where one matches it;
    with ``self_fit`` on, a machine without one records ``fit_after_s`` of its own operation and fits a
    first model from that (no machine score before). Fit defaults: see ``edge.models.machine.FitSettings``
    (textbook values, checked on the Tennessee Eastman process in ``bench/tep_eval.py``).

    Why self-fit is off by default (bench/RESULTS.md, "Machine stage"): on the simulated dev plant a
    baseline fitted on the first day raised ~20 false machine alarms per 1,000 signal-hours on the second
    (HVAC units meeting another day's weather, one plant-wide transient) -- ten times the plant's
    whole-stack budget. A baseline an engineer fits on chosen normal history does not have that problem.
    """

    enabled: bool = True
    self_fit: MachineSelfFit = MachineSelfFit.OFF
    models: dict[str, Path] = Field(default_factory=dict,
                                    description="machine id pattern (fnmatch) -> fitted model (.npz with its .json)")
    period_s: float = Field(default=10.0, gt=0, description="a machine is ticked at most this often (one model row)")
    fit_after_s: float = Field(default=86_400.0, gt=0,
                               description="self-fit: seconds of the machine's own operation recorded before a "
                                           "first model is fitted (a day: every shift and duty cycle)")
    fit_rows: int = Field(default=720, ge=20,
                          description="self-fit: rows recorded (memory: 4 bytes x rows x member signals)")
    lags: int = Field(default=0, ge=0, le=8,
                      description="self-fit: dynamic PCA lags; > 0 needs consecutive ticks, so the recording "
                                  "then covers only fit_rows x period_s")
    variance: float = Field(default=0.95, gt=0, le=1, description="self-fit: variance the components keep")
    ewma: float = Field(default=0.1, gt=0, le=1, description="self-fit: EWMA weight of the combined statistic")
    quantile: float = Field(default=0.99, gt=0.5, lt=1, description="self-fit: held-out quantile of the statistic")
    margin: float = Field(default=2.0, gt=0,
                          description="self-fit: limit = normal level + margin x (quantile - normal level); a plant "
                                      "ticks a machine 360 times an hour, so a 1 %-per-tick limit would alarm hourly")
    modes: int = Field(default=0, ge=0, le=8, description="self-fit: operating modes (0: found from the data)")
    z_clip: float = Field(default=4.0, gt=0, description="member z-scores are clipped to +- this")


class LikelihoodMode(enum.StrEnum):
    """How the likelihood stage's score meets the stack's per-sample score."""

    OFF = "off"  # the stage does not run (default: the plant figures in bench/RESULTS.md are without it)
    MAX = "max"  # the larger of the two
    REPLACE = "replace"  # the stage's score alone (how it scores best on NAB)


class LikelihoodTails(enum.StrEnum):
    """Which improbable short-term averages of the one-step error the likelihood stage reports."""

    UPPER = "upper"  # changes improbably large only (HTM's anomaly likelihood)
    BOTH = "both"  # also improbably small: a signal that froze or lost its usual swing (kind STUCK)


class LikelihoodSettings(_Strict):
    """Anomaly likelihood of each signal's one-step change and time-of-day deviation, plus novelty.

    See ``edge.kernels.likelihood``. Defaults are the values chosen on NAB (``bench/nab_eval.py``: 5-minute
    series, rare anomalies); the stage is off unless ``mode`` says otherwise. Measured on the simulated plant
    (1 Hz, bench/RESULTS.md) these defaults alarm ~25x more often than the stack alone: a 1 Hz signal is
    judged every second. With ``threshold_decades`` 8 and no novelty it is quiet there (3 false alarms per
    1,000 signal-hours in ``replace`` mode) but finds only a third of the injected faults, and in ``max``
    mode adds nothing to the stack -- it is not yet a plant detector. Cost: ~12 ns per sample, ~30 with
    the seasonal chain (``season_bins`` 0 turns it off), at 15,000 signals.
    """

    mode: LikelihoodMode = LikelihoodMode.OFF
    err_alpha: float = Field(default=0.0003, gt=0, lt=1,
                             description="learning rate of the one-step change's location and scale")
    err_huber_k: float = Field(default=3.0, gt=0, description="changes are clipped at this many scales before learning")
    err_threshold: float = Field(default=2.0, gt=0, description="|z| of a one-step change whose raw score is 0.5")
    short_alpha: float = Field(default=0.05, gt=0, le=1,
                               description="weight of the short-term average of the raw score")
    long_alpha: float = Field(default=0.0003, gt=0, lt=1,
                              description="learning rate of the long-term mean and variance of that average")
    learn: int = Field(default=100, ge=2, description="samples a signal learns before the stage scores it")
    mean_floor: float = Field(default=0.03, ge=0, description="floor of the long-term mean (HTM's)")
    var_floor: float = Field(default=0.0003, gt=0, description="floor of the long-term variance (HTM's)")
    threshold_decades: float = Field(default=3.0, gt=0, description="-log10 tail probability that scores 0.5")
    tails: LikelihoodTails = LikelihoodTails.BOTH
    season_bins: int = Field(default=24, ge=0, le=1440,
                             description="time-of-day bins of the seasonal baseline (0: no seasonal chain)")
    season_period_s: float = Field(default=86_400.0, gt=0, description="the season the bins divide (UTC days)")
    season_memory_s: float = Field(default=3_000.0, gt=0,
                                   description="time constant of one bin, in seconds of that bin's own time")
    season_decades: float = Field(default=6.5, gt=0, description="-log10 tail of the seasonal chain that scores 0.5")
    novelty_margin: float | None = Field(
        default=0.02, ge=0,
        description="a value beyond the range seen so far by this fraction of it scores 1 (None: no novelty score)")


class QualitySettings(_Strict):
    """Data-quality alarms (kinds BAD and SILENT): the measurement is lost, whatever the process does.

    Why these defaults: the simulated plant's sensor dropouts last 5-60 s (``simulators/faults.py``), and a
    reliability engineer wants to know within seconds that a sensor is blind; a single timed-out poll (bad
    for one period) stays below ``bad_s``. ``silent_s`` is for a signal that stops arriving at all (a lost
    subscription, a dead device): a source that reports only on change (an OPC-UA subscription with a
    deadband on a constant value) needs it raised above its longest quiet spell, or 0.
    """

    bad_s: float = Field(default=3.0, ge=0, description="seconds without a usable sample while samples arrive bad "
                                                        "that score 0.5 (kind BAD); 0: off")
    silent_s: float = Field(default=120.0, ge=0, description="seconds without any sample after which a signal "
                                                             "seen before raises SILENT; 0: off")
    device_s: float = Field(default=3.0, ge=0,
                            description="seconds without a good poll from any signal of a device (seen good before) "
                                        "that score 0.5 (kind DEVICE, one alarm per device); while a device is down "
                                        "its signals' BAD and SILENT alarms are folded under it. Keep it <= bad_s, "
                                        "or a dead device's signals raise their own BAD alarms first; 0: off")


class OperatingChangeSettings(_Strict):
    """A machine whose signals leave their baselines together is changing its operating point (see ``opchange``).

    Its members' level, change and rate alarms are held for ``hold_s`` after the last frame in which at least
    ``max(min_signals, min_fraction * members)`` of them had ``|z| >= z_hot``. Chosen on the simulated dev plant
    (seed 1): machines starting at the 06:00 shift gave most of the false alarms left; ``min_fraction`` 0.25 keeps
    a micro-leak (3 of a leak-test station's 20 signals) an alarm, ``hold_s`` covers the 10-minute ramps.
    """

    enabled: bool = True
    z_hot: float = Field(default=4.0, gt=0, description="|level z| at which a member counts as moving")
    min_fraction: float = Field(default=0.25, gt=0, le=1, description="fraction of a machine's members moving")
    min_signals: int = Field(default=3, ge=2, description="and at least this many")
    hold_s: float = Field(default=900.0, ge=0, description="process alarms held this long after the last such frame")


class OffJudgement(enum.StrEnum):
    """How a machine's process signals are judged while it is off (``edge.kernels.opstate``)."""

    FREEZE = "freeze"  # neither learned nor judged while off, data quality only (default)
    OWN_BASELINE = "own_baseline"  # off has a baseline of its own; the running one rests


class AtRestSettings(_Strict):
    """At-rest judgement of a switched-off machine (``edge.kernels.atrest``; runs with ``off: freeze``).

    While a machine is OFF and its stop grace (``grace_s``) has passed, each of its process signals is judged
    against the band a resting machine stays in: around a slowly followed rest value, half-width ``mult`` mean
    absolute deviations of the rest noise plus a floor of ``floor_resolutions`` register steps or ``floor_span``
    of the plausible span (whichever is larger) -- clipped or quantised rest values have a tiny or zero scale,
    and a band built from it alone flags every flicker. An alarm (kind AT_REST) needs evidence: band-widths
    outside times seconds reaching ``persist`` (a spike of several band-widths alarms within a second, a value
    just outside only after it has lasted). Nothing is learned outside the band or while evidence is pending.
    How the values were chosen: bench/RESULTS.md (issue 15, at rest) and docs/detectors.md.
    """

    # On by default since the start test (below): without it, on the simulated plant (bench/RESULTS.md, issue 15 at
    # rest) it raised off-machine recall but also 5 false alarms per 1,000 signal-hours at night on dev seed 1 (the
    # seed settings are chosen on), all in the hour before the 06:00 start: loads ramping up before the machine's
    # state says RUNNING. With it: 0-3 per night on seed 1 (dev: 1.41 false alarms per 1,000 signal-hours in all on
    # the full protocol); held out, the whole demo plant reads 2.02 with it, 1.66 without, for off-machine recall
    # 0.68 instead of 0.34 (bench/RESULTS.md, "Recall over all faults").
    enabled: bool = True
    mult: float = Field(default=6.0, gt=0, description="band half-width in mean absolute deviations of the rest noise")
    floor_resolutions: float = Field(default=2.0, ge=0, description="band floor in register steps (quantised signals)")
    floor_span: float = Field(default=0.005, ge=0, description="band floor as a fraction of the plausible span "
                                                               "[low, high] (where both are set; else of the "
                                                               "signal's running level)")
    rel_resolution: float = Field(default=1e-6, ge=0, description="band floor relative to the rest value (float32)")
    warm_s: float = Field(default=600.0, ge=0, description="seconds of rest a signal learns before it is judged")
    persist: float = Field(default=3.0, gt=0, description="evidence (band-widths x s outside) that scores 0.5")
    cap: float = Field(default=10.0, gt=0, description="most evidence one second adds (band-widths)")
    drain_per_s: float = Field(default=0.5, ge=0, description="evidence lost per second back inside the band")
    tau_loc_s: float = Field(default=600.0, gt=0, description="time constant of the followed rest value")
    tau_mad_s: float = Field(default=3600.0, gt=0, description="time constant of the rest noise's deviation")
    max_dt_s: float = Field(default=60.0, gt=0, description="a longer gap between samples counts as this long")
    # A signal that keeps moving at rest (a bounded wave: a pressure following the hall's cycle) is held to its
    # learned largest deviation: 6 MADs of a sine are 3.8 amplitudes, 1.5 peaks 1.5 (``atrest`` module docstring).
    peak_mult: float = Field(default=1.5, ge=0, description="band (MAD part) capped at this many of the largest "
                                                            "deviation learned at rest (0: no cap)")
    peak_warm_s: float = Field(default=1800.0, ge=0, description="seconds of rest learned, and of the off period "
                                                                 "after its stop grace, before the cap applies")
    # Machine-wide start test (``atrest`` module docstring): a start moves many of one machine's signals out of
    # their rest bands together, a fault one (a micro-leak three), so a machine with at least
    # ``max(start_min, start_fraction * judged signals)`` of them beyond ``start_band`` band-widths in one frame is
    # starting: its at-rest alarms are held (nothing learned) until ``start_hold_s`` after the last such frame.
    start_min: int = Field(default=4, ge=2, description="signals leaving their rest bands together that make a start "
                                                         "(above the three a micro-leak moves)")
    start_fraction: float = Field(default=0.1, ge=0, le=1, description="and at least this fraction of the "
                                                                         "machine's judged signals")
    start_band: float = Field(default=0.5, gt=0, description="band-widths from the rest value at which a signal "
                                                             "counts as leaving for the start test (half a band: "
                                                             "a fast load leaves its band and alarms ~30 s before "
                                                             "the slower ones leave theirs)")
    start_persist_s: float = Field(default=2.0, ge=0, description="seconds a signal stays beyond the start band "
                                                                   "before it counts (noise outliers do not line up)")
    start_hold_s: float = Field(default=600.0, ge=0, description="at-rest alarms held this long after the last frame "
                                                                 "that looked like a start")
    # A load also counts as leaving once it is on its way to its running level (why: a start moves every load by
    # the same fraction of its running level, but their rest bands differ tenfold -- a clean `speed` left its band
    # at 0.8 % load and alarmed before the noisy currents passed half of theirs at ~1.7 %: the 104 false alarms per
    # night before 06:00 on the whole demo plant). Its deviation, smoothed over ``start_tau_s`` so rest noise
    # averages out, must point towards the running level (at least ``start_load_bands`` bands away: a load, not a
    # signal that reads the same running or not), cover ``start_run_fraction`` of the way there and
    # ``start_noise_band`` of its band. bench/RESULTS.md ("At-rest stage, night round").
    start_run_fraction: float = Field(default=0.0025, ge=0, le=1, description="fraction of the way from the rest "
                                                                               "value to the running level at which "
                                                                               "a load counts as leaving (0: off)")
    start_tau_s: float = Field(default=10.0, gt=0, description="time constant of the smoothed deviation the "
                                                               "running-level test reads")
    start_noise_band: float = Field(default=0.15, ge=0, description="and at least this many band-widths (the "
                                                                    "smoothed rest noise stays inside)")
    # ``R`` is the running baseline as it froze at the stop: its level lags the ramp down, so it reads ~10 % of the
    # running value (a compressor's current: R ~3 A of 32, ~3 bands from rest), hence a load from 1 band on.
    start_load_bands: float = Field(default=1.0, ge=0, description="a signal whose running level is at least this "
                                                                   "many band-widths from its rest value is a load")
    # The running level kept while the machine RUNS: the slow maximum and minimum of its baseline's level (the
    # baseline as it froze at the stop lags the shift's ramp down and reads 10-16 % of it). Read by the band's floor
    # and the plant start test, not by the running-level test above (bench/RESULTS.md "Start test, late-night round").
    start_level_tau_s: float = Field(default=21600.0, gt=0, description="time constant (s of running) of the "
                                                                        "running level's slow maximum's decay")
    # Plant start (why: a machine with a single load, a leak tester's pump, cannot show the machine-wide test four
    # signals leaving; its pump ramps with the shift before the first part and alarmed at every start). A shift
    # start moves many machines at once, a fault one: while at least ``max(start_peers_min, start_peers_fraction *
    # machines judged at rest)`` machines have a load heading to its running level (within
    # ``start_peers_window_s``), one such load makes its machine starting. 0: off. Shipped **off**: with 3 / 5 % on a
    # tenth of the demo plant it removed every false alarm at the start on seeds 1-3 (false alarms 0.38-0.48 ->
    # 0.00-0.14 per 1,000 signal-hours) but lost 3 off-machine events on seeds 2-3 (recall 0.80 -> 0.76, 0.86 -> 0.84:
    # drifts towards the running level are peers too); bench/RESULTS.md "Start test, late-night round".
    start_peers_min: int = Field(default=0, ge=0, description="machines starting together that make a plant start "
                                                              "(0: no plant start test)")
    start_peers_fraction: float = Field(default=0.05, ge=0, le=1, description="and at least this fraction of the "
                                                                               "machines judged at rest")
    start_peers_window_s: float = Field(default=60.0, ge=0, description="a machine's load heading to its running "
                                                                        "level counts as a peer this long")
    # Frozen value at rest (why: on the whole demo plant, 45 of the 96 visible faults missed on switched-off machines
    # were stuck values -- a frozen sensor reads a value a resting signal reads, so the band cannot see it, but it
    # stops the rest noise's flicker). The texture counterpart of the peak cap: each signal learns the longest run
    # of identical values it makes at rest (decaying with ``frozen_tau_s``; only runs that ended within the limit, so
    # a frozen run is never learned), and a run of L samples scores ``L / (L + limit)`` with ``limit = frozen_mult *
    # max(longest run, frozen_min_run)`` (kind AT_REST) once ``frozen_runs`` runs (a change is a run of 0) are
    # learned. A signal that never repeats (a float) is frozen after 15 repeats; a current clipped at 0 (zeros about
    # half the time: the longest run of a night ~15) after ~45; a signal constant at rest never ends a run and is not
    # judged. Why 3 and 6 h: the longest of ~1,500 geometric runs an hour is only ~1.5x the typical hourly longest,
    # so twice an hour's longest run (the first setting tried, bench/RESULTS.md "At-rest stage, night round") was
    # exceeded by clipped loads at rest every few hours: ~140 false alarms a night on 2,100 signals.
    frozen_mult: float = Field(default=3.0, ge=0, description="a run of identical values this many times the longest "
                                                              "learned at rest scores 0.5 (0: off)")
    frozen_min_run: float = Field(default=5.0, ge=1, description="the longest run assumed at least this (samples)")
    frozen_runs: float = Field(default=20.0, ge=1, description="runs learned before the test judges")
    frozen_tau_s: float = Field(default=21600.0, gt=0, description="time constant of the longest run's decay")
    # Signals that read the same at rest as running keep their running judgement while the machine is off (why: on
    # the simulated demo plant most visible faults missed on switched-off machines were on signals that follow the
    # hall, not the machine -- a compressor's suction temperature, oil pressure, COP -- whose at-rest band must hold
    # their whole wave; ``atrest.thaw_independent``). Decided at each stop from the rest learned before (its noise
    # against the running scale, its value against the running level). Chosen on the demo plant, seed 1: rest /
    # running scale is 0.02-0.3 for loads, 0.3-0.5 for vibrations, <= 0.9 for temperatures (whose rest value is
    # 17-115 scales off), 0.95-6 for signals that do not follow the machine (bench/RESULTS.md, "Recall on machines
    # switched off").
    same_ratio_min: float = Field(default=0.7, ge=0, description="a signal whose rest noise is at least this "
                                                                 "fraction of its running scale ... (0: off)")
    # 8 (the first setting, from the trace) let the running stack judge signals whose rest wanders 3-6x their
    # running scale: seed 1's one added false alarm (a leak tester's ``chamber_temp``); 2.5 removed it for one
    # off-machine fault of 103 (bench/RESULTS.md, "Recall on machines switched off").
    same_ratio_max: float = Field(default=2.5, gt=0, description="... and at most this many times it ...")
    same_dist: float = Field(default=2.0, ge=0, description="... with its rest value within this many scales of its "
                                                            "running level reads the same at rest: judged by the "
                                                            "running stack while its machine is off")
    same_learned_s: float = Field(default=3600.0, ge=0, description="seconds of rest learned before a signal's rest "
                                                                    "is compared with its running baseline")


class IdleSource(enum.StrEnum):
    """Where a machine's IDLE state comes from (``edge.kernels.opstate.update_activity``)."""

    OFF = "off"  # no IDLE state: a powered machine is RUNNING
    DECLARED = "declared"  # only from a declared activity signal (``idle.signals``)
    DATA = "data"  # only from the data: a cycle signal's wave collapsing to rest (every machine, declared or not)
    BOTH = "both"  # declared where the machine has such a signal, from the data elsewhere (default)


class IdleSettings(_Strict):
    """IDLE: a machine powered but not producing (its running indicator on, its cycle at rest), judged like OFF.

    Why: at night a leak tester stands powered (``running`` 1) with its part vented; judged as running, the rate
    stage of its test pressure learned "flat" all night and the first cycles at 06:00 read as 20-sigma slopes: 882
    of 964 false alarms on the whole demo plant (bench/RESULTS.md, "Merged main after the evening round").
    A station controller says whether it is cycling (a cycle-active bit, a valve word at rest): ``signals`` names
    such a signal (within the machine) and the value that means idle. Where the plant declares none, the data rule
    finds it: a signal of the machine with a plausible range that moves by more than ``move_fraction`` of its span
    ``min_moves`` times in a row (each within ``idle_after_s`` of the last) while the machine runs is one of its
    cycle signals; when all of them have stood still for ``idle_after_s`` with one at the bottom of its range
    (within ``move_fraction`` of the span of its low limit: vented, stopped -- a value frozen mid-range is a stuck
    sensor, which the stuck stage must see), the machine is IDLE until a cycle signal moves again. IDLE machines
    are frozen as OFF ones (``off: freeze``; with ``own_baseline`` there is no IDLE), and the way back is a start:
    process alarms held for ``grace_s``. How the values were chosen: bench/RESULTS.md ("IDLE operating state").
    """

    source: IdleSource = IdleSource.BOTH
    signals: dict[str, float] = Field(
        default={"valve_state": 0.0},
        description="declared activity signals: name within the machine -> the value meaning idle (default: a "
                    "leak tester's valve word, 0 when no valve is energised: no part under test)")
    idle_after_s: float = Field(default=300.0, gt=0,
                                description="seconds without a cycle before a running machine counts as idle "
                                            "(a station with parts cycles every ~45 s; a gap of 5 minutes is a pause)")
    move_fraction: float = Field(default=0.2, gt=0, le=1,
                                 description="data rule: a move of more than this fraction of the plausible span is "
                                             "a cycle's move, and the bottom of the range is within it of low")
    min_moves: int = Field(default=20, ge=2,
                           description="data rule: moves in a row (each within idle_after_s) that make a cycle signal")
    resume_ratio: float = Field(
        default=1.0, ge=0,
        description="the way back from IDLE holds process alarms for min(operating_state.grace_s, resume_ratio x the "
                    "idle spell's length): a pause is not a cold start (a station that waited 10 minutes for parts "
                    "resumes warm, judged at once after 10 minutes), a night standing at idle load needs the whole "
                    "start grace (its thermal signals return with the lag they left with); 0: no grace on resuming")


class OperatingStateSettings(_Strict):
    """A machine's operating state from its own running indicator, and what it does to its signals (``opstate``).

    A signal of the machine named in ``running_signals`` (a ``kind: state`` bit, e.g. ``running``; matched on the
    name within the machine) gives the machine's state: RUNNING at >= 0.5, OFF below; a machine without one may
    take it from a load signal (``load_signals``, with a hysteresis band). The running baseline neither learns
    the machine at rest nor judges it, and is back unchanged when the machine starts. ``off``: ``freeze`` (the
    default) judges an off machine's signals for data quality only (BAD, SILENT, DEVICE); ``own_baseline`` gives
    the off state a baseline of its own, which also finds a sensor failing on a machine that is switched off, at
    a price: at rest many signals read noise clipped at 0 (a current, a power), a heavy-tailed distribution the
    robust scale under-states. Measured on the simulated dev plant, seed 1 (12 h learned, 1 day fault-free and
    12 h with faults scored): ``freeze`` 1.72 false alarms per 1,000 signal-hours at recall 0.94, all 62 of them
    two energy meters switched off at night (no running bit then: fixed by ``load_signals``); ``own_baseline``
    (with ``load_signals``) 4.94 at recall 0.98, the extra ones level alarms of switched-off machines' load
    signals at rest. The false alarms are what makes operators switch monitoring off, so ``freeze`` ships.
    After each start or stop the machine's
    process alarms (level, change, rate) are held for ``grace_s``. A machine without such a signal is
    judged as before (state unknown). Why ``grace_s`` 1,800 s by default (set from the physics, checked on the
    simulated dev plant, seed 1: no false alarm left in the hour after 06:00): a start is a duration -- the simulated
    plant's machines ramp for ~15 minutes, and their thermal signals lag load by a time constant of 10-20 minutes,
    so a restarted machine reaches its operating point ~30 minutes after its running bit rises (bench/RESULTS.md,
    issue 15).
    """

    enabled: bool = True
    running_signals: list[str] = Field(default=["running"],
                                       description="signal names (within a machine, kind state) whose value >= 0.5 "
                                                   "means the machine runs")
    load_signals: dict[str, float] = Field(
        default={"power_active": 0.05},
        description="for a machine without a running signal: load signal name -> fraction of its [low, high] span "
                    "at which the machine runs (off below half of it; both limits needed). Default: a feeder's "
                    "active power, which every power analyser has -- a meter whose feeder is switched off reads noise "
                    "around 0 (on the simulated dev plant the only false alarms left were two such meters at night)")
    off: OffJudgement = OffJudgement.FREEZE
    grace_s: float = Field(default=1800.0, ge=0,
                           description="process alarms of a machine held this long after it starts or stops")
    at_rest: AtRestSettings = AtRestSettings()
    idle: IdleSettings = IdleSettings()


class AlarmSettings(_Strict):
    on_threshold: float = Field(default=0.5, ge=0, le=1)
    off_threshold: float = Field(default=0.3, ge=0, le=1)
    on_count: int = Field(default=1, ge=1, description="consecutive samples >= on_threshold to open")
    off_count: int = Field(default=10, ge=1, description="consecutive samples < off_threshold to close")
    rearm_count: int = Field(
        default=600, ge=0,
        description="signal alarms only (``edge.kernels.rearm``): samples after an alarm closed during which the "
                    "signal's new opening is announced only if its score exceeds the closed episode's peak (one "
                    "onset per excursion; data-quality kinds are never held; 0: off). 600 is 10 minutes at 1 Hz, "
                    "1 minute at 10 Hz, 2 days of a 5-minute series: chosen on NAB v1.1 by cross-validation over "
                    "its fixed file split and checked on the simulated dev plant, seed 1 (bench/RESULTS.md, "
                    "issue 15, 'one onset per excursion')")


class HealthSettings(_Strict):
    """Predictive maintenance: a RUL model (``tools/fit_rul.py`` output) ticked once per machine duty cycle."""

    model: Path = Field(description="RUL model .npz; relative paths are resolved by the owner (config folder)")
    machines: list[str] = Field(default=["*"], description="machine id patterns (fnmatch) the model applies to")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="model input -> signal name within the machine, where they differ")
    period_s: float = Field(default=60.0, gt=0, description="one tick = one duty cycle of the training data")
    alarm: AlarmSettings = Field(default=AlarmSettings(on_threshold=0.8, off_threshold=0.7, on_count=3, off_count=3),
                                 description="on 1 - health: 0.8 opens a HEALTH event when health falls below 0.2")


class AnalyticsSettings(_Strict):
    warmup: int = Field(default=30, ge=1, description="samples a signal learns before it is scored")
    level: LevelSettings = LevelSettings()
    change: ChangeSettings = ChangeSettings()
    trend: TrendSettings = TrendSettings()
    stuck: StuckSettings = StuckSettings()
    rate: RateSettings = RateSettings()
    range: RangeSettings = RangeSettings()
    per_part: PerPartSettings = PerPartSettings()
    machine: MachineSettings = MachineSettings()
    likelihood: LikelihoodSettings = LikelihoodSettings()
    signal_alarm: AlarmSettings = AlarmSettings()
    alarm_settle: int = Field(
        default=300, ge=0,
        description="samples a signal learns before its alarms may open (scores are emitted from `warmup` on); "
        "without it every signal's young scale estimate raises an alarm storm when a gateway starts cold",
    )
    settle_s: float = Field(
        default=600.0, ge=0,
        description="and seconds since a signal's first usable sample before its alarms may open: a baseline must "
        "have covered the plant's duty cycle, which is a duration (300 samples are 30 s at 10 Hz); kept per signal "
        "in the checkpoint, so a restart does not settle again",
    )
    restart_settle_s: float = Field(
        default=120.0, ge=0,
        description="after a restart from a checkpoint, level, change and rate alarms wait this long: the baselines "
        "are as old as the outage (measured on the dev plant after a 5-minute outage: 13 alarms in the first "
        "minute without it)",
    )
    quality: QualitySettings = QualitySettings()
    operating_change: OperatingChangeSettings = OperatingChangeSettings()
    operating_state: OperatingStateSettings = OperatingStateSettings()
    machine_alarm: AlarmSettings = AlarmSettings(on_count=2, off_count=5)
    max_events: int = Field(default=10_000, ge=1, description="events kept per frame; more are counted as dropped")
    checkpoint_interval_s: float = Field(default=300.0, gt=0, description="detector state saved this often")
    health: HealthSettings | None = None
