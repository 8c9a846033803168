"""Is a verified bundle usable on this plant? Template, signal names and order, kind -- before any use.

``PlantView`` is built once from the plant config and the detector stack: per template its machines
and, for the machine stage, the member signals in the order the kernel packs them (template order,
state and counter signals left out: ``edge.kernels.kinds.mask_for``). A ``machine_pca`` bundle must
name exactly those signals in exactly that order (its arrays are laid out by that order); a ``rul``
bundle's inputs and a ``signal_baseline`` bundle's signals must all be signals of the template (RUL
inputs through ``analytics.health.inputs`` where the names differ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.modelstore.reader import KINDS, Bundle
from edge.modelstore.reasons import BundleRefused, Refusal
from plantwire.plant import PlantConfig, SignalTable

APPLIED_KINDS = ("machine_pca", "rul", "signal_baseline")


@dataclass(frozen=True)
class PlantView:
    templates: dict[str, list[str]]  # template -> all its signal names (expanded, template order)
    members: dict[str, list[str]]  # template -> machine-stage member names in kernel order
    machines: dict[str, np.ndarray]  # template -> int64 machine indices
    machine_template: list[str]  # per machine index

    @classmethod
    def build(cls, plant: PlantConfig, table: SignalTable, m_ptr: np.ndarray, m_sig: np.ndarray) -> PlantView:
        machine_template = [mg.template for mg in plant.machines for _ in range(mg.count)]
        templates = {name: [n for n, _ in t.expanded()] for name, t in plant.templates.items()}
        machines: dict[str, np.ndarray] = {}
        members: dict[str, list[str]] = {}
        for name in templates:
            idx = np.array([m for m, t in enumerate(machine_template) if t == name], dtype=np.int64)
            machines[name] = idx
            if idx.size and int(idx[0]) + 1 < m_ptr.shape[0]:
                m = int(idx[0])
                prefix = table.machine_ids[m] + "."
                members[name] = [table.ids[s][len(prefix):] for s in m_sig[m_ptr[m]:m_ptr[m + 1]].tolist()]
            else:
                members[name] = []
        return cls(templates, members, machines, machine_template)


def check(bundle: Bundle, view: PlantView, rul_inputs: dict[str, str] | None = None) -> np.ndarray:
    """The machines the bundle applies to; raises ``BundleRefused`` with the reason it does not fit."""
    kind, template = bundle.kind, bundle.template
    if kind not in KINDS or kind not in APPLIED_KINDS:
        why = "not a bundle kind" if kind not in KINDS else "not applied by this edge (docs/models.md, Edge)"
        raise BundleRefused(Refusal.UNSUPPORTED_KIND, f"kind {kind!r}: {why}")
    if template not in view.templates:
        raise BundleRefused(Refusal.UNKNOWN_TEMPLATE, f"template {template!r} is not in the plant config "
                                                      f"(templates: {sorted(view.templates)})")
    machines = view.machines[template]
    if machines.size == 0:
        raise BundleRefused(Refusal.UNKNOWN_TEMPLATE, f"template {template!r} has no machine on this gateway")
    got = bundle.signals
    if kind == "machine_pca":
        want = view.members[template]
        if got != want:
            raise BundleRefused(Refusal.SIGNAL_MISMATCH, _diff(got, want, template))
    else:
        names = set(view.templates[template])
        mapped = [(rul_inputs or {}).get(s, s) for s in got] if kind == "rul" else got
        missing = [s for s in mapped if s not in names]
        if missing:
            raise BundleRefused(Refusal.SIGNAL_MISMATCH, f"{'inputs' if kind == 'rul' else 'signals'} "
                                                         f"{missing[:5]} are not signals of template {template!r}")
    return machines


def _diff(got: list[str], want: list[str], template: str) -> str:
    extra = [s for s in got if s not in want]
    missing = [s for s in want if s not in got]
    if extra or missing:
        return (f"template {template!r}: bundle has {len(got)} signals, the machine stage {len(want)}; "
                f"not in the template's members: {extra[:5]}; missing: {missing[:5]}")
    first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    return f"template {template!r}: signal order differs from position {first} ({got[first]!r} vs {want[first]!r})"
