"""``relay decode``: what the relay would send for captured or saved datagrams."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from relay.addresses import exporter_address
from relay.errors import DecodeError
from relay.pcap import CaptureError, UdpDatagram, Unreadable, is_capture, read_capture
from relay.render import Renderer


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeSummary:
    datagrams: int
    records: int
    invalid: int
    unreadable_files: int


def decode_files(
    paths: Iterable[Path],
    *,
    renderer: Renderer,
    exporter: str,
    port: int | None,
    out: BinaryIO,
    err: TextIO,
) -> DecodeSummary:
    """Print one line per record of every file; name each invalid datagram on ``err``.

    A capture (pcap/pcapng) gives each datagram's exporter itself; any other file is one raw
    UDP payload from ``exporter``.
    """
    datagrams = records = invalid = unreadable = 0
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            err.write(f"{path}: cannot read: {exc.strerror or exc}\n")
            unreadable += 1
            continue
        if is_capture(data):
            items: list[tuple[str, str, bytes | None, str | None]] = []
            try:
                for item in read_capture(data):
                    if port is not None and isinstance(item, UdpDatagram) and item.dst_port != port:
                        continue
                    where = f"{path}: packet {item.number}"
                    if isinstance(item, Unreadable):
                        items.append((where, item.src, None, item.reason))
                    else:
                        items.append((where, item.src, item.payload, None))
            except CaptureError as exc:
                err.write(f"{path}: {exc}\n")
                unreadable += 1
        else:
            items = [(str(path), exporter, data, None)]
        for where, source, payload, problem in items:
            datagrams += 1
            if payload is None:
                invalid += 1
                err.write(f"{where}: from {source}: {problem}\n")
                continue
            try:
                rendered = renderer.render_datagram(payload, exporter_address(source))
            except DecodeError as exc:
                invalid += 1
                err.write(f"{where}: from {source}: invalid ({exc.reason}): {exc}\n")
                continue
            records += len(rendered.lines)
            for warning in rendered.warnings:
                detail = f"{rendered.trailing_bytes} bytes" if warning == "trailing_bytes" else ""
                err.write(f"{where}: from {source}: warning {warning} {detail}".rstrip() + "\n")
            out.write(b"".join(line + b"\n" for line in rendered.lines))
    return DecodeSummary(
        datagrams=datagrams, records=records, invalid=invalid, unreadable_files=unreadable
    )
