"""How a configuration field is declared: ``option(...)`` on a dataclass field.

Each field of the component dataclasses in ``components.py`` carries one ``Spec`` in its
metadata. The command-line parser, the TOML loader, the validation and the generated
documentation are all built from these specs (see ``loader.py`` and ``docs.py``), so a
flag is written down exactly once.

This module only needs ``dataclasses``: ``components.py`` is imported by every process.
"""

import dataclasses
from typing import Any, Callable, Optional, Tuple

SPEC_KEY = "scaler.option"

# The kinds of value a field takes. Each has one converter and one validator in loader.py.
KINDS = (
    "str",        # any string
    "int",        # an integer (TOML integer; on the command line digits)
    "float",      # a number, integer or not
    "bool",       # true/false; on the command line a bare flag means true
    "choice",     # one of ``choices``, case-insensitive
    "address",    # tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH
    "list",       # one or more strings (TOML array; several values after the flag)
    "names",      # comma-separated names (TOML array or "a,b,c")
    "capabilities",  # "name,name=INT,..." (TOML string or table of integers)
    "policy",     # the scheduler's "allocate=...; scaling=..." string
    "file",       # a path to an existing, readable logging.config file
    "log_paths",  # logging sinks: /dev/stdout, /dev/stderr or files
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """The declaration of one setting: its flag, TOML key, kind, limits and help (docstring: see components.py)."""

    help: str
    kind: str
    short: Tuple[str, ...] = ()          # short flags, e.g. ("-n",)
    aliases: Tuple[str, ...] = ()        # other long names; each is a flag and a TOML key
    toml_aliases: Tuple[str, ...] = ()   # TOML-only alternative keys (e.g. the positional's)
    flag: Optional[str] = None           # the long flag if not the field name with - for _
    choices: Tuple[str, ...] = ()
    minimum: Optional[float] = None      # inclusive
    maximum: Optional[float] = None      # inclusive
    above: Optional[float] = None        # exclusive minimum
    nonzero: bool = False
    inert: bool = False                  # accepted and validated, no effect in this build
    default_text: Optional[str] = None   # how the default reads in -h and the docs
    metavar: Optional[str] = None
    group: str = ""                      # help section; "" is the command's own
    cli: bool = True                     # False: not a flag nor a TOML key (internal field)
    secret: bool = False                 # the value is never echoed in messages
    unsupported: str = ""                # any value is rejected with this explanation

    def replace(self, **changes: Any) -> "Spec":
        return dataclasses.replace(self, **changes)


def option(default: Any = dataclasses.MISSING, *, help: str, kind: str,
           default_factory: Optional[Callable[[], Any]] = None, **spec: Any) -> Any:
    """A dataclass field with its command-line / TOML declaration."""
    if kind not in KINDS:
        raise ValueError("unknown option kind %r" % kind)
    metadata = {SPEC_KEY: Spec(help=help, kind=kind, **spec)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def internal(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that is set by the framework, never by a flag or a TOML key."""
    return dataclasses.field(default=default, metadata={SPEC_KEY: Spec(help="", kind="str", cli=False)}, **kwargs)


def spec_of(field: "dataclasses.Field[Any]") -> Optional[Spec]:
    return field.metadata.get(SPEC_KEY)
