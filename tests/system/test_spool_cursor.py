"""A real ``relay run`` over a spool whose saved state cannot be trusted (issue 10, defects 4-6).

- A well-formed cursor (valid CRC) naming a segment far past the newest one, as a restored
  backup or two mixed-up spools leave: every pending line is sent, nothing deleted unsaid.
- A plausible cursor inside a frame: the segment is not cut; the lines from that frame on
  are sent.
- A segment written by a future format version: the start is refused with one sentence
  (exit 78) and the file is left as it was.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import trio
from support.relayproc import LOOPBACK, RelayProcess, relay_processes

from relay.certs import TlsFiles
from relay.errors import EX_CONFIG
from relay.spool import FsyncPolicy, Spool, codec
from relay.spool.codec import FILE_HEADER_SIZE, FRAME_HEADER_SIZE

from .test_spool_faults import relay_args, sink_on, write_config

LINES = [b"<14>Dec  2 13:04:05 10.0.0.1 netstat.netflow.lt: line %05d" % i for i in range(3000)]
LINE_ID = re.compile(rb"line (\d{5})$")


def spool_with(directory: Path, lines: list[bytes]) -> None:
    with Spool.open(directory, fsync=FsyncPolicy.NEVER) as spool:
        for i in range(0, len(lines), 100):
            assert spool.append(lines[i : i + 100]) == len(lines[i : i + 100])


def write_cursor(directory: Path, segment: int, offset: int, index: int) -> None:
    """A cursor file as another spool (or a backup) would have it: well formed, CRC valid."""
    (directory / "cursor").write_bytes(codec.encode_cursor(segment, offset, index))


def only_segment(directory: Path) -> Path:
    (segment,) = sorted(directory.glob("*.seg"))
    return segment


async def deliver(
    tmp_path: Path, spool: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> tuple[set[int], RelayProcess]:
    """Start a relay on ``spool`` with a sink, wait until nothing is pending, stop it; the
    ids of the lines the sink received."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    with relay_processes() as made:
        async with sink_on(port, tls_server, tls_ca, keep_lines=None) as sink:
            relay = RelayProcess(
                relay_args(write_config(tmp_path), spool, port, tls_client),
                tmp_path / "relay.log",
            )
            made.append(relay)
            await relay.start_async()
            await relay.wait_metric_async("flowrelay_spool_pending_lines", 0, timeout=30)
            await sink.wait_lines(1, timeout=10)
            relay.signal(15)
            assert await relay.wait_async(timeout=15) == 0, relay.log_tail()
            await trio.sleep(0)
            ids = set()
            for line in sink.lines:
                m = LINE_ID.search(line)
                assert m, line
                ids.add(int(m.group(1)))
    return ids, relay


async def test_a_cursor_past_the_last_segment_resends_every_pending_line(
    tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    spool = tmp_path / "spool"
    spool_with(spool, LINES)
    write_cursor(spool, 999_999_999, FILE_HEADER_SIZE, 0)
    ids, relay = await deliver(tmp_path, spool, tls_server, tls_ca, tls_client)
    assert ids == set(range(len(LINES))), f"{len(LINES) - len(ids)} lines never delivered"
    assert relay.events("spool_cursor_invalid"), relay.log_tail()
    # Anything deleted on open is said: here nothing had to be.
    assert len(relay.events("spool_segment_deleted")) == 0


async def test_a_cursor_inside_a_frame_cuts_nothing_and_sends_from_that_frame(
    tmp_path: Path, tls_server: TlsFiles, tls_ca: TlsFiles, tls_client: TlsFiles
) -> None:
    spool = tmp_path / "spool"
    spool_with(spool, LINES)
    frame = FRAME_HEADER_SIZE + len(LINES[0])
    # Plausible: inside the 11th frame, with a line index in range.
    write_cursor(spool, int(only_segment(spool).stem), FILE_HEADER_SIZE + 10 * frame + 5, 10)
    ids, relay = await deliver(tmp_path, spool, tls_server, tls_ca, tls_client)
    lost = set(range(10, len(LINES))) - ids
    assert not lost, f"{len(lost)} lines at or after the cursor were lost (the segment was cut)"
    assert not relay.events("spool_tail_cut"), relay.log_tail()


def test_a_segment_of_a_future_format_refuses_the_start_and_is_kept(
    tmp_path: Path, tls_client: TlsFiles
) -> None:
    spool = tmp_path / "spool"
    spool_with(spool, LINES[:100])
    foreign = spool / "000000000009.seg"
    data = b"FRSPOOL2" + (9).to_bytes(8, "little") + b"future frames"
    foreign.write_bytes(data)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "run",
            *relay_args(write_config(tmp_path), spool, 9, tls_client),
        ],
        capture_output=True,
        text=True,
        timeout=15,  # the refusal comes before anything is bound
        check=False,
    )
    assert run.returncode == EX_CONFIG, run.stderr
    message = [line for line in run.stderr.splitlines() if "another version" in line]
    assert message, run.stderr
    assert "Traceback" not in run.stderr
    assert foreign.read_bytes() == data
