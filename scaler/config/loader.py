"""Command lines and TOML sections, both built from the field declarations.

A ``Command`` names a dataclass from ``components.py``, its TOML section and a few
per-command adjustments. From it come the argparse parser (``build_parser``), the TOML
reader (``values_from_table``) and the validation, so every flag and key is declared once,
on its dataclass field.

Precedence: command-line flag > TOML value > default. Every value is converted and checked
before anything starts; a problem in a file is reported as one line naming the file, the
section, the key and what was expected (``ConfigError``), and the command exits with 2.
"""

import dataclasses
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..version import __version__
from .capabilities import CapabilitiesError, format_capabilities, parse_capabilities
from .components import STREAM_PATHS
from .fields import Spec, spec_of
from .policy import parse_policy

if TYPE_CHECKING:  # argparse is imported by build_parser: a spawned component never builds a parser
    import argparse

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
GROUP_TITLES = {"": "%s options", "worker": "worker options (given to every worker)", "logging": "logging",
                "security": "security"}
GROUP_ORDER = ("", "worker", "logging", "security")
INTERNAL_FLAGS = {  # spawner-only flags, hidden from -h
    "lifeline-fd": int, "config-json": str, "listen-fd": int, "storage-listen-fd": int, "monitor-listen-fd": int,
}


class ConfigError(Exception):
    """One invalid value: ``where`` names the file, section and key (or the flag)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(where, message)
        self.where = where
        self.message = message

    def __str__(self) -> str:
        return "%s: %s" % (self.where, self.message) if self.where else self.message


class ConfigErrors(Exception):
    """Several ``ConfigError``s found in one pass (each is printed on its own line)."""

    def __init__(self, errors: List[ConfigError]) -> None:
        super().__init__(errors)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# --------------------------------------------------------------------------------------
# options


class Option:
    """One field of a component as a flag and a TOML key."""

    def __init__(self, field: "dataclasses.Field[Any]", spec: Spec, positional: bool,
                 default: Any = dataclasses.MISSING) -> None:
        self.name = field.name
        self.spec = spec
        self.positional = positional
        self.long = spec.flag or field.name.replace("_", "-")
        self.kind = spec.kind
        if positional:
            self.flags: List[str] = []
        else:
            self.flags = list(spec.short) + ["--" + self.long] + ["--" + alias for alias in spec.aliases]
        # toml_aliases come first: they are the names the seeds' files use for a positional
        names = list(spec.toml_aliases) + [self.long] + list(spec.aliases) + [field.name]
        keys: List[str] = []
        for name in names:
            key = name.replace("-", "_")
            if key not in keys:
                keys.append(key)
        self.toml_keys = keys
        if default is not dataclasses.MISSING:
            self.default_factory: Callable[[], Any] = lambda: default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            self.default_factory = field.default_factory  # type: ignore[misc,assignment]
        else:
            value = field.default
            self.default_factory = lambda: value

    @property
    def key(self) -> str:
        return self.toml_keys[0]

    @property
    def flag(self) -> str:
        return (self.spec.metavar or "") if self.positional else "--" + self.long

    @property
    def metavar(self) -> str:
        spec = self.spec
        if spec.metavar:
            return spec.metavar
        if self.kind == "choice":
            return "{%s}" % ",".join(spec.choices)
        return {"int": "N", "float": "N", "bool": "BOOL", "address": "ADDRESS", "file": "FILE",
                "policy": "POLICY", "log_paths": "PATH"}.get(self.kind, "VALUE")

    def default(self) -> Any:
        return self.default_factory()

    def default_text(self) -> str:
        if self.spec.default_text is not None:
            return self.spec.default_text
        return show_value(self.default())

    def expected(self) -> str:
        """What a valid value looks like, e.g. 'an integer >= 0'."""
        spec = self.spec
        kind = self.kind
        if kind in ("int", "float"):
            return ("an integer" if kind == "int" else "a number") + _bounds(spec)
        if kind == "bool":
            return "true or false"
        if kind == "choice":
            return "one of " + ", ".join(spec.choices)
        if kind == "address":
            return "an address like tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH"
        if kind == "list":
            return "one or more strings"
        if kind == "log_paths":
            return "one or more of /dev/stdout, /dev/stderr or writable file paths"
        if kind == "names":
            return "comma-separated names"
        if kind == "capabilities":
            return "capabilities like linux,cpu=4"
        if kind == "policy":
            return "a policy like 'allocate=even_load; scaling=no'"
        if kind == "file":
            return "a path to a logging.config file"
        return "a string"

    def help_text(self) -> str:
        text = self.spec.help
        if self.kind == "bool":
            text += " [true or false; the flag alone means true]"
        if self.spec.inert:
            text += " [accepted for compatibility; no effect in this build]"
        if self.positional:
            text += "; TOML key: " + ", ".join(self.toml_keys)
        text += " (default: %s)" % ("required" if self.positional else self.default_text())
        return text


def show_value(value: Any) -> str:
    """A value as it reads in TOML (and in messages)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return " ".join(show_value(v) for v in value) if value else "none"
    if value == "":
        return "none"
    return str(value)


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else str(x)


def _bounds(spec: Spec) -> str:
    if spec.minimum is not None and spec.maximum is not None:
        return " from %s to %s" % (_num(spec.minimum), _num(spec.maximum))
    parts = []
    if spec.above is not None:
        parts.append("> %s" % _num(spec.above))
    if spec.minimum is not None:
        parts.append(">= %s" % _num(spec.minimum))
    if spec.maximum is not None:
        parts.append("<= %s" % _num(spec.maximum))
    if spec.nonzero:
        parts.append("other than 0")
    return (" " + " and ".join(parts)) if parts else ""


# --------------------------------------------------------------------------------------
# conversion and validation (the same code for flags and TOML values)


def convert(option: Option, value: Any, from_text: bool) -> Any:
    """Convert a flag's text or a TOML value; raise ValueError('expected ..., got ...')."""
    spec = option.spec
    kind = option.kind
    if spec.unsupported:
        raise ValueError(spec.unsupported)

    def fail(extra: str = "") -> "ValueError":
        got = "a value of type %s" % type(value).__name__ if spec.secret else _got(value)
        return ValueError("expected %s, got %s%s" % (option.expected(), got, extra))

    if kind in ("int", "float"):
        integer = kind == "int"
        if from_text:
            try:
                number: Any = int(value)
            except (TypeError, ValueError):
                if integer:
                    raise fail() from None
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise fail() from None
        else:
            accepted = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, accepted):
                hint = ""
                if isinstance(value, str):
                    try:
                        int(value) if integer else float(value)
                        hint = " (a string: write the number without quotes)"
                    except ValueError:
                        pass
                raise fail(hint)
            number = value
        if not integer and not math.isfinite(number):
            raise fail()
        if ((spec.minimum is not None and number < spec.minimum)
                or (spec.maximum is not None and number > spec.maximum)
                or (spec.above is not None and number <= spec.above)
                or (spec.nonzero and number == 0)):
            raise fail()
        return number
    if kind == "bool":
        if isinstance(value, bool) and not from_text:
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
            return True
        if isinstance(value, str) and value.strip().lower() in FALSE_WORDS:
            return False
        raise fail()
    if kind in ("list", "log_paths"):
        if from_text or isinstance(value, str):
            items: List[Any] = [value]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise fail()
        if any(not isinstance(item, str) or not item for item in items):
            raise ValueError("expected %s, got %s" % (option.expected(), _got(value)))
        if kind == "log_paths":
            for item in items:
                _check_log_path(item)
        return tuple(items)
    if kind == "names":
        if isinstance(value, str):
            items = [part.strip() for part in value.split(",")]
        elif isinstance(value, (list, tuple)) and not from_text and all(isinstance(v, str) for v in value):
            items = [part.strip() for part in value]
        else:
            raise fail()
        items = [item for item in items if item]
        seen = set()
        for item in items:
            if item in seen:
                raise ValueError("%r is given twice" % item)
            seen.add(item)
        return tuple(items)
    if kind == "capabilities":  # a string, or a TOML table of integers; either way the canonical text
        if not isinstance(value, str) and not (isinstance(value, dict) and not from_text):
            raise fail()
        try:
            return format_capabilities(parse_capabilities(value) if isinstance(value, str) else value)
        except CapabilitiesError as exc:
            raise ValueError("expected %s, got %s (%s)" % (option.expected(), _got(value), exc.problem)) from None
    if not isinstance(value, str):
        raise fail()
    if kind == "choice":
        for choice in spec.choices:
            if value.strip().lower() == choice.lower():
                return choice
        raise fail()
    if kind == "address":
        from ..io.address import parse_address
        if value == "" and option.default() is None:
            return None
        try:
            parse_address(value)
        except ValueError as exc:
            raise ValueError("expected an address like tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH; %s"
                             % exc) from None
        return value
    if kind == "policy":
        parse_policy(value)  # its ValueError names the problem and the valid keys
        return value
    if kind == "file":
        _check_logging_config_file(value)
        return value
    return value


def _check_log_path(path: str) -> None:
    if path in STREAM_PATHS:
        return
    if os.path.isdir(path):
        raise ValueError("log path %r is a directory" % path)
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ValueError("log file %r is not writable" % path)
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # it is created at startup: check the closest existing ancestor
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError("cannot create log file %r: %r is not a writable directory" % (path, parent))


def _check_logging_config_file(path: str) -> None:
    import configparser
    if not os.path.isfile(path):
        raise ValueError("expected a path to a logging.config file, got %r (no such file)" % path)
    try:
        if path.endswith(".json"):
            with open(path) as f:
                if not isinstance(json.load(f), dict):
                    raise ValueError("not a JSON object")
        else:
            parser = configparser.ConfigParser()
            with open(path) as f:
                parser.read_file(f)
            if not parser.has_section("loggers"):
                raise ValueError("no [loggers] section")
    except (OSError, ValueError, configparser.Error) as exc:
        raise ValueError("%r is not a usable logging.config file: %s" % (path, exc)) from None


# --------------------------------------------------------------------------------------
# commands


@dataclasses.dataclass
class Command:
    """A command line and TOML section for one component dataclass."""

    prog: str                                  # "scaler_scheduler"
    section: str                               # "scheduler" (or "worker_manager" for the array)
    config_class: type
    positional: str                            # field filled by the positional argument
    description: str
    modules: Tuple[str, ...]                   # python -m forms, e.g. ("scaler.scheduler",)
    overrides: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    exclude: Tuple[str, ...] = ()              # fields this command does not take
    fixed: Dict[str, Any] = dataclasses.field(default_factory=dict)  # values the command sets itself
    internal_flags: Tuple[str, ...] = ("lifeline-fd",)
    array_type: Optional[str] = None           # [[worker_manager]] entries with this type
    epilog: str = ""
    finalize: Optional[Callable[["Resolution"], None]] = None

    @property
    def section_label(self) -> str:
        return "[[%s]]" % self.section if self.array_type else "[%s]" % self.section

    def options(self) -> List[Option]:
        """The options in help order: the positional, own options, then the groups."""
        own = set(getattr(self.config_class, "__annotations__", {}))
        found = []
        for index, field in enumerate(dataclasses.fields(self.config_class)):
            spec = spec_of(field)
            if spec is None or not spec.cli or field.name in self.exclude or field.name in self.fixed:
                continue
            changes = dict(self.overrides.get(field.name, {}))
            default = changes.pop("default", dataclasses.MISSING)
            if changes:
                spec = spec.replace(**changes)
            option = Option(field, spec, field.name == self.positional, default)
            rank = (0 if option.positional else 1, GROUP_ORDER.index(spec.group),
                    0 if field.name in own else 1, index)
            found.append((rank, option))
        return [option for _, option in sorted(found, key=lambda item: item[0])]

    def option_map(self) -> Dict[str, Option]:
        return {option.name: option for option in self.options()}

    def key_map(self) -> Dict[str, Option]:
        keys: Dict[str, Option] = {}
        for option in self.options():
            for key in option.toml_keys:
                keys[key] = option
        return keys


@dataclasses.dataclass
class Source:
    """Where a setting's value came from (named in error messages)."""

    kind: str    # "default", "json", "toml", "cli", "command"
    where: str   # "example.toml [scheduler] num_of_workers", "argument --num-of-workers", ...


class Resolution:
    """Values and where each came from, while a command's configuration is being put together."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.options = command.option_map()
        self.values: Dict[str, Any] = {}
        self.sources: Dict[str, Source] = {}
        self.config_file: Optional[str] = None
        self.section_where = ""  # "example.toml [scheduler]" when a file was read
        for field in dataclasses.fields(command.config_class):
            option = self.options.get(field.name)
            if option is not None:
                self.values[field.name] = option.default()
            elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                self.values[field.name] = field.default_factory()  # type: ignore[misc]
            elif field.default is not dataclasses.MISSING:
                self.values[field.name] = field.default
            self.sources[field.name] = Source("default", field.name)
        for name, value in command.fixed.items():
            self.values[name] = value
            self.sources[name] = Source("command", name)

    def set(self, name: str, value: Any, source: Source) -> None:
        if name in self.command.fixed:
            return
        self.values[name] = value
        self.sources[name] = source

    def given(self, name: str) -> bool:
        return self.sources[name].kind not in ("default", "command")

    def error(self, name: str, message: str) -> ConfigError:
        source = self.sources.get(name)
        if source is None or source.kind == "default":
            option = self.options.get(name)
            where = ("%s %s" % (self.section_where, option.key) if self.section_where and option
                     else (option.flag if option else name))
            return ConfigError(where, message)
        return ConfigError(source.where, message)

    def build(self) -> Any:
        return self.command.config_class(**self.values)


def values_from_table(resolution: Resolution, table: Any, where: str) -> List[ConfigError]:
    """Read one TOML table into ``resolution``; return every problem found (none: empty list)."""
    command = resolution.command
    if not isinstance(table, dict):
        return [ConfigError(where, "expected a table, got %s" % _got(table))]
    keys = command.key_map()
    errors: List[ConfigError] = []
    seen: Dict[str, str] = {}
    for raw_key, value in table.items():
        if command.array_type and raw_key == "type":
            continue
        key = raw_key.replace("-", "_")
        option = keys.get(key)
        key_where = "%s %s" % (where, raw_key)
        if option is None:
            errors.append(ConfigError(key_where, unknown_key_message(key, keys, command)))
            continue
        if option.name in seen:
            errors.append(ConfigError(key_where, "given twice (also as '%s')" % seen[option.name]))
            continue
        seen[option.name] = raw_key
        try:
            converted = convert(option, value, from_text=False)
        except ValueError as exc:
            errors.append(ConfigError(key_where, str(exc)))
            continue
        resolution.set(option.name, converted, Source("toml", key_where))
    return errors


def unknown_key_message(key: str, keys: Dict[str, Option], command: Command) -> str:
    if key in command.fixed or key in command.exclude:
        return "not used by %s" % command.prog
    import difflib
    matches = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
    if matches:
        return "unknown key (did you mean '%s'?)" % matches[0]
    return "unknown key (run '%s -h' to list the valid keys)" % command.prog


def finish(resolution: Resolution) -> Any:
    """Command-specific checks, the required positional; return the config object."""
    command = resolution.command
    if command.finalize is not None:
        command.finalize(resolution)
    if "auth_key_file" in resolution.options:
        _read_auth_key_file(resolution)
    if "tls_ca" in resolution.options and resolution.values.get("tls_ca"):
        from ..io.tls import check_ca_file
        try:
            check_ca_file(resolution.values["tls_ca"])
        except ValueError as exc:
            raise resolution.error("tls_ca", str(exc)) from None
    if resolution.values.get("hard_processor_suspend"):
        from .components import HARD_PROCESSOR_SUSPEND_REFUSED
        raise resolution.error("hard_processor_suspend", HARD_PROCESSOR_SUSPEND_REFUSED)
    if resolution.values.get("preload"):  # once, here, rather than a traceback from every worker
        from .preload import PreloadError, check_preload
        try:
            check_preload(resolution.values["preload"])
        except PreloadError as exc:
            raise resolution.error("preload", str(exc)) from None
    positional = resolution.options.get(command.positional)
    if positional is not None and not resolution.values.get(command.positional):
        if resolution.section_where:
            raise ConfigError("%s %s" % (resolution.section_where, positional.key),
                              "missing required value (or give %s on the command line)" % positional.metavar)
        raise ConfigError("", "%s is required: give it on the command line, or as '%s' in %s of a --config file"
                          % (positional.metavar, positional.key, command.section_label))
    return resolution.build()


def config_from_python(command: Command, values: Dict[str, Any], caller: str,
                       names: Optional[Dict[str, str]] = None) -> Any:
    """A command's configuration from Python keyword arguments, checked by the same code as
    its flags and TOML keys (so ``SchedulerClusterCombo(event_loop="bogus")`` fails as
    ``--event-loop bogus`` does). ``names`` maps a field to the keyword the caller knows it
    by. Raises ``ValueError`` naming every bad argument."""
    names = names or {}
    resolution = Resolution(command)
    errors: List[ConfigError] = []
    for name, value in values.items():
        where = "%s(%s=...)" % (caller, names.get(name, name))
        option = resolution.options.get(name)
        if option is None:  # a field scaler sets itself (not a flag of this command)
            resolution.values[name] = value
            resolution.sources[name] = Source("command", where)
            continue
        if value is None and option.default() is None:
            resolution.set(name, None, Source("python", where))
            continue
        try:
            converted = convert(option, value, from_text=False)
        except ValueError as exc:
            errors.append(ConfigError(where, str(exc)))
            continue
        resolution.set(name, converted, Source("python", where))
    if errors:
        raise ValueError(str(ConfigErrors(errors)))
    try:
        return finish(resolution)
    except (ConfigError, ConfigErrors) as exc:
        raise ValueError(str(exc)) from None


_SOURCE_RANK = {"default": 0, "command": 0, "json": 1, "toml": 2, "cli": 3, "python": 3}


def _read_auth_key_file(resolution: Resolution) -> None:
    """Put the key file's key in ``auth_key``, unless the key itself is given at the same or a
    higher level (flag > TOML file): the key wins over the key file, the key file over
    ``SCALER_AUTH_KEY`` (read later, by the process that uses the key)."""
    from .key_file import read_key_file

    values = resolution.values
    path = values.get("auth_key_file")
    if not path:
        return
    if values.get("auth_key") and (_SOURCE_RANK[resolution.sources["auth_key"].kind]
                                   >= _SOURCE_RANK[resolution.sources["auth_key_file"].kind]):
        return
    try:
        values["auth_key"] = read_key_file(path)
    except ValueError as exc:
        raise resolution.error("auth_key_file", str(exc)) from None


# --------------------------------------------------------------------------------------
# TOML files


def load_toml(path: str) -> Dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(path, "cannot read the file: %s" % (exc.strerror or exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "not valid TOML: %s" % exc) from None


def section_of(command: Command, data: Dict[str, Any], path: str) -> Tuple[Any, str]:
    """The table a command reads from a parsed file, and how to name it in messages."""
    if command.array_type is None:
        if command.section not in data:
            found = ", ".join("[%s]" % name for name in data) or "none"
            raise ConfigError(path, "no [%s] section for %s (sections found: %s)" % (command.section, command.prog,
                                                                                   found))
        return data[command.section], "%s [%s]" % (path, command.section)
    entries = data.get(command.section)
    if entries is None:
        raise ConfigError(path, "no [[%s]] entry with type = \"%s\"" % (command.section, command.array_type))
    if not isinstance(entries, list):
        raise ConfigError("%s [%s]" % (path, command.section),
                          "expected an array of tables ([[%s]]), got %s" % (command.section, _got(entries)))
    matching = [(i, e) for i, e in enumerate(entries, 1) if isinstance(e, dict) and e.get("type") == command.array_type]
    if not matching:
        types = sorted({str(e.get("type")) for e in entries if isinstance(e, dict)})
        raise ConfigError(path, "no [[%s]] entry with type = \"%s\" (types found: %s)"
                          % (command.section, command.array_type, ", ".join(types) or "none"))
    if len(matching) > 1:
        raise ConfigError(path, "%d [[%s]] entries with type = \"%s\" (entries %s): this command runs one; "
                                "use the 'scaler' launcher to run several"
                          % (len(matching), command.section, command.array_type,
                             ", ".join("#%d" % i for i, _ in matching)))
    index, entry = matching[0]
    return entry, "%s [[%s]] #%d" % (path, command.section, index)


# --------------------------------------------------------------------------------------
# command lines


def _help_formatter(prog: str, **options: Any) -> "argparse.HelpFormatter":
    import argparse
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, **options)


def build_parser(command: Command) -> "argparse.ArgumentParser":
    import argparse
    parser = argparse.ArgumentParser(prog=command.prog, description=command.description,
                                     epilog=command.epilog or None, formatter_class=_help_formatter,
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version="%s %s (scaler)" % (command.prog, __version__))
    label = command.section_label + (" entry with type = \"%s\"" % command.array_type if command.array_type else "")
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="TOML file to read settings from, in its %s (flags given here win over it)" % label)
    for name in command.internal_flags:
        parser.add_argument("--" + name, type=INTERNAL_FLAGS[name], default=None, help=argparse.SUPPRESS)
    groups: Dict[str, Any] = {}
    for option in command.options():
        converter = _cli_converter(option)
        help_text = option.help_text().replace("%", "%%")
        if option.positional:
            parser.add_argument(option.name, nargs="?", default=None, type=converter, metavar=option.metavar,
                                help=help_text)
            continue
        group = groups.get(option.spec.group)
        if group is None:
            title = GROUP_TITLES[option.spec.group]
            if "%s" in title:
                title = title % command.section.replace("_", " ")
            group = groups[option.spec.group] = parser.add_argument_group(title)
        nargs = "+" if option.kind in ("list", "log_paths") else None
        group.add_argument(*option.flags, dest=option.name, default=argparse.SUPPRESS, type=converter, nargs=nargs,
                           metavar=option.metavar, help=help_text)
    return parser


def _cli_converter(option: Option) -> Callable[[str], Any]:
    def converter(text: str) -> Any:
        try:
            value = convert(option, text, from_text=True)
        except ValueError as exc:
            import argparse
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value[0] if option.kind in ("list", "log_paths") else value
    converter.__name__ = option.kind  # argparse names it in some messages
    return converter


def expand_bool_flags(command: Command, argv: Sequence[str]) -> List[str]:
    """``-p`` alone means ``-p true``: a bool flag takes the next word only if it reads as a boolean."""
    flags = set()
    for option in command.options():
        if option.kind == "bool":
            flags.update(option.flags)
    words = TRUE_WORDS + FALSE_WORDS
    result: List[str] = []
    argv = list(argv)
    for index, word in enumerate(argv):
        if word == "--":
            result.extend(argv[index:])
            break
        result.append(word)
        if word in flags:
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or following.strip().lower() not in words:
                result.append("true")
    return result


@dataclasses.dataclass
class Loaded:
    """A command line's outcome: the config object and the hidden spawner flags."""

    config: Any
    config_file: Optional[str] = None
    lifeline_fd: int = -1
    listen_fd: int = -1
    storage_listen_fd: int = -1
    monitor_listen_fd: int = -1


class _SpawnedArgs:
    """A spawner's command line, as ``parse_args`` would give it (no -c file, no option flags)."""

    config = None

    def __init__(self, values: Dict[str, Any]) -> None:
        for name in INTERNAL_FLAGS:
            setattr(self, name.replace("-", "_"), values.get(name))


def _spawned_command_line(command: Command, argv: Sequence[str]) -> Optional[_SpawnedArgs]:
    """The parse of a command line made only of the command's hidden spawner flags, each once with
    its value, ``--config-json`` among them (how components start each other), else None.

    Such a line is read without argparse: building the parser of a command with tens of options
    (and importing argparse) is several ms of every component process's start-up.
    """
    if len(argv) % 2:
        return None
    values: Dict[str, Any] = {}
    for flag, text in zip(argv[0::2], argv[1::2]):
        name = flag[2:] if flag.startswith("--") else ""
        if name not in command.internal_flags or name in values:
            return None
        try:
            values[name] = INTERNAL_FLAGS[name](text)
        except ValueError:
            return None  # argparse says what is wrong
    return _SpawnedArgs(values) if "config-json" in values else None


def resolve_command_line(command: Command, argv: Optional[Sequence[str]] = None,
                         parser: "Optional[argparse.ArgumentParser]" = None) -> Loaded:
    """Parse argv (and the --config file) into the command's config; raise ConfigError(s)."""
    argv = sys.argv[1:] if argv is None else argv
    args: Any = _spawned_command_line(command, argv)
    if args is None:
        parser = parser or build_parser(command)
        args = parser.parse_args(expand_bool_flags(command, argv))
    resolution = Resolution(command)
    config_json = getattr(args, "config_json", None)
    if config_json:
        for name, value in json.loads(config_json).items():
            default = resolution.values.get(name)
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            resolution.set(name, value, Source("json", name))
    if args.config:
        data = load_toml(args.config)
        table, where = section_of(command, data, args.config)
        errors = values_from_table(resolution, table, where)
        if errors:
            raise ConfigErrors(errors)
        resolution.config_file = args.config
        resolution.section_where = where
    for option in resolution.options.values():
        if option.positional:
            value = getattr(args, option.name, None)
            if value is not None:
                resolution.set(option.name, value, Source("cli", "argument %s" % option.metavar))
        elif hasattr(args, option.name):
            value = getattr(args, option.name)
            if isinstance(value, list):
                value = tuple(value)
            resolution.set(option.name, value, Source("cli", "argument %s" % "/".join(option.flags)))
    config = finish(resolution)

    def fd(name: str) -> int:
        value = getattr(args, name, None)
        return -1 if value is None else value

    return Loaded(config, args.config, fd("lifeline_fd"), fd("listen_fd"), fd("storage_listen_fd"),
                  fd("monitor_listen_fd"))


def parse_or_exit(command: Command, argv: Optional[Sequence[str]] = None) -> Loaded:
    """``resolve_command_line``, printing problems as '<prog>: error: ...' lines and exiting with 2."""
    try:
        return resolve_command_line(command, argv)
    except ConfigErrors as exc:
        for error in exc.errors:
            print("%s: error: %s" % (command.prog, error), file=sys.stderr)
    except ConfigError as exc:
        print("%s: error: %s" % (command.prog, exc), file=sys.stderr)
    sys.exit(2)


def config_from_table(command: Command, table: Any, where: str) -> Any:
    """A config from one TOML table alone (the launcher); raise ConfigErrors."""
    resolution = Resolution(command)
    resolution.section_where = where
    errors = values_from_table(resolution, table, where)
    if errors:
        raise ConfigErrors(errors)
    try:
        return finish(resolution)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None

