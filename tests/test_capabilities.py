"""The capabilities text ``"linux,gpu=2"`` and its dict: one parser, one formatter."""

import pytest

from scaler.config.capabilities import PRESENT, CapabilitiesError, format_capabilities, parse_capabilities


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("   ", {}),
    ("linux", {"linux": PRESENT}),
    ("linux,gpu=2", {"linux": -1, "gpu": 2}),
    (" linux , gpu = 2 ,", {"linux": -1, "gpu": 2}),
    ("a,,b", {"a": -1, "b": -1}),
    ("gpu=0", {"gpu": 0}),
    ("gpu=-1", {"gpu": PRESENT}),
    ("gpu=007", {"gpu": 7}),
    ("x86_64.avx-512:v2", {"x86_64.avx-512:v2": -1}),
    ("cpu=4,linux,mem=1000000000000", {"cpu": 4, "linux": -1, "mem": 10 ** 12}),
])
def test_parse(text, expected):
    parsed = parse_capabilities(text)
    assert parsed == expected
    assert list(parsed) == list(expected)  # the order given is kept


@pytest.mark.parametrize("text, problem", [
    ("gpu=many", "'many' is not an integer"),
    ("gpu=", "'' is not an integer"),
    ("gpu=1.5", "'1.5' is not an integer"),
    ("gpu=+2", "'+2' is not an integer"),
    ("gpu=1_000", "'1_000' is not an integer"),
    ("gpu=٣", "'٣' is not an integer"),
    ("gpu=-2", "gpu=-2: a quantity is an integer >= 0 (or leave it out)"),
    ("=2", "a capability has no name"),
    ("linux,=", "a capability has no name"),
    ("my gpu=2", "bad name 'my gpu' (no spaces, commas or '=' in a name)"),
    ("gpu=1,linux,gpu=2", "'gpu' is given twice"),
    ("gpu=1=2", "'1=2' is not an integer"),
])
def test_parse_refuses(text, problem):
    with pytest.raises(CapabilitiesError) as info:
        parse_capabilities(text)
    assert info.value.problem == problem
    assert str(info.value) == ("capabilities %r: %s (expected names or name=INTEGER separated by commas, like "
                               "linux,gpu=2)" % (text, problem))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [None, 3, b"linux", ["linux"], {"linux": -1}])
def test_parse_takes_only_text(value):
    with pytest.raises(CapabilitiesError, match="expected a string, got %s" % type(value).__name__):
        parse_capabilities(value)


@pytest.mark.parametrize("capabilities, text", [
    ({}, ""),
    ({"linux": -1}, "linux"),
    ({"linux": -1, "gpu": 2}, "linux,gpu=2"),
    ({"gpu": 2, "linux": -1}, "gpu=2,linux"),
    ({"gpu": 0}, "gpu=0"),
])
def test_format(capabilities, text):
    assert format_capabilities(capabilities) == text
    assert parse_capabilities(text) == capabilities


@pytest.mark.parametrize("capabilities, problem", [
    ({"gpu": "2"}, "gpu = '2' is not an integer"),
    ({"gpu": 2.0}, "gpu = 2.0 is not an integer"),
    ({"gpu": True}, "gpu = True is not an integer"),
    ({"gpu": None}, "gpu = None is not an integer"),
    ({"gpu": -3}, "gpu=-3: a quantity is an integer >= 0 (or leave it out)"),
    ({"": 1}, "a capability has no name"),
    ({"a,b": 1}, "bad name 'a,b' (no spaces, commas or '=' in a name)"),
    ({"a=b": -1}, "bad name 'a=b' (no spaces, commas or '=' in a name)"),
    ({"my gpu": 1}, "bad name 'my gpu' (no spaces, commas or '=' in a name)"),
    ({"caf\udce9": 1}, "bad name 'caf\\udce9' (not valid text: it cannot be written as UTF-8)"),
    ({1: 1}, "name 1 is not a string"),
    ("linux,gpu=2", "expected a dict of name: quantity, got str"),
    ([("gpu", 2)], "expected a dict of name: quantity, got list"),
])
def test_format_refuses(capabilities, problem):
    with pytest.raises(CapabilitiesError) as info:
        format_capabilities(capabilities)
    assert info.value.problem == problem


@pytest.mark.parametrize("text", ["linux", " linux , gpu = 2 ,", "gpu=-1,cpu=007", "a,,b=3"])
def test_format_of_parse_is_canonical_and_stable(text):
    canonical = format_capabilities(parse_capabilities(text))
    assert " " not in canonical and ",," not in canonical and "=-1" not in canonical
    assert format_capabilities(parse_capabilities(canonical)) == canonical
    assert parse_capabilities(canonical) == parse_capabilities(text)


def test_flags_and_toml_give_the_canonical_text():
    from scaler.config.commands import CLUSTER
    from scaler.config.loader import config_from_table, resolve_command_line

    assert resolve_command_line(CLUSTER, ["tcp://127.0.0.1:8516", "-pwc", " linux, gpu = 2"]).config \
        .per_worker_capabilities == "linux,gpu=2"
    table = {"scheduler_address": "tcp://127.0.0.1:8516", "per_worker_capabilities": {"linux": -1, "gpu": 2}}
    assert config_from_table(CLUSTER, table, "f.toml [cluster]").per_worker_capabilities == "linux,gpu=2"


@pytest.mark.parametrize("value, message", [
    ({"gpu": "2"}, "expected capabilities like linux,cpu=4, got a table (gpu = '2' is not an integer)"),
    ("gpu=1,gpu=2", "expected capabilities like linux,cpu=4, got 'gpu=1,gpu=2' ('gpu' is given twice)"),
    (4, "expected capabilities like linux,cpu=4, got 4"),
])
def test_a_bad_toml_value_names_the_key_and_the_problem(value, message):
    from scaler.config.commands import CLUSTER
    from scaler.config.loader import ConfigErrors, config_from_table

    table = {"scheduler_address": "tcp://127.0.0.1:8516", "per_worker_capabilities": value}
    with pytest.raises(ConfigErrors) as info:
        config_from_table(CLUSTER, table, "f.toml [cluster]")
    assert [str(e) for e in info.value.errors] == ["f.toml [cluster] per_worker_capabilities: " + message]
