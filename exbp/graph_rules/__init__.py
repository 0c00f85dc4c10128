"""Excitation Backprop rules, one module per op family, all registered in :data:`RULES`."""

from . import data_movement, elementwise, linear, max_pooling, merging  # noqa: F401  (registration)
from .registry import RULES, Rule, rule_for, supported_ops

__all__ = ["RULES", "Rule", "rule_for", "supported_ops"]
