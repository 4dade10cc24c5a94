"""The ``relay`` command line. The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import trio

from relay import __version__, logs
from relay.addresses import parse_hostport
from relay.certs import check_files, issue_certificate, make_key_and_csr, make_test_ca
from relay.config import Config, Overrides, flag_named, load, parse_toml
from relay.demo import run_demo
from relay.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_INTERRUPTED,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    ConfigError,
    SpoolError,
    SpoolTransient,
    UsageError,
)
from relay.framing import Framing
from relay.logs import LogFormat
from relay.offline import decode_files
from relay.render import BODIES, HEADERS, Renderer, RenderOptions
from relay.sendtest import VERSIONS as SEND_VERSIONS
from relay.sendtest import send_test
from relay.service import hangup_ignored, run_relay
from relay.spool import FsyncPolicy
from relay.status import StatusUnavailable, fetch_status
from relay.status import table as status_table
from relay.workers import run_supervisor, worker_config, worker_heartbeat


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes the offending argument as given: a newline in it would make two
        # lines of the one-line error.
        printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        raise UsageError(f"{self.prog}: {printable}")


def _words(choices: type[StrEnum]) -> list[str]:
    """An enum's words, as argparse shows them (it quotes each choice with repr)."""
    return [str(c) for c in choices]


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
    run = commands.add_parser(
        "run",
        help="the daemon: receive NetFlow, spool, forward over TLS",
        description="Run the relay. Flags override the configuration file.",
    )
    add_run_flags(run)

    commands.add_parser(
        "demo",
        help="the whole relay on loopback with a synthetic exporter; exits by itself",
        description="Throwaway certificates, a local TLS syslog receiver, the relay and a "
        "synthetic NetFlow v1/v5/v6/v7/v9/IPFIX exporter, all on 127.0.0.1.",
    )

    send = commands.add_parser(
        "send-test",
        help="send synthetic NetFlow to check the path from routers to the relay",
    )
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument(
        "--version",
        type=int,
        default=5,
        choices=SEND_VERSIONS,
        help="NetFlow version; 9 and 10 (IPFIX) send their templates and options first",
    )
    send.add_argument("--count", type=int, default=10, help="datagrams to send (default 10)")
    send.add_argument(
        "--records",
        type=int,
        default=None,
        help="flows per datagram (default: the version's maximum; v9/IPFIX: 12)",
    )
    send.add_argument(
        "--rate", type=float, default=100.0, help="datagrams per second, 0 = flat out"
    )

    st = commands.add_parser(
        "status",
        help="what a running relay sees: its exporters and its pipeline",
        description="Read a running relay's /status and print its exporters (versions, "
        "records/s over the last minute, last seen, loss, templates) and its pipeline "
        "(spool, endpoint, certificate, kernel drops). Exits 1 when something needs "
        "attention (each is said), 75 when the relay cannot be reached.",
    )
    where = st.add_mutually_exclusive_group()
    where.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="the relay's metrics address (default 127.0.0.1:9712)",
    )
    where.add_argument("-c", "--config", type=Path, help="the relay's configuration file")

    certs = commands.add_parser("certs", help="certificate helpers")
    certs_cmds = certs.add_subparsers(dest="certs_command", required=True, parser_class=_Parser)
    req = certs_cmds.add_parser("request", help="make a private key and a CSR for the platform")
    req.add_argument("--cn", required=True, help="common name, e.g. the site's name")
    req.add_argument("--org", default=None)
    req.add_argument("--out", type=Path, default=Path("certs"), help="directory (default certs/)")
    chk = certs_cmds.add_parser("check", help="check the configured CA, certificate and key")
    chk.add_argument("-c", "--config", type=Path)
    chk.add_argument("--ca", metavar="FILE")
    chk.add_argument("--cert", metavar="FILE")
    chk.add_argument("--key", metavar="FILE")
    mk = certs_cmds.add_parser(
        "make-ca", help="make a local test CA with a server and a client certificate"
    )
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument(
        "--host",
        action="append",
        default=[],
        help="server names (default localhost, 127.0.0.1, ::1)",
    )
    return parser


def add_run_flags(run: argparse.ArgumentParser) -> None:
    run.add_argument("-c", "--config", type=Path, help="TOML configuration file")
    run.add_argument("--listen", action="append", default=[], metavar="ADDR:PORT")
    run.add_argument("--endpoint", action="append", default=[], metavar="HOST:PORT")
    run.add_argument("--ca", metavar="FILE", help="CA bundle the platform's certificate chains to")
    run.add_argument("--cert", metavar="FILE", help="client certificate (mutual TLS)")
    run.add_argument("--key", metavar="FILE", help="client private key (mode 0600)")
    run.add_argument(
        "--server-name", metavar="NAME", help="name expected in the server certificate"
    )
    run.add_argument("--spool", metavar="DIR")
    run.add_argument("--fsync", choices=_words(FsyncPolicy))
    run.add_argument("--metrics", metavar="ADDR:PORT", help='metrics address, "off" to disable')
    run.add_argument("--allow", action="append", default=[], metavar="CIDR")
    run.add_argument("--framing", choices=_words(Framing))
    run.add_argument(
        "--log-format",
        choices=_words(LogFormat),
        help="auto (default): text on a terminal, JSON otherwise",
    )
    run.add_argument("--workers", type=int, metavar="N")
    # Set by the supervisor for its worker processes; not for people.
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)


def run_overrides(args: argparse.Namespace) -> Overrides:
    """The ``relay run`` flags as configuration overrides (see :func:`add_run_flags`)."""
    return Overrides(
        listen=args.listen,
        endpoints=args.endpoint,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        server_name=args.server_name,
        spool=args.spool,
        fsync=args.fsync,
        metrics=args.metrics,
        allow=args.allow,
        framing=args.framing,
        log_format=args.log_format,
        workers=args.workers,
    )


def read_config(path: Path | None, overrides: Overrides) -> Config:
    """The file (if any) with the overrides applied; ConfigError names the key or file."""
    document = {}
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read configuration file {path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"configuration file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from None
        document = parse_toml(text, source=str(path))
    return load(document, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    with hangup_ignored():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.worker_index is not None:
        # The supervisor's resolved configuration, on stdin (see relay.workers).
        config = worker_config(sys.stdin.read(), args.worker_index)
        logs.configure(fmt=config.log.format, level=config.log.level)
        trio.run(_run_worker, config)
        return EX_OK
    config = read_config(args.config, run_overrides(args))
    logs.configure(fmt=config.log.format, level=config.log.level)
    if config.listen.workers > 1:
        return trio.run(run_supervisor, config)
    trio.run(run_relay, config)
    return EX_OK


async def _run_worker(config: Config) -> None:
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(run_relay, config)
        # The supervisor reads this line to find the worker's metrics.
        sys.stdout.write(f"relay-worker-ready metrics_port={handle.metrics_port}\n")
        sys.stdout.flush()
        nursery.start_soon(worker_heartbeat, handle.stop)


def _cmd_decode(args: argparse.Namespace) -> int:
    try:
        options = RenderOptions(
            header=args.header,
            body=args.body,
            **({"tag": args.tag} if args.tag is not None else {}),
        )
    except ConfigError as exc:
        named = flag_named(exc, {"output.tag": "--tag"})
        raise UsageError(f"relay decode: {named}") from None
    summary = decode_files(
        args.files,
        renderer=Renderer(options),
        exporter=args.exporter,
        port=args.port,
        out=sys.stdout.buffer,
        err=sys.stderr,
    )
    sys.stdout.flush()
    return EX_FAILURE if summary.unreadable_files else EX_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    logs.configure(fmt="text", level="warning")
    ok = trio.run(run_demo, sys.stdout)
    return EX_OK if ok else EX_FAILURE


def _cmd_send_test(args: argparse.Namespace) -> int:
    try:
        target = parse_hostport(args.to, key="--to")
    except ConfigError as exc:
        raise UsageError(f"relay send-test: {exc}") from None
    result = send_test(
        target.host,
        target.port,
        version=args.version,
        count=args.count,
        records=args.records,
        rate=args.rate,
    )
    templates = (
        f" after {result.template_datagrams} of templates and options"
        if result.template_datagrams
        else ""
    )
    print(
        f"sent {result.datagrams} NetFlow v{args.version} datagrams ({result.records} flow "
        f"records){templates} to {target} in {result.seconds:.2f} s; check the relay's "
        "flowrelay_packets_received_total"
    )
    return EX_OK


def _cmd_status(args: argparse.Namespace) -> int:
    if args.metrics is not None:
        try:
            address = parse_hostport(args.metrics, key="--metrics")
        except ConfigError as exc:
            raise UsageError(f"relay status: {exc}") from None
    else:
        found = read_config(args.config, Overrides()).metrics.address
        if found is None:
            raise UsageError(
                f"relay status: metrics.address is off in {args.config}: the relay serves no "
                "/status"
            )
        address = found
    try:
        doc = fetch_status(address.host, address.port)
    except StatusUnavailable as exc:
        print(f"relay status: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    sys.stdout.write(status_table(doc))
    return EX_FAILURE if doc["attention"] else EX_OK


def _cmd_certs(args: argparse.Namespace) -> int:
    if args.certs_command == "request":
        return _certs_request(args)
    if args.certs_command == "make-ca":
        return _certs_make_ca(args)
    return _certs_check(args)


def _certs_request(args: argparse.Namespace) -> int:
    key, csr = make_key_and_csr(args.out, args.cn, organization=args.org)
    print(f"private key: {key} (keep it here, mode 0600)\nCSR: {csr} (send it to the platform)")
    return EX_OK


def _certs_make_ca(args: argparse.Namespace) -> int:
    authority = make_test_ca(args.out / "ca")
    hosts = tuple(args.host) or ("localhost", "127.0.0.1", "::1")
    server = issue_certificate(authority, args.out / "server", "server", hosts=hosts, client=False)
    client = issue_certificate(authority, args.out / "client", "client", server=False)
    print(f"CA: {authority.cert}")
    print(f"server: {server.cert} {server.key}\nclient: {client.cert} {client.key}")
    return EX_OK


def _certs_check(args: argparse.Namespace) -> int:
    ca: str | Path | None = args.ca
    cert: str | Path | None = args.cert
    key: str | Path | None = args.key
    if args.config is not None:
        # Its own overrides, not a `run` namespace: a new `run` flag cannot break it.
        config = read_config(args.config, Overrides(ca=args.ca, cert=args.cert, key=args.key))
        if config.endpoints:
            first = config.endpoints[0]
            ca, cert, key = first.ca, first.cert, first.key
    findings = check_files(
        ca=Path(ca) if ca else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
    )
    for finding in findings:
        print(f"{finding.level:7} {finding.message}")
    return EX_FAILURE if any(f.level == "error" for f in findings) else EX_OK


COMMANDS = {
    "decode": _cmd_decode,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "send-test": _cmd_send_test,
    "certs": _cmd_certs,
    "status": _cmd_status,
}


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = build_parser().parse_args(raw)
            return COMMANDS[args.command](args)
        except* (UsageError, ConfigError, SpoolError) as group:
            # Tasks in a nursery raise exception groups; the user needs the one sentence.
            raise _first(group) from None
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EX_USAGE
    except SpoolTransient as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except (ConfigError, SpoolError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EX_CONFIG
    except BrokenPipeError:
        # `relay decode ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return EX_OK
    except KeyboardInterrupt:
        return EX_INTERRUPTED
