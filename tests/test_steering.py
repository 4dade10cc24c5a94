"""Steering exporters to workers by source address: the cBPF program checked by a small
interpreter, then the real kernel's reuseport group on loopback."""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import steering
from relay.addresses import HostPort
from relay.receiver import open_udp_socket
from relay.steering import SKF_NET_OFF, Instruction, pack, program, worker_index

MASK = 0xFFFFFFFF


def run_cbpf(code: list[Instruction], network_header: bytes, payload: bytes) -> int:
    """The subset of classic BPF the steering program may use, as the kernel runs it for
    SO_ATTACH_REUSEPORT_CBPF: absolute loads at or above SKF_NET_OFF read the network header,
    other absolute loads read the UDP payload. Independent of relay.steering's constants."""
    a = x = 0
    for code_, jt, jf, k in code:
        assert (jt, jf) == (0, 0), "the program never jumps"
        if code_ == 0x20:  # ld [k]
            offset = k - (1 << 32) if k & 0x80000000 else k
            data, start = (
                (network_header, offset - SKF_NET_OFF)
                if offset >= SKF_NET_OFF
                else (payload, offset)
            )
            assert 0 <= start <= len(data) - 4, "a load the kernel would abort"
            a = struct.unpack_from("!I", data, start)[0]
        elif code_ == 0x07:  # tax
            x = a
        elif code_ == 0xAC:  # xor x
            a ^= x
        elif code_ == 0x24:  # mul #k
            a = (a * k) & MASK
        elif code_ == 0x74:  # rsh #k
            a >>= k
        elif code_ == 0x16:  # ret a
            return a
        else:
            raise AssertionError(f"opcode {code_:#x} not in the interpreter")
    raise AssertionError("the program fell off its end")


def ip_header(source: str) -> bytes:
    """A minimal IP header from ``source`` to the loopback address of its family."""
    address = ipaddress.ip_address(source)
    if address.version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, address.packed,
                           ipaddress.ip_address("127.0.0.1").packed)  # fmt: skip
    return struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, address.packed,
                       ipaddress.ip_address("::1").packed)  # fmt: skip


def test_the_ipv4_program_hashes_the_source_address_word_into_a_worker_index() -> None:
    assert program(socket.AF_INET, 4) == [
        (0x20, 0, 0, 0xFFF0000C),  # ld [net + 12]: the source address
        (0x24, 0, 0, 0x9E3779B1),
        (0x74, 0, 0, 16),
        (0x24, 0, 0, 4),
        (0x74, 0, 0, 16),
        (0x16, 0, 0, 0),
    ]


def test_the_ipv6_program_folds_the_four_source_words_before_hashing() -> None:
    loads = [k for code, _, _, k in program(socket.AF_INET6, 3) if code == 0x20]
    assert loads == [0xFFF00008, 0xFFF0000C, 0xFFF00010, 0xFFF00014]


def test_instructions_pack_as_eight_byte_sock_filters() -> None:
    packed = pack([(0x20, 1, 2, 0xFFF0000C), (0x16, 0, 0, 0)])
    assert packed == struct.pack("=HBBIHBBI", 0x20, 1, 2, 0xFFF0000C, 0x16, 0, 0, 0)


@pytest.mark.parametrize("workers", [0, 1, 65])
def test_a_program_for_fewer_than_two_or_more_than_64_workers_is_refused(workers: int) -> None:
    with pytest.raises(ValueError, match="2 to 64 workers"):
        program(socket.AF_INET, workers)


addresses = st.ip_addresses().map(str)


@given(address=addresses, workers=st.integers(2, 64), payload=st.binary(max_size=64))
def test_the_program_returns_the_worker_index_of_the_source_address_for_any_packet(
    address: str, workers: int, payload: bytes
) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    index = run_cbpf(program(family, workers), ip_header(address), payload)
    assert index == worker_index(address, workers)
    assert 0 <= index < workers


def test_neighbouring_addresses_spread_evenly_over_workers() -> None:
    for workers in (2, 3, 4, 8):
        counts = [0] * workers
        for host in range(1, 255):
            counts[worker_index(f"10.1.2.{host}", workers)] += 1
        assert max(counts) - min(counts) <= 254 // workers // 10, (workers, counts)


def reuseport_group_member(host: str, port: int, workers: int) -> socket.socket:
    """A relay socket as a worker opens it: on ``port`` (0: a new one), steered."""
    return open_udp_socket(
        HostPort(host=host, port=port),
        receive_buffer=1 << 20,
        reuse_port=True,
        steer_workers=workers,
    )


def reuseport_group(host: str, size: int) -> list[socket.socket]:
    """``size`` relay sockets on one port of ``host``, steered, in the group's join order."""
    group = [reuseport_group_member(host, 0, size)]
    port = group[0].getsockname()[1]
    group += [reuseport_group_member(host, port, size) for _ in range(size - 1)]
    return group


def send_from(sources: list[str], ports_each: int, host: str, port: int) -> int:
    """One datagram naming its source address from each of ``ports_each`` ports per source."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sent = 0
    for source in sources:
        for _ in range(ports_each):
            with socket.socket(family, socket.SOCK_DGRAM) as out:
                out.bind((source, 0))
                out.sendto(source.encode(), (host, port))
                sent += 1
    return sent


def receive(group: list[socket.socket], expected: int) -> dict[str, set[int]]:
    """For each source address, the positions of the sockets its datagrams reached."""
    seen: dict[str, set[int]] = {}
    count = 0
    deadline = time.monotonic() + 3.0
    while count < expected and time.monotonic() < deadline:
        readable, _, _ = select.select(group, [], [], 0.2)
        for sock in readable:
            data, source = sock.recvfrom(64)
            assert data.decode() == source[0]
            seen.setdefault(source[0], set()).add(group.index(sock))
            count += 1
    assert count == expected, f"{count} of {expected} datagrams arrived"
    return seen


def test_every_datagram_of_one_ipv4_address_reaches_one_socket_of_the_group() -> None:
    group = reuseport_group("127.0.0.1", 4)
    try:
        sources = [f"127.0.0.{host}" for host in range(1, 21)]
        sent = send_from(sources, 12, "127.0.0.1", group[0].getsockname()[1])
        seen = receive(group, sent)
    finally:
        for sock in group:
            sock.close()
    assert seen == {source: {worker_index(source, 4)} for source in sources}
    assert len(set().union(*seen.values())) > 1


def test_every_datagram_of_ipv6_loopback_reaches_one_socket_whatever_its_port() -> None:
    group = reuseport_group("::1", 3)
    try:
        sent = send_from(["::1"], 40, "::1", group[0].getsockname()[1])
        seen = receive(group, sent)
    finally:
        for sock in group:
            sock.close()
    assert seen == {"::1": {worker_index("::1", 3)}}


def test_a_socket_outside_a_reuseport_group_warns_once_and_stays_usable(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steering, "_warned", False)
    caplog.set_level(logging.WARNING, logger="relay.steering")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind(("127.0.0.1", 0))
        assert not steering.steer(plain, 4)  # the kernel says EINVAL: no group to steer
        assert not steering.steer(plain, 4)
        plain.sendto(b"still", plain.getsockname())
        assert plain.recv(16) == b"still"
    events = [getattr(record, "event", None) for record in caplog.records]
    assert events == ["worker_steering_unavailable"]


def test_a_restarted_worker_takes_the_last_position_and_the_last_one_fills_its_gap() -> None:
    """What README says of a worker restart: the kernel moves the group's last socket into
    the freed position, sends the last position's exporters by its own hash until a socket
    joins again, and the new socket joins last."""
    group = reuseport_group("127.0.0.1", 4)
    port = group[0].getsockname()[1]
    sources = [f"127.0.0.{host}" for host in range(1, 31)]
    group[1].close()
    try:
        survivors = [group[0], group[3], group[2]]  # positions 0, 1 (moved), 2
        seen = receive(survivors, send_from(sources, 6, "127.0.0.1", port))
        for source in sources:
            if worker_index(source, 4) < 3:
                assert seen[source] == {worker_index(source, 4)}, source
        rejoined = reuseport_group_member("127.0.0.1", port, 4)
        order = [*survivors, rejoined]
        seen = receive(order, send_from(sources, 6, "127.0.0.1", port))
        assert seen == {source: {worker_index(source, 4)} for source in sources}
        rejoined.close()
    finally:
        for sock in (group[0], group[2], group[3]):
            sock.close()
