"""Predictive maintenance on the edge: health index and remaining useful life per machine (see ``rul``)."""

from edge.pdm.rul import RulEstimator, RulModel, RulModelError

__all__ = ["RulEstimator", "RulModel", "RulModelError"]
