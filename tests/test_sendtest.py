"""``relay send-test --version 9|10`` over real UDP on loopback: the templates and options
come first, then the data; every data set decodes with the templates sent before it; and the
sequence numbers follow each protocol's rule (v9 +1 per datagram, IPFIX + data records)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from relay.flows.messages import parse
from relay.flows.model import Message
from relay.flows.records import decode_records, plan_for
from relay.flows.template import Template

FLOW_TEMPLATES = {256, 257}


def receive_all(sock: socket.socket, first_timeout: float = 5) -> list[bytes]:
    """Every datagram until the sender has been quiet for a moment (bounded: 10,000)."""
    sock.settimeout(first_timeout)
    out = [sock.recvfrom(65535)[0]]
    sock.settimeout(0.3)
    for _ in range(10_000):
        try:
            out.append(sock.recvfrom(65535)[0])
        except TimeoutError:
            break
    return out


def decode_stream(datagrams: list[bytes]) -> tuple[list[Message], dict[int, int]]:
    """The messages, and how many records each template's data sets held; fails on data
    whose template did not come first."""
    known: dict[int, Template] = {}
    messages = [parse(d) for d in datagrams]
    records: dict[int, int] = {}
    for message in messages:
        assert message.problems == ()
        known.update((t.template_id, t) for t in message.templates)
        for data_set in message.data_sets:
            assert data_set.template_id in known, "data before its template"
            plan = plan_for(known[data_set.template_id], message.header.version)
            decoded, problems = decode_records(plan, data_set.data)
            assert problems == ()
            records[data_set.template_id] = records.get(data_set.template_id, 0) + len(decoded)
    return messages, records


def data_records(message: Message, known: dict[int, Template]) -> int:
    return sum(
        len(decode_records(plan_for(known[s.template_id], 10), s.data)[0])
        for s in message.data_sets
    )


@pytest.fixture
def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.parametrize("version", [9, 10])
def test_send_test_sends_templates_and_options_first_then_data_with_the_right_sequence(
    capsys: pytest.CaptureFixture[str], receiver: socket.socket, version: int
) -> None:
    port = receiver.getsockname()[1]
    with receiver:
        code = main(["send-test", "--to", f"127.0.0.1:{port}", "--version", str(version),
                     "--count", "25", "--records", "7", "--rate", "0"])  # fmt: skip
        out, err = capsys.readouterr()
        datagrams = receive_all(receiver)
    assert code == 0, err
    # 25 data datagrams; templates before the first and again before the 21st.
    assert len(datagrams) == 27
    messages, records = decode_stream(datagrams)
    first = messages[0]
    assert {t.template_id for t in first.templates if not t.options} == FLOW_TEMPLATES
    option_ids = {t.template_id for t in first.templates if t.options}
    assert option_ids
    assert {s.template_id for s in first.data_sets} == option_ids  # options data too
    assert [bool(m.templates) for m in messages] == [True] + [False] * 20 + [True] + [False] * 5
    assert sum(records[t] for t in FLOW_TEMPLATES & records.keys()) == 25 * 7
    known = {t.template_id: t for t in first.templates}
    for before, after in itertools.pairwise(messages):
        step = (after.header.flow_sequence - before.header.flow_sequence) & 0xFFFFFFFF
        assert step == (1 if version == 9 else data_records(before, known))
    assert all(m.header.version == version for m in messages)
    assert f"sent 25 NetFlow v{version} datagrams (175 flow records) after 2 of templates" in out


def test_python_m_relay_send_test_v10_reaches_a_socket_and_decodes() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "relay", "send-test", "--to", f"[::1]:{port}",
             "--version", "10", "--count", "3"],
            capture_output=True, text=True, timeout=30, check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        datagrams = receive_all(sock)
    messages, records = decode_stream(datagrams)
    assert len(messages) == 4
    assert sum(records[t] for t in FLOW_TEMPLATES & records.keys()) == 3 * 12  # the default
    assert all(len(d) <= 1500 - 48 for d in datagrams[1:])  # data fits an MTU over IPv6
    assert "sent 3 NetFlow v10 datagrams (36 flow records)" in result.stdout
