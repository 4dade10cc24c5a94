"""ForwarderConfig: the one validation of the forwarder's values, with the file's bounds."""

from __future__ import annotations

import pytest

from relay import config as file_config
from relay.errors import ConfigError
from relay.forward import Endpoint, ForwarderConfig
from relay.forward.config import MIN_BATCH_BYTES
from relay.service import forwarder_config

ONE = (Endpoint(host="127.0.0.1", port=6514),)


def test_a_batch_below_the_file_minimum_is_refused_as_the_file_refuses_it() -> None:
    ForwarderConfig(endpoints=ONE, ssl_context=None, batch_bytes=MIN_BATCH_BYTES)
    with pytest.raises(ConfigError, match="batch_bytes"):
        ForwarderConfig(endpoints=ONE, ssl_context=None, batch_bytes=MIN_BATCH_BYTES - 1)


def test_a_drain_timeout_of_zero_is_valid_and_negative_or_infinite_ones_are_not() -> None:
    assert ForwarderConfig(endpoints=ONE, ssl_context=None, drain_timeout=0).drain_timeout == 0
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="drain_timeout"):
            ForwarderConfig(endpoints=ONE, ssl_context=None, drain_timeout=bad)


@pytest.mark.parametrize("name", ["connect_timeout", "stall_timeout", "ack_poll_interval"])
def test_times_must_be_positive_and_finite(name: str) -> None:
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match=name):
            ForwarderConfig(endpoints=ONE, ssl_context=None, **{name: bad})  # type: ignore[arg-type]


def test_stall_timeout_and_failover_after_come_from_the_file() -> None:
    doc = {
        "forward": {"stall_timeout": 7.5, "failover_after": 2},
        "endpoint": [{"host": "127.0.0.1", "port": 6514}],
    }
    forward = forwarder_config(file_config.load(doc), None)
    assert (forward.stall_timeout, forward.failover_after) == (7.5, 2)
    defaults = forwarder_config(file_config.load({"endpoint": doc["endpoint"]}), None)
    assert (defaults.stall_timeout, defaults.failover_after) == (20.0, 3)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stall_timeout", 1),
        ("stall_timeout", "20"),
        ("stall_timeout", 1e9),
        ("failover_after", 0),
        ("failover_after", 2.5),
        ("failover_after", True),
    ],
)
def test_bad_stall_timeout_or_failover_after_is_one_sentence_naming_the_key(
    key: str, value: object
) -> None:
    with pytest.raises(ConfigError, match=f"forward.{key} must be"):
        file_config.load({"forward": {key: value}})
