"""Steer every datagram of one exporter address to one worker's socket.

With ``workers = N`` the workers bind the same UDP port with SO_REUSEPORT, and by default
the kernel picks a socket by a hash of the whole 4-tuple. An exporter that sends templates
or options from another source port than its data (SPEC: exporters do) would then reach two
workers, each with its own template cache, options state and sequence tracking. So each
socket attaches a classic BPF program to its reuseport group (SO_ATTACH_REUSEPORT_CBPF,
Linux >= 4.5) that returns a socket index computed from the source ADDRESS only.

The program runs with its data at the UDP payload; the IP header is reached through the
negative offset SKF_NET_OFF. The source address is loaded (IPv4: the word at 12; IPv6: the
four words at 8..23 folded by xor) and mixed by a Fibonacci multiply; its top 16 bits, times
N, shifted right by 16, give 0..N-1. That range reduction keeps the well-mixed top bits, where
``mod N`` would keep the low ones (for N = 3 it put 98 of 254 neighbouring addresses on one
worker and 67 on another; this puts 84 to 85 on each).

Indices are positions in the group, in the order the sockets joined it. When a worker
restarts, the kernel moves the group's last socket into the freed slot, and an index that is
not below the group's socket count falls back to the kernel's own 4-tuple hash until the new
socket has joined: for that moment, and after it for the exporters of the two workers whose
positions changed, an exporter moves to another worker once.

:func:`program` is pure (instructions as ``(code, jt, jf, k)`` tuples); :func:`attach` is
the one system call, and :func:`steer` its caller that warns once when it fails.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import struct

log = logging.getLogger(__name__)

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h; Python's socket module lacks it
SKF_NET_OFF = -0x100000  # linux/filter.h: offsets from here are from the network header
MIX = 0x9E3779B1  # 2**32 / golden ratio: spreads neighbouring addresses over the top bits
SHIFT = 16
MAX_WORKERS = 64  # listen.workers' bound; also keeps the range reduction below 2**32

# linux/bpf_common.h and linux/filter.h opcodes (class | size | mode | op | source).
LD_W_ABS = 0x00 | 0x00 | 0x20  # A = ntohl(*(u32 *)(pkt + k))
TAX = 0x07 | 0x00  # X = A
ALU_XOR_X = 0x04 | 0xA0 | 0x08  # A ^= X
ALU_MUL_K = 0x04 | 0x20 | 0x00  # A *= k (mod 2**32)
ALU_RSH_K = 0x04 | 0x70 | 0x00  # A >>= k
RET_A = 0x06 | 0x10  # return A: the socket index

Instruction = tuple[int, int, int, int]

# Offsets of the source address in the network header (RFC 791, RFC 8200).
_SOURCE_WORDS: dict[int, tuple[int, ...]] = {
    socket.AF_INET: (12,),
    socket.AF_INET6: (8, 12, 16, 20),
}


def program(family: int, workers: int) -> list[Instruction]:
    """The cBPF program mapping a source address of ``family`` to a socket in 0..workers-1."""
    if not 2 <= workers <= MAX_WORKERS:
        raise ValueError(f"steering needs 2 to {MAX_WORKERS} workers, not {workers}")
    words = _SOURCE_WORDS[family]
    code: list[Instruction] = [(LD_W_ABS, 0, 0, (SKF_NET_OFF + words[0]) & 0xFFFFFFFF)]
    for offset in words[1:]:
        code += [(TAX, 0, 0, 0), (LD_W_ABS, 0, 0, (SKF_NET_OFF + offset) & 0xFFFFFFFF)]
        code.append((ALU_XOR_X, 0, 0, 0))
    code += [
        (ALU_MUL_K, 0, 0, MIX),
        (ALU_RSH_K, 0, 0, SHIFT),
        (ALU_MUL_K, 0, 0, workers),  # below 2**16 * 64: no overflow
        (ALU_RSH_K, 0, 0, SHIFT),
        (RET_A, 0, 0, 0),
    ]
    return code


def worker_index(address: str, workers: int) -> int:
    """What :func:`program` computes for ``address``, in Python: the socket position (in
    join order) that receives this exporter's datagrams."""
    packed = ipaddress.ip_address(address).packed
    folded = 0
    for (word,) in struct.iter_unpack("!I", packed):
        folded ^= word
    return ((((folded * MIX) & 0xFFFFFFFF) >> SHIFT) * workers) >> SHIFT


def pack(code: list[Instruction]) -> bytes:
    """The instructions as an array of ``struct sock_filter`` (u16 code, u8 jt, u8 jf, u32 k)."""
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in code)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def attach(sock: socket.socket, workers: int) -> None:
    """Attach the program to the reuseport group of ``sock`` (bound, SO_REUSEPORT set). The
    last attach wins for the whole group; every worker attaches the same program. OSError
    when the kernel refuses (older than 4.5, EPERM under a seccomp filter, EINVAL when the
    socket is not in a reuseport group)."""
    code = program(sock.family, workers)
    filters = ctypes.create_string_buffer(pack(code))
    fprog = _SockFprog(len(code), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


_warned = False  # once per process: every listen socket would fail the same way


def steer(sock: socket.socket, workers: int) -> bool:
    """:func:`attach`, or a warning (once) that the workers may split an exporter."""
    global _warned  # noqa: PLW0603 - the one piece of process state: the warning was given
    try:
        attach(sock, workers)
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning(
                "cannot steer exporters to workers by address; datagrams of one exporter may "
                "spread over workers, and templates or options sent from another source port "
                "may not reach its data",
                extra={
                    "event": "worker_steering_unavailable",
                    "error": str(exc),
                    "fix": "Linux 4.5 or later without a seccomp filter refusing setsockopt, "
                    "or listen.workers = 1",
                },
            )
        return False
    return True
