"""The ops exbp knows, one module per op family, all registered in :data:`RULES`."""

from . import (data_movement, elementwise, linear, max_pooling, merging, normalisation,  # noqa: F401
               quantization, without_rules)  # (registration)
from .layouts import Layout
from .registry import (RULES, Need, Propagation, Recorded, Role, Rule, Variant, entry_for, rule_for,
                       supported_ops)

__all__ = ["Layout", "RULES", "Need", "Propagation", "Recorded", "Role", "Rule", "Variant", "entry_for",
           "rule_for", "supported_ops"]
