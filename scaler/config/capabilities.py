"""Capabilities: the ``"linux,gpu=2"`` text and its ``{"linux": -1, "gpu": 2}`` dict.

A name alone says the capability is there, without a quantity (``PRESENT``, -1); ``name=N``
gives a quantity N >= 0. Workers advertise capabilities (``--per-worker-capabilities``),
tasks ask for them, and the text is what travels on the wire. Every place that reads or
writes one (flags, TOML tables, the combo, the webhook) goes through these two functions,
so they agree on what is valid; the canonical text is what ``format_capabilities`` writes.
"""

import collections.abc
import re
from typing import Any, Dict, Mapping

PRESENT = -1  # the value of a capability given without a quantity
EXAMPLE = "linux,gpu=2"
_INTEGER = re.compile(r"-?[0-9]+")


class CapabilitiesError(ValueError):
    """A capabilities text or dict that is not valid; ``problem`` says what is wrong with it."""

    def __init__(self, given: Any, problem: str) -> None:
        super().__init__("capabilities %r: %s (expected names or name=INTEGER separated by commas, like %s)"
                         % (given, problem, EXAMPLE))
        self.given = given
        self.problem = problem


def parse_capabilities(text: str) -> Dict[str, int]:
    """``"linux, gpu=2"`` -> ``{"linux": -1, "gpu": 2}``, in the order given; "" -> ``{}``.

    Spaces around items, names and numbers and empty items are ignored. Raises
    ``CapabilitiesError`` (a ValueError) for a name with spaces in it or none at all, a
    quantity that is not an integer or is below -1, or a name given twice.
    """
    if not isinstance(text, str):
        raise CapabilitiesError(text, "expected a string, got %s" % type(text).__name__)
    result: Dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, amount = item.partition("=")
        name, amount = name.strip(), amount.strip()
        _check_name(text, name)
        if name in result:
            raise CapabilitiesError(text, "%r is given twice" % name)
        if not sep:
            result[name] = PRESENT
            continue
        if not _INTEGER.fullmatch(amount):
            raise CapabilitiesError(text, "%r is not an integer" % amount)
        result[name] = _check_amount(text, name, int(amount))
    return result


def format_capabilities(capabilities: Mapping[str, int]) -> str:
    """``{"linux": -1, "gpu": 2}`` -> ``"linux,gpu=2"``; ``{}`` -> ``""``.

    The inverse of ``parse_capabilities``, and the canonical text. Raises
    ``CapabilitiesError`` for what ``parse_capabilities`` would refuse, and for a quantity
    that is not an ``int`` (``True`` included).
    """
    if not isinstance(capabilities, collections.abc.Mapping):
        raise CapabilitiesError(capabilities, "expected a dict of name: quantity, got %s"
                                % type(capabilities).__name__)
    parts = []
    for name, amount in capabilities.items():
        if not isinstance(name, str):
            raise CapabilitiesError(capabilities, "name %r is not a string" % (name,))
        _check_name(capabilities, name)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise CapabilitiesError(capabilities, "%s = %r is not an integer" % (name, amount))
        _check_amount(capabilities, name, amount)
        parts.append(name if amount == PRESENT else "%s=%d" % (name, amount))
    return ",".join(parts)


def _check_name(given: Any, name: str) -> None:
    if not name:
        raise CapabilitiesError(given, "a capability has no name")
    if any(c.isspace() or c in ",=" for c in name):
        raise CapabilitiesError(given, "bad name %r (no spaces, commas or '=' in a name)" % name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CapabilitiesError(given, "bad name %r (not valid text: it cannot be written as UTF-8)" % name) from None


def _check_amount(given: Any, name: str, amount: int) -> int:
    if amount < PRESENT:
        raise CapabilitiesError(given, "%s=%d: a quantity is an integer >= 0 (or leave it out)" % (name, amount))
    return amount
