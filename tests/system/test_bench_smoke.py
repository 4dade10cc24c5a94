"""A short run of the end-to-end benchmark harness (bench/e2e.py) so that it cannot rot.

Not a speed test: 2,000 records/s for 2 s through a fresh ``relay run`` into ``openssl
s_server`` over mutual TLS (NetFlow v5, and v9 with its template datagrams), asserting what
the benchmark itself calls zero loss (every record sent delivered, decoded, no kernel drops,
no sequence gap, the generator on schedule) and that the latency sampler saw the stream.
"""

from __future__ import annotations

import array
import json
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench import e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is needed")
def test_harness_measures_zero_loss_at_a_small_rate(tmp_path: Path) -> None:
    bench = e2e.Bench(tmp_path)
    trial = bench.trial("openssl", 2_000, 2.0)
    assert trial.sent == int(2_000 / 30 * 2) * 30  # whole datagrams
    assert trial.delivered == trial.sent, trial.describe()
    assert trial.decoded == trial.sent
    assert trial.kernel_drops == 0
    assert trial.zero_loss, trial.describe()
    assert 0 < trial.peak_rss < 500 << 20
    # Latency was sampled from the endpoint's file and joined with the send times.
    assert 0 < trial.latency_p50 < 5.0, trial.describe()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is needed")
def test_harness_measures_zero_loss_for_netflow_v9_at_a_small_rate(tmp_path: Path) -> None:
    bench = e2e.Bench(tmp_path, version=9)
    trial = bench.trial("openssl", 2_000, 2.0)
    assert trial.version == 9
    assert trial.sent == int(2_000 / 30 * 2) * 30  # whole flow datagrams, templates aside
    assert trial.delivered == trial.sent, trial.describe()
    assert trial.decoded == trial.sent
    assert trial.kernel_drops == 0
    assert trial.sequence_lost == 0, trial.describe()  # v9 counts datagrams, templates too
    assert trial.zero_loss, trial.describe()
    assert 0 < trial.latency_p50 < 5.0, trial.describe()


def test_profile_lines_are_charged_to_their_stage(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (trio/_core/_run.py:10);_drain (/x/relay/receiver.py:1);"
        "build_lines (<render v5 json>:3) 6\n"
        "run (trio/_core/_run.py:10);_drain (relay/receiver.py:1) 2\n"
        "run (trio/_core/_run.py:10);_send_loop (relay/forward.py:9);"
        "send_all (trio/_ssl.py:4) 1\n"
        "run (trio/_core/_run.py:10);_send_raw (relay/forward/link.py:9) 1\n"
        "run (trio/_core/_run.py:10);epoll (trio/_core/_io_epoll.py:2) 1\n"
    )
    stages, functions, samples = e2e.profile_stages(raw)
    assert samples == 11
    assert stages == {
        "decode+render": 6 / 11,
        "receive (recvfrom)": 2 / 11,
        "forward (TLS)": 2 / 11,  # relay/forward.py, and the relay/forward/ package
        "trio event loop / other": 1 / 11,
    }
    assert functions["build_lines (<render v5 json>)"] == 6 / 11


def test_load_generator_spreads_over_its_sockets() -> None:
    """--sockets N sends from N source ports in turn (what --workers needs to be spread)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        port = sink.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable, "-m", "bench.loadgen", "--to", f"127.0.0.1:{port}",
                "--rate", "3000", "--seconds", "0.2", "--sockets", "3",
            ],
            capture_output=True, check=True, timeout=30, cwd=REPO,
        )  # fmt: skip
        sent = json.loads(run.stdout)
        sources = []
        for _ in range(int(sent["packets"])):
            data, source = sink.recvfrom(65535)
            assert len(data) == 24 + 30 * 48
            sources.append(source[1])
    assert len(set(sources)) == 3
    # In turn: every third datagram from the same port.
    assert sources[:3] * (len(sources) // 3) == sources[: 3 * (len(sources) // 3)]


def _receive_load(
    version: int, every: int, packets: int, tmp_path: Path
) -> tuple[list[bytes], dict[str, int], array.array[float]]:
    """Run the load generator for ``packets`` flow datagrams into a socket; what came."""
    times = tmp_path / "times.bin"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sink.settimeout(5)
        port = sink.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable, "-m", "bench.loadgen", "--to", f"127.0.0.1:{port}",
                "--rate", str(packets * 30 * 4), "--seconds", "0.25",
                "--version", str(version), "--template-every", str(every),
                "--first-sequence", "1000", "--times", str(times),
            ],
            capture_output=True, check=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        sent = json.loads(run.stdout)
        total = int(sent["packets"]) + int(sent["template_packets"])
        datagrams = [sink.recv(65535) for _ in range(total)]
    pairs = array.array("d")
    pairs.frombytes(times.read_bytes())
    return datagrams, sent, pairs


@pytest.mark.parametrize("version", [9, 10])
def test_load_generator_sends_templates_first_and_every_n_with_the_protocol_sequence(
    version: int, tmp_path: Path
) -> None:
    every = 3
    datagrams, sent, pairs = _receive_load(version, every, 10, tmp_path)
    assert int(sent["packets"]) == 10
    # T D D D T D D D T D D D T D: the template datagram before flow datagrams 0, 3, 6, 9.
    assert int(sent["template_packets"]) == 4
    header = struct.Struct("!HHIIII" if version == 9 else "!HHIII")
    first_set = header.size  # the first set's ID: 0 / 2 for a template set
    template_set = 0 if version == 9 else 2
    kinds = []
    sequences = []
    for data in datagrams:
        fields = header.unpack_from(data)
        assert fields[0] == version
        sequences.append(fields[4 if version == 9 else 3])
        kinds.append("T" if struct.unpack_from("!H", data, first_set)[0] == template_set else "D")
    assert "".join(kinds) == "TDDD" * 3 + "TD"
    expected, sequence = [], 1000
    for kind in kinds:
        expected.append(sequence)
        if version == 9:
            sequence += 1  # every export packet (RFC 3954 §5.1)
        elif kind == "D":
            sequence += 30  # data records (RFC 7011 §3.1) ...
        else:
            sequence += 49  # ... options records too: sampling, init time, 47 interfaces
    assert sequences == expected
    # The times file pairs every flow datagram's sequence with its send time, in order.
    flow_sequences = [s for k, s in zip(kinds, sequences, strict=True) if k == "D"]
    assert [int(s) for s in pairs[0::2]] == flow_sequences
    assert list(pairs[1::2]) == sorted(pairs[1::2])


def test_load_generator_sources_are_exporters_of_their_own(tmp_path: Path) -> None:
    """--sources N: 127.0.0.1..N in turn, each with its own templates and v9 sequence, and
    the times keyed by source, as the relay (steering workers by address) sees them."""
    times = tmp_path / "times.bin"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        port = sink.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable, "-m", "bench.loadgen", "--to", f"127.0.0.1:{port}",
                "--rate", str(12 * 30 * 4), "--seconds", "0.25", "--version", "9",
                "--template-every", "2", "--sources", "3", "--times", str(times),
            ],
            capture_output=True, check=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        sent = json.loads(run.stdout)
        assert (sent["packets"], sent["template_packets"], sent["streams"]) == (12, 6, 3)
        received = [sink.recvfrom(65535) for _ in range(18)]
    by_source: dict[str, list[tuple[str, int]]] = {}
    for data, (address, _) in received:
        kind = "T" if struct.unpack_from("!H", data, 20)[0] == 0 else "D"
        sequence = struct.unpack_from("!HHIIII", data)[4]
        by_source.setdefault(address, []).append((kind, sequence))
    assert sorted(by_source) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    for stream in by_source.values():
        # Four flow datagrams each, the templates before the first and the third.
        assert stream == [("T", 0), ("D", 1), ("D", 2), ("T", 3), ("D", 4), ("D", 5)]
    pairs = array.array("d")
    pairs.frombytes(times.read_bytes())
    keys = sorted(int(k) for k in pairs[0::2])
    assert keys == sorted(source << 32 | s for source in range(3) for s in (1, 2, 4, 5))
