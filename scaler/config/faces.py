"""Upstream's configuration classes as thin faces over scaler's own dataclasses.

Code written for OpenGRIS Scaler builds ``SchedulerConfig``, ``WorkerConfig``,
``NativeWorkerManagerConfig``... in Python (``scaler.config.common.*``,
``scaler.config.section.*``, ``scaler.config.types.*``). Those classes keep upstream's names
and field names, but hold no defaults or rules of their own: each default is read from the
field of scaler's component dataclass (``components.py``) that it stands for, and each value
is checked by the very converter that checks the same key in a TOML file (``loader.convert``),
or by a whole command's validation (``loader.config_from_table``) for the faces that are a
complete component. A bad value raises ``ValueError`` naming the face and its field, as
upstream's ``__post_init__`` checks do.

Nothing here is imported by ``import scaler``: only code that uses a face pays for it.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional

from .fields import spec_of


def default_of(config_class: type, name: str) -> Any:
    """The default of field ``name`` of one of scaler's config dataclasses."""
    for field in dataclasses.fields(config_class):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return field.default_factory()  # type: ignore[misc]
            raise LookupError("%s.%s has no default" % (config_class.__name__, name))
    raise LookupError("%s has no field %r" % (config_class.__name__, name))


def check_values(config_class: type, values: Mapping[str, Any], owner: str,
                 names: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Convert and check ``values`` (scaler field names) as the TOML keys of those fields would be.

    ``None`` is kept for a field whose default is ``None``. Raises ``ValueError`` as
    ``"<owner>.<upstream field name>: <what is wrong>"``; ``names`` maps scaler's field names to
    the face's.
    """
    from .loader import Option, convert

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    checked: Dict[str, Any] = {}
    for name, value in values.items():
        field = fields[name]
        spec = spec_of(field)
        if spec is None or not spec.cli or (value is None and field.default is None):
            checked[name] = value
            continue
        try:
            checked[name] = convert(Option(field, spec, False), value, from_text=False)
        except ValueError as exc:
            raise ValueError("%s.%s: %s" % (owner, (names or {}).get(name, name), exc)) from None
    return checked


def build_checked(command: Any, values: Mapping[str, Any], owner: str) -> Any:
    """scaler's config of ``command`` from ``values`` (its field names), through the command's own
    validation (every key, then the command's cross-checks). ``None`` values are left at their default."""
    from .loader import ConfigErrors, config_from_table

    table = {name: value for name, value in values.items() if value is not None}
    try:
        return config_from_table(command, table, owner)
    except ConfigErrors as exc:
        raise ValueError(str(exc)) from None


def address_text(value: Any, owner: str, field: str, optional: bool = True) -> Optional[str]:
    """An ``AddressConfig`` or an address string as scaler's address text; checked."""
    from ..io.address import parse_address

    if value is None:
        if optional:
            return None
        raise ValueError("%s.%s is required" % (owner, field))
    text = str(value)
    try:
        parse_address(text)
    except ValueError as exc:
        raise ValueError("%s.%s: %s" % (owner, field, exc)) from None
    return text
