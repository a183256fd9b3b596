"""Re-export of :mod:`scaler.config.policy` for ``scheduler/managers.py``, which still imports it from here.

New code imports ``scaler.config.policy``; drop this module once managers.py does too.
"""

from ..config.policy import DEFAULT_POLICY, Policy, parse_policy

__all__ = ["DEFAULT_POLICY", "Policy", "parse_policy"]
