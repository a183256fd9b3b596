"""The scheduler's ``--policy-content`` grammar: parsed and validated here, before anything starts.

It lives in ``config/`` because the command-line and TOML validation (``loader.py``) and
``SchedulerClusterCombo`` check a policy before any process exists; the scheduler parses
the checked string again when it starts.
"""

import dataclasses
from typing import Dict

ALLOCATE_VALUES = ("even_load", "capability")
SCALING_VALUES = ("no", "vanilla")
_NUMBER_KEYS = ("upper_task_ratio", "lower_task_ratio")
VALID_KEYS = ("allocate", "scaling") + _NUMBER_KEYS
DEFAULT_POLICY = "allocate=even_load; scaling=no"


@dataclasses.dataclass(frozen=True)
class Policy:
    """The scheduler's policy: how it allocates tasks and scales worker groups."""

    allocate: str = "even_load"
    scaling: str = "no"
    upper_task_ratio: float = 10.0  # scale up while queued tasks per worker exceed this
    lower_task_ratio: float = 1.0  # scale down while queued tasks per worker are under this

    def __str__(self) -> str:
        text = "allocate=%s; scaling=%s" % (self.allocate, self.scaling)
        if self.scaling == "vanilla":
            text += "; upper_task_ratio=%g; lower_task_ratio=%g" % (self.upper_task_ratio, self.lower_task_ratio)
        return text


def _usage() -> str:
    return ("valid keys: allocate=%s; scaling=%s; upper_task_ratio=<number > 0>; "
            "lower_task_ratio=<number >= 0, below upper_task_ratio>"
            % ("|".join(ALLOCATE_VALUES), "|".join(SCALING_VALUES)))


def parse_policy(text: str) -> Policy:
    """Parse ``key=value; key=value``; raise ValueError naming the problem and the valid keys."""
    values: Dict[str, str] = {}
    for item in str(text).split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError("policy %r: %r is not key=value (%s)" % (text, item, _usage()))
        if key not in VALID_KEYS:
            raise ValueError("policy %r: unknown key %r (%s)" % (text, key, _usage()))
        if key in values:
            raise ValueError("policy %r: %r given twice" % (text, key))
        values[key] = value
    if values.get("allocate", "even_load") not in ALLOCATE_VALUES:
        raise ValueError("policy %r: allocate=%s is not one of %s" % (text, values["allocate"], ", ".join(ALLOCATE_VALUES)))
    if values.get("scaling", "no") not in SCALING_VALUES:
        raise ValueError("policy %r: scaling=%s is not one of %s" % (text, values["scaling"], ", ".join(SCALING_VALUES)))
    numbers = {}
    for key in _NUMBER_KEYS:
        if key in values:
            try:
                numbers[key] = float(values[key])
            except ValueError:
                raise ValueError("policy %r: %s=%s is not a number" % (text, key, values[key])) from None
    policy = Policy(allocate=values.get("allocate", "even_load"), scaling=values.get("scaling", "no"), **numbers)
    if policy.upper_task_ratio <= 0 or policy.lower_task_ratio < 0 or policy.lower_task_ratio >= policy.upper_task_ratio:
        raise ValueError("policy %r: need 0 <= lower_task_ratio < upper_task_ratio, got %g and %g"
                         % (text, policy.lower_task_ratio, policy.upper_task_ratio))
    return policy
