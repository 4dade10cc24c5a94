"""The ``[templates]`` section (SPEC "NetFlow v9 (RFC 3954) and IPFIX"): its defaults are the
template cache's and the holding's own constants, every key is checked for type and range
with one sentence naming it, and a configuration with it round-trips through the document
the worker supervisor hands its workers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.config import SCHEMA, load, to_document
from relay.errors import ConfigError
from relay.flows import holding, templates
from relay.flows.config import TemplatesConfig, TemplateScopeMode


def test_the_defaults_are_the_cache_and_holding_constants() -> None:
    expected = TemplatesConfig(
        scope=TemplateScopeMode.ADDRESS,
        max_age=templates.DEFAULT_MAX_AGE,
        persist=True,
        max_per_exporter=templates.DEFAULT_MAX_TEMPLATES_PER_EXPORTER,
        max_total=templates.DEFAULT_MAX_TEMPLATES,
        max_bytes_per_exporter=templates.DEFAULT_MAX_BYTES_PER_EXPORTER,
        max_bytes=templates.DEFAULT_MAX_BYTES,
        hold_age=holding.DEFAULT_HOLD_AGE,
        hold_bytes_per_exporter=holding.DEFAULT_MAX_BYTES_PER_EXPORTER,
        hold_bytes=holding.DEFAULT_MAX_BYTES,
    )
    assert load({}, environ={}).templates == TemplatesConfig() == expected


def test_the_documented_defaults_are_the_spec_values() -> None:
    assert SCHEMA["templates"] == {
        "scope": "address", "max_age": 86400.0, "persist": True, "max_per_exporter": 1024,
        "max_total": 16384, "max_bytes_per_exporter": "256KiB", "max_bytes": "4MiB",
        "hold_age": 60.0, "hold_bytes_per_exporter": "1MiB", "hold_bytes": "16MiB",
    }  # fmt: skip


def test_file_values_are_taken_typed() -> None:
    table = {
        "scope": "address-port", "max_age": 3600, "persist": False, "max_per_exporter": 10,
        "max_total": 100, "max_bytes_per_exporter": "64KiB", "max_bytes": 1 << 20,
        "hold_age": 0.5, "hold_bytes_per_exporter": "128 KiB", "hold_bytes": "1GiB",
    }  # fmt: skip
    config = load({"templates": table}, environ={}).templates
    assert config.scope is TemplateScopeMode.ADDRESS_PORT
    assert isinstance(config.max_age, float)
    assert (config.max_age, config.persist) == (3600.0, False)
    assert (config.max_per_exporter, config.max_total) == (10, 100)
    assert (config.max_bytes_per_exporter, config.max_bytes) == (64 << 10, 1 << 20)
    assert (config.hold_age, config.hold_bytes_per_exporter, config.hold_bytes) == (
        0.5,
        128 << 10,
        1 << 30,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("scope", "port"), ("scope", "ADDRESS"), ("scope", 1), ("scope", ""),
        ("max_age", 0), ("max_age", -1), ("max_age", float("inf")), ("max_age", float("nan")),
        ("max_age", 30 * 86400 + 1), ("max_age", "1h"), ("max_age", True),
        ("persist", "yes"), ("persist", 1), ("persist", None),
        ("max_per_exporter", 0), ("max_per_exporter", 2.5), ("max_per_exporter", True),
        ("max_per_exporter", "10"), ("max_total", 0), ("max_total", (1 << 20) + 1),
        ("max_bytes_per_exporter", "1KiB"), ("max_bytes_per_exporter", "lots"),
        ("max_bytes_per_exporter", -1), ("max_bytes", "32MiB"), ("max_bytes", 1.5),
        ("hold_age", 0), ("hold_age", 3601), ("hold_age", "60"),
        ("hold_bytes_per_exporter", (64 << 10) - 1), ("hold_bytes_per_exporter", False),
        ("hold_bytes", "2GiB"), ("hold_bytes", [1]),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_sentence_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        load({"templates": {key: value}}, environ={})
    assert raised.value.key == f"templates.{key}"
    message = str(raised.value)
    assert message.startswith(f"templates.{key} must "), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"max_per_exporter": 200, "max_total": 100}, "templates.max_per_exporter"),
        ({"max_bytes_per_exporter": "1MiB", "max_bytes": "512KiB"},
         "templates.max_bytes_per_exporter"),
        ({"hold_bytes_per_exporter": "32MiB"}, "templates.hold_bytes_per_exporter"),
    ],
)  # fmt: skip
def test_a_bound_per_exporter_above_its_total_names_the_per_exporter_key(
    table: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match="must not be larger than") as raised:
        load({"templates": table}, environ={})
    assert raised.value.key == key


def test_an_unknown_key_in_the_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown key templates\.max_templates") as raised:
        load({"templates": {"max_templates": 5}}, environ={})
    assert raised.value.key == "templates.max_templates"


def test_built_directly_the_same_check_applies() -> None:
    wrong: Any = "address-and-port"
    with pytest.raises(ConfigError, match=r"templates\.scope must be one of address"):
        TemplatesConfig(scope=wrong)
    assert TemplatesConfig(scope="address-port").scope is TemplateScopeMode.ADDRESS_PORT  # type: ignore[arg-type]


def test_a_configuration_with_templates_round_trips_through_the_workers_document() -> None:
    table = {
        "scope": "address-port", "max_age": 7200.5, "persist": False, "max_per_exporter": 7,
        "max_total": 70_000, "max_bytes_per_exporter": 100_000, "max_bytes": "16MiB",
        "hold_age": 1, "hold_bytes_per_exporter": "3MiB", "hold_bytes": 123_456_789,
    }  # fmt: skip
    config = load({"templates": table}, environ={})
    written = json.loads(json.dumps(to_document(config)))
    assert load(written, environ={}) == config
    assert written["templates"]["max_bytes_per_exporter"] == 100_000
    assert written["templates"]["max_bytes"] == "16MiB"
