"""ForwarderConfig and ForwardSettings: the one validation of the forwarder's values, with the
file's bounds and defaults, whether built from the file or directly."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from relay import config as file_config
from relay.errors import ConfigError
from relay.forward import Endpoint, ForwarderConfig
from relay.forward.config import MAX_BATCH_BYTES, MIN_BATCH_BYTES, ForwardSettings
from relay.framing import Framing
from relay.service import forwarder_config

ONE = (Endpoint(host="127.0.0.1", port=6514),)
ENDPOINT = [{"host": "127.0.0.1", "port": 6514}]


def test_a_batch_below_the_minimum_is_refused_alike_from_the_file_and_directly() -> None:
    ForwarderConfig(endpoints=ONE, ssl_context=None, batch_bytes=MIN_BATCH_BYTES)
    with pytest.raises(ConfigError, match=r"forward\.batch_size must be at least 65536"):
        ForwarderConfig(endpoints=ONE, ssl_context=None, batch_bytes=MIN_BATCH_BYTES - 1)
    with pytest.raises(ConfigError, match=r"forward\.batch_size must be at least 65536"):
        file_config.load({"forward": {"batch_size": MIN_BATCH_BYTES - 1}}, environ={})
    with pytest.raises(ConfigError, match=r"forward\.batch_size must be at most"):
        ForwardSettings(batch_bytes=MAX_BATCH_BYTES + 1)


def test_a_drain_timeout_of_zero_is_valid_and_negative_or_infinite_ones_are_not() -> None:
    assert ForwarderConfig(endpoints=ONE, ssl_context=None, drain_timeout=0).drain_timeout == 0
    assert (
        file_config.load({"forward": {"drain_timeout": 0}}, environ={}).forward.drain_timeout == 0
    )
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"forward\.drain_timeout"):
            ForwarderConfig(endpoints=ONE, ssl_context=None, drain_timeout=bad)
        with pytest.raises(ConfigError, match=r"forward\.drain_timeout"):
            file_config.load({"forward": {"drain_timeout": bad}}, environ={})


def test_the_defaults_of_the_file_and_of_the_forwarder_are_the_same_values() -> None:
    """They were not: drain_timeout was 10 s from the file and 5 s built directly."""
    loaded = forwarder_config(file_config.load({"endpoint": ENDPOINT}, environ={}), None)
    direct = ForwarderConfig(endpoints=ONE, ssl_context=None, client_certificate=False)
    assert loaded == direct
    assert direct.drain_timeout == 10.0


@pytest.mark.parametrize("name", ["connect_timeout", "stall_timeout", "ack_poll_interval"])
def test_times_must_be_positive_and_finite(name: str) -> None:
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match=name):
            ForwarderConfig(endpoints=ONE, ssl_context=None, **{name: bad})  # type: ignore[arg-type]


def test_every_setting_from_the_file_reaches_the_forwarder() -> None:
    forward = {
        "backoff_initial": 0.25, "backoff_max": 7.0, "connect_timeout": 3.0,
        "primary_retry_interval": 60.0, "batch_size": "1MiB", "drain_timeout": 2.5,
        "stall_timeout": 7.5, "failover_after": 2,
    }  # fmt: skip
    doc = {"forward": forward, "output": {"framing": "octet-counting"}, "endpoint": ENDPOINT}
    built = forwarder_config(file_config.load(doc, environ={}), None)
    assert dataclasses.asdict(built) | {"ssl_context": None} == dataclasses.asdict(
        ForwarderConfig(
            endpoints=ONE,
            ssl_context=None,
            framing=Framing.OCTET_COUNTING,
            client_certificate=False,
            batch_bytes=1 << 20,
            **{k: v for k, v in forward.items() if k != "batch_size"},  # type: ignore[arg-type]
        )
    )
    assert built.framing is Framing.OCTET_COUNTING


def test_framing_given_as_its_word_is_taken_as_the_enum() -> None:
    config = ForwarderConfig(endpoints=ONE, ssl_context=None, framing="octet-counting")  # type: ignore[arg-type]
    assert config.framing is Framing.OCTET_COUNTING


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stall_timeout", 1),
        ("stall_timeout", "20"),
        ("stall_timeout", 1e9),
        ("failover_after", 0),
        ("failover_after", 2.5),
        ("failover_after", True),
        ("primary_retry_interval", 0.5),
        ("connect_timeout", 0.01),
        ("backoff_initial", True),
    ],
)
def test_bad_forward_values_are_one_sentence_naming_the_key_from_the_file_and_directly(
    key: str, value: object
) -> None:
    with pytest.raises(ConfigError, match=f"forward.{key} must be"):
        file_config.load({"forward": {key: value}}, environ={})
    settings: Any = {key: value}
    with pytest.raises(ConfigError, match=f"forward.{key} must be"):
        ForwardSettings(**settings)
