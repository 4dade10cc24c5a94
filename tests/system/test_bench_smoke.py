"""A short run of the end-to-end benchmark harness (bench/e2e.py) so that it cannot rot.

Not a speed test: 2,000 records/s for 2 s through a fresh ``relay run`` into ``openssl
s_server`` over mutual TLS, asserting what the benchmark itself calls zero loss (every record
sent delivered, decoded, no kernel drops, the generator on schedule) and that the latency
sampler saw the stream.
"""

from __future__ import annotations

import json
import shutil
import socket
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


def test_profile_lines_are_charged_to_their_stage(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (trio/_core/_run.py:10);_drain (/x/relay/receiver.py:1);"
        "build_lines (<render v5 json>:3) 6\n"
        "run (trio/_core/_run.py:10);_drain (relay/receiver.py:1) 2\n"
        "run (trio/_core/_run.py:10);_send_loop (relay/forward.py:9);"
        "send_all (trio/_ssl.py:4) 1\n"
        "run (trio/_core/_run.py:10);epoll (trio/_core/_io_epoll.py:2) 1\n"
    )
    stages, functions, samples = e2e.profile_stages(raw)
    assert samples == 10
    assert stages == {
        "decode+render": 0.6,
        "receive (recvfrom)": 0.2,
        "forward (TLS)": 0.1,
        "trio event loop / other": 0.1,
    }
    assert functions["build_lines (<render v5 json>)"] == 0.6


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
