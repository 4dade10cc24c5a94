"""The ``relay`` command line. The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from relay import __version__
from relay.errors import ConfigError, UsageError
from relay.offline import decode_files
from relay.render import BODIES, HEADERS, Renderer, RenderOptions

EX_USAGE = 2
EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd's RestartPreventExitStatus= stops the loop


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay", description="NetFlow v1/v5/v6/v7 to TLS syslog relay")
    parser.add_argument("--version", action="version", version=f"flowrelay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    dec = commands.add_parser(
        "decode",
        help="print the syslog lines the relay would send for captures or raw datagrams",
        description="Decode pcap/pcapng captures or raw datagram files (one UDP payload per "
        "file) and print one syslog line per flow record. Invalid datagrams are named on "
        "stderr with the reason.",
    )
    dec.add_argument("files", nargs="+", type=Path, metavar="FILE")
    dec.add_argument(
        "--exporter",
        default="0.0.0.0",
        help="exporter address for raw files (captures carry their own)",
    )
    dec.add_argument("--header", choices=HEADERS, default="rfc3164")
    dec.add_argument("--body", choices=BODIES, default="json")
    dec.add_argument("--tag", default=None, help="syslog tag (default netstat.netflow.lt)")
    dec.add_argument(
        "--port", type=int, default=None, help="only UDP packets to this port (captures)"
    )
    return parser


def _cmd_decode(args: argparse.Namespace) -> int:
    try:
        options = RenderOptions(
            header=args.header,
            body=args.body,
            **({"tag": args.tag} if args.tag is not None else {}),
        )
    except ValueError as exc:
        raise UsageError(f"relay decode: {exc}") from None
    summary = decode_files(
        args.files,
        renderer=Renderer(options),
        exporter=args.exporter,
        port=args.port,
        out=sys.stdout.buffer,
        err=sys.stderr,
    )
    sys.stdout.flush()
    return 1 if summary.unreadable_files else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "decode":
            return _cmd_decode(args)
        raise UsageError(f"relay: unknown command {args.command}")
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EX_USAGE
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EX_CONFIG
    except BrokenPipeError:
        # `relay decode ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
