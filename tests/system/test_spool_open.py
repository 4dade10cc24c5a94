"""A real ``relay run`` reports what its spool's open did: the segments it deleted are on
/metrics as flowrelay_spool_segments_deleted_on_open_total, each one also logged."""

from __future__ import annotations

import socket
from pathlib import Path

from support.relayproc import RelayProcess, relay_processes

from relay.certs import TlsFiles
from relay.spool import Spool

from .test_spool_faults import relay_args, write_config


def test_segments_deleted_on_open_are_on_metrics_and_in_the_log(
    tmp_path: Path, tls_client: TlsFiles
) -> None:
    spool = tmp_path / "spool"
    with Spool.open(spool) as written:
        assert written.append([b"<14>kept %d" % i for i in range(100)]) == 100
    (last,) = sorted(int(p.stem) for p in spool.glob("*.seg"))
    # What a crash right after a rotation leaves (an empty file), and a damaged header.
    (spool / f"{last + 1:012d}.seg").touch()
    (spool / f"{last + 2:012d}.seg").write_bytes(b"not a spool segment header at all")
    config = write_config(tmp_path)
    with (
        relay_processes() as made,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved,
    ):
        reserved.bind(("127.0.0.1", 0))  # the endpoint refuses: the 100 lines stay pending
        relay = RelayProcess(
            relay_args(config, spool, reserved.getsockname()[1], tls_client),
            tmp_path / "relay.log",
        )
        made.append(relay)
        relay.start()
        scraped = relay.scrape()
        assert scraped.types.get("flowrelay_spool_segments_deleted_on_open_total") == "counter"
        assert scraped.total("flowrelay_spool_segments_deleted_on_open_total") == 2
        assert scraped.total("flowrelay_spool_pending_lines") == 100
        deleted = relay.events("spool_segment_deleted")
        assert sorted(Path(e["path"]).name for e in deleted) == [
            f"{last + 1:012d}.seg",
            f"{last + 2:012d}.seg",
        ]
        relay.signal(15)
        assert relay.wait(timeout=15) == 0, relay.log_tail()
