"""End-to-end benchmark: NetFlow over UDP → ``relay run`` → TLS endpoint on loopback.

    python -m bench.e2e [--endpoints openssl,rsyslog] [--versions 5,9,10] [--seconds 30]
                        [--search-seconds 10] [--start-rate 25000] [--outage-seconds 60]
                        [--skip ...] [--quick]

Every part runs as its own process on this machine: the TLS endpoint, ``python -m relay run``
(fresh spool, default fsync policy ``interval``, mutual TLS), and ``bench/loadgen.py``, which
sends pre-built full datagrams (30 records, consecutive sequence numbers) at a fixed rate:
NetFlow v5, or with ``--versions`` also v9 and IPFIX (10), whose template datagram the
generator sends first and again every 20 data datagrams, as exporters do. The zero-loss
search and the profile run for each version in turn, in the same run, so that their figures
share the machine's load.

Endpoints (both are real TLS servers verifying the relay's client certificate):

- ``openssl``: ``openssl s_server -quiet`` writing what it decrypts to a file: the cheapest
  real TLS receiver, so the relay, not the receiver, is what is measured;
- ``rsyslog``: Debian's rsyslogd (imtcp, ossl driver, mutual TLS) writing each message to a
  file (``tests/rsyslog.py``): the realistic platform.

What is measured:

1. the load generator's own ceiling (it must reach at least twice the rate under test);
2. per endpoint, the highest rate with **zero loss**: records delivered at the endpoint =
   flow records sent, ``flowrelay_udp_kernel_drops_total`` 0, and the generator on schedule. The
   search steps up ×2 from ``--start-rate`` with ``--search-seconds`` trials until a trial
   loses, bisects to ``--precision``, then confirms the best rate with a ``--seconds`` trial
   (stepping down 10 % until one passes). Each trial has a fresh relay and endpoint. Reported:
   records/s, packets/s, the relay's peak RSS (VmHWM), latency, and the relay's CPU time per
   record (user + system, workers included), which depends far less on the host's load;
3. latency: a sampler polls the endpoint's output file every 10 ms, reads the last complete
   line and looks up its ``flow_sequence`` (the header's sequence: per datagram in every
   version) in the generator's table of (sequence, send time) pairs. So it is send
   → written to the endpoint's file, an upper bound of receipt → TLS write (it adds the
   kernel's UDP queue, the endpoint's decrypt and write, and up to 10 ms of polling);
4. CPU per stage: py-spy samples the relay at a fixed rate; each sample is charged to the
   innermost frame in ``relay/``, grouped into receive / decode+render / spool / forward /
   metrics+logs, and samples with no ``relay/`` frame to the trio event loop;
5. side by side on the same datagrams: nfcapd (Debian's nfdump, the C reference) zero-loss
   rate, records counted with ``nfdump -I``; the PyPI ``netflow`` package's parse-only
   records/s (``pip install netflow``), next to the relay's own decode+render in-process;
6. outage under load: at ``--outage-rate`` the endpoint is killed for ``--outage-seconds``
   and restarted; zero loss is checked per flow sequence (duplicates are allowed and
   counted), the peak RSS and spool backlog are reported, and the drain rate afterwards.

With ``--workers N`` the load comes from 16 exporters, 127.0.0.1 to 127.0.0.16 (the relay
steers its workers by source address), each with its own sequence stream and templates.

The output ends with Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime
import importlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.loadgen import RECORDS, build_pool
from bench.loadgen import VERSIONS as LOAD_VERSIONS
from relay.certs import TlsFiles, issue_certificate, make_test_ca
from relay.flows import decode
from relay.render import Renderer
from relay.testing.ports import free_port
from relay.testing.process import RelayProcess, tls_args
from relay.testing.rsyslog import Rsyslog, find_rsyslogd, tls_driver

ROOT = Path(__file__).resolve().parent.parent
# The load generator runs as its own process: `python -m bench.loadgen` from the checkout.
LOADGEN = [sys.executable, "-m", "bench.loadgen"]

LOOPBACK = "127.0.0.1"
# A line's exporter (127.0.0.N) and flow_sequence: keyed as the generator's --times are.
_SEQUENCE_RE = re.compile(rb'"exporter":"127\.0\.0\.(\d+)[^"]*","flow_sequence":(\d+)')


def _key(source: bytes, sequence: bytes) -> int:
    return (int(source) - 1) << 32 | int(sequence)


SAMPLE_INTERVAL = 0.01
SETTLE_TIMEOUT = 60.0  # after sending stops, how long delivery may take to catch up
STALL_TIMEOUT = 8.0  # ... but give up once nothing arrived for this long


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status in bytes (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, whichever of its threads started them."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += map(int, (task / "children").read_text().split())
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (``--workers``); 0 for
    one that is gone."""
    total = 0.0
    for each in (pid, *children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss(pid: int) -> int:
    """VmHWM of the relay, or with ``--workers`` of its largest worker process."""
    return max([proc_status(pid, "VmHWM"), *(proc_status(c, "VmHWM") for c in children(pid))])


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as data:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 22), b""))
    except FileNotFoundError:
        return 0


def sequence_counts(path: Path) -> Counter[int]:
    """How many lines carry each flow_sequence (one per datagram in every version; 30 lines
    each)."""
    counts: Counter[int] = Counter()
    tail = b""
    with path.open("rb") as data:
        for piece in iter(lambda: data.read(1 << 24), b""):
            chunk = tail + piece
            cut = chunk.rfind(b"\n") + 1
            counts.update(_key(a, s) for a, s in _SEQUENCE_RE.findall(chunk, 0, cut))
            tail = chunk[cut:]
    return counts


# ---- endpoints ------------------------------------------------------------------------------


class Endpoint(Protocol):
    name: str
    port: int
    output: Path

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def delivered(self) -> int: ...


class OpensslEndpoint:
    """``openssl s_server`` with mutual TLS, appending what it decrypts to ``output``."""

    name = "openssl s_server"

    def __init__(self, directory: Path, server: TlsFiles, port: int | None = None) -> None:
        self.directory = directory
        self.server = server
        self.port = port or free_port()
        self.output = directory / "received.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._counted = 0
        self._offset = 0

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (
            self.output.open("ab") as out,
            (self.directory / "s_server.stderr").open("ab") as err,
        ):
            self._process = subprocess.Popen(
                [
                    "openssl",
                    "s_server",
                    "-quiet",
                    "-accept",
                    f"{LOOPBACK}:{self.port}",
                    "-cert",
                    str(self.server.cert),
                    "-key",
                    str(self.server.key),
                    "-CAfile",
                    str(self.server.ca),
                    "-Verify",
                    "1",
                ],
                # A pipe that stays open: s_server ends its session when stdin reaches EOF.
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"openssl s_server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process is not None and process.stdin is not None:
            process.stdin.close()
        self._process = None

    def delivered(self) -> int:
        # Incremental: the file only grows.
        with contextlib.suppress(FileNotFoundError), self.output.open("rb") as data:
            data.seek(self._offset)
            chunk = data.read()
            self._offset += len(chunk)
            self._counted += chunk.count(b"\n")
        return self._counted


class RsyslogEndpoint:
    """Debian's rsyslogd, imtcp + TLS, every message to one file (no parsed copy)."""

    name = "rsyslogd"

    def __init__(self, directory: Path, server: TlsFiles, port: int | None = None) -> None:
        self._server = Rsyslog(directory, server, port, parse=False)
        self.port = self._server.port
        self.output = self._server.raw_file
        self._counted = 0
        self._offset = 0

    def start(self) -> None:
        self._server.start()
        self.name = f"rsyslogd ({self._server.driver})"

    def stop(self) -> None:
        self._server.kill()

    def delivered(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.output.open("rb") as data:
            data.seek(self._offset)
            chunk = data.read()
            self._offset += len(chunk)
            self._counted += chunk.count(b"\n")
        return self._counted


def _listening(port: int) -> bool:
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


ENDPOINTS: dict[str, Callable[[Path, TlsFiles], Endpoint]] = {
    "openssl": OpensslEndpoint,
    "rsyslog": RsyslogEndpoint,
}


# ---- latency sampling -----------------------------------------------------------------------


class LatencySampler:
    """Every 10 ms: the flow_sequence of the last complete line in the endpoint's file, and
    when it was seen. Reads only the file's tail, so it costs almost nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LatencySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_size = 0
        while not self._stop.wait(SAMPLE_INTERVAL):
            try:
                with self.path.open("rb") as data:
                    size = os.fstat(data.fileno()).st_size
                    if size == last_size:
                        continue
                    seen = time.monotonic()
                    data.seek(max(0, size - 8192))
                    tail = data.read(size - max(0, size - 8192))
            except FileNotFoundError:
                continue
            last_size = size
            end = tail.rfind(b"\n")
            start = tail.rfind(b"\n", 0, end) + 1
            match = _SEQUENCE_RE.search(tail, start, end)
            if match:
                self.samples.append((seen, _key(match.group(1), match.group(2))))


def send_times(pairs: array.array[float]) -> dict[int, float]:
    """The load generator's ``--times`` pairs: send time by the sequence of each datagram
    (v5 and IPFIX step by records, v9 by datagrams, template datagrams included)."""
    return {int(pairs[i]): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}


def latencies(samples: list[tuple[float, int]], sent: dict[int, float]) -> list[float]:
    return [seen - sent[sequence] for seen, sequence in samples if sequence in sent]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- one trial --------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Trial:
    endpoint: str
    rate: float
    seconds: float
    version: int = 5
    sent: int = 0
    delivered: int = 0
    decoded: int = 0
    kernel_drops: int = 0
    sequence_lost: int = 0  # flowrelay_flows_lost_total: the relay saw a gap
    spool_dropped: int = 0
    achieved: float = 0.0
    generator_lag: float = 0.0
    peak_rss: int = 0
    latency_p50: float = float("nan")
    latency_p99: float = float("nan")
    latency_max: float = float("nan")
    load: float = 0.0
    catch_up: float = 0.0  # seconds from the last send until everything was delivered
    relay_cpu: float = 0.0  # CPU seconds the relay (its main process) used for the trial
    note: str = ""
    timeline: list[dict[str, float]] = field(default_factory=list)

    @property
    def lossless(self) -> bool:
        """Every record sent was decoded and delivered; no kernel drops and no sequence gap
        (which also checks the generator's sequence numbers); generator on time."""
        return (
            self.sent > 0
            and self.delivered >= self.sent
            and self.decoded == self.sent
            and self.kernel_drops == 0
            and self.sequence_lost == 0
            and self.achieved >= 0.98 * self.rate
        )

    @property
    def zero_loss(self) -> bool:
        """Lossless and sustained, not buffered: a relay that falls behind catches up from
        the spool after the sender stops; only a short tail is allowed."""
        return self.lossless and self.catch_up <= max(2.0, 0.1 * self.seconds)

    @property
    def cpu_per_record(self) -> float:
        """The relay's CPU seconds per record delivered: what a record costs, whatever the
        load (the relay's own work; waiting for a core does not count)."""
        return self.relay_cpu / self.delivered if self.delivered else float("nan")

    def describe(self) -> str:
        verdict = "zero loss" if self.zero_loss else "lossless, behind" if self.lossless else "LOSS"
        return (
            f"v{self.version} {self.endpoint} {self.rate:,.0f} rec/s x {self.seconds:g} s: "
            f"{verdict} "
            f"(sent {self.sent:,}, decoded {self.decoded:,}, delivered {self.delivered:,}, "
            f"kernel drops {self.kernel_drops:,} datagrams, sequence gaps "
            f"{self.sequence_lost:,} flows, spool drops {self.spool_dropped:,}, "
            f"generator {self.achieved:,.0f} rec/s, "
            f"peak RSS {self.peak_rss / 2**20:.0f} MiB, latency p50 {self.latency_p50 * 1000:.0f}"
            f" ms p99 {self.latency_p99 * 1000:.0f} ms, caught up {self.catch_up:.1f} s after "
            f"sending, relay CPU {self.cpu_per_record * 1e6:.1f} µs/record, "
            f"load {self.load:.2f}){self.note}"
        )


class Bench:
    def __init__(
        self, work: Path, *, spool_max: str | None = None, workers: int = 1, version: int = 5
    ) -> None:
        self.work = work
        self.spool_max = spool_max
        self.workers = workers
        self.version = version  # of the datagrams the load generator sends
        ca = make_test_ca(work / "ca")
        self.server = issue_certificate(ca, work / "tls", "server", client=False)
        self.client = issue_certificate(ca, work / "tls", "relay", server=False)
        self._trials = 0

    def relay_args(self, endpoint: Endpoint, spool: Path) -> list[str]:
        config: list[str] = []
        if self.spool_max is not None:
            toml = spool.parent / "relay.toml"
            toml.write_text(f'[spool]\nmax_size = "{self.spool_max}"\n')
            config = ["-c", str(toml)]
        return [
            *config,
            "--listen", f"{LOOPBACK}:0",
            "--endpoint", f"{LOOPBACK}:{endpoint.port}",
            *tls_args(ca=self.server.ca, cert=self.client.cert, key=self.client.key),
            "--spool", str(spool),
            "--metrics", f"{LOOPBACK}:0",
            "--log-format", "json",
            "--workers", str(self.workers),
        ]  # fmt: skip

    @contextlib.contextmanager
    def setup(self, kind: str) -> Iterator[tuple[Path, Endpoint, RelayProcess]]:
        """A fresh directory, endpoint and relay (connected); all torn down afterwards."""
        self._trials += 1
        directory = self.work / f"trial{self._trials}"
        directory.mkdir()
        endpoint = ENDPOINTS[kind](directory / "endpoint", self.server)
        relay = RelayProcess(
            self.relay_args(endpoint, directory / "spool"), directory / "relay.log"
        )
        try:
            endpoint.start()
            relay.start()
            deadline = time.monotonic() + 15
            while relay.scrape().total("flowrelay_endpoint_connected") < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"relay did not connect:\n{relay.log_tail()}")
                time.sleep(0.05)
            yield directory, endpoint, relay
        finally:
            relay.close()
            endpoint.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def loadgen(
        self, port: int, rate: float, seconds: float, times: Path
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *LOADGEN,
                "--to", f"{LOOPBACK}:{port}", "--rate", str(rate),
                "--seconds", str(seconds), "--times", str(times),
                "--version", str(self.version),
                # Several exporters (addresses): the relay steers its workers by address.
                "--sources", str(1 if self.workers == 1 else 16),
            ],
            stdout=subprocess.PIPE,
        )  # fmt: skip

    def trial(
        self,
        kind: str,
        rate: float,
        seconds: float,
        *,
        during: Callable[[Endpoint, RelayProcess, float], None] | None = None,
        profile: Path | None = None,
    ) -> Trial:
        """Send at ``rate`` for ``seconds`` through a fresh relay and endpoint; count.

        ``during(endpoint, relay, elapsed)`` is called about every 0.5 s while sending (the
        outage scenario); ``profile`` runs py-spy on the relay for the sending period."""
        result = Trial(
            endpoint=kind, rate=rate, seconds=seconds, version=self.version, load=load_average()
        )
        with self.setup(kind) as (directory, endpoint, relay):
            result.endpoint = endpoint.name
            times_file = directory / "times.bin"
            spy = None
            if profile is not None:
                spy = subprocess.Popen(
                    [
                        "py-spy", "record", "--pid", str(relay.pid), "--duration",
                        str(int(seconds)), "--rate", "200", "--nonblocking",
                        "--format", "raw", "-o", str(profile),
                    ],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )  # fmt: skip
            cpu_before = cpu_seconds(relay.pid)
            with LatencySampler(endpoint.output) as sampler:
                generator = self.loadgen(relay.udp_port, rate, seconds, times_file)
                start = time.monotonic()
                while generator.poll() is None:
                    time.sleep(0.5)
                    # Count as it arrives: counting gigabytes only once sending has ended would
                    # add the seconds that takes to the catch-up time.
                    endpoint.delivered()
                    if during is not None:
                        during(endpoint, relay, time.monotonic() - start)
                out, _ = generator.communicate()
                sent = json.loads(out)
                result.sent = int(sent["records"])
                result.achieved = float(sent["records_per_second"])
                result.generator_lag = float(sent["max_lag"])
                # Let delivery catch up; stop when it has, or nothing moved for a while.
                sending_ended = time.monotonic()
                deadline = sending_ended + SETTLE_TIMEOUT
                last, last_change = -1, time.monotonic()
                while time.monotonic() < deadline:
                    delivered = endpoint.delivered()
                    if delivered >= result.sent:
                        break
                    if delivered != last:
                        last, last_change = delivered, time.monotonic()
                    elif time.monotonic() - last_change > STALL_TIMEOUT:
                        break
                    if during is not None:
                        during(endpoint, relay, time.monotonic() - start)
                    time.sleep(0.05)
                result.catch_up = time.monotonic() - sending_ended
            result.relay_cpu = cpu_seconds(relay.pid) - cpu_before
            if spy is not None:
                _, err = spy.communicate(timeout=seconds + 30)
                if spy.returncode != 0:
                    log(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            scrape = relay.scrape()
            result.decoded = int(scrape.total("flowrelay_records_decoded_total"))
            result.kernel_drops = int(scrape.total("flowrelay_udp_kernel_drops_total"))
            result.sequence_lost = int(scrape.total("flowrelay_flows_lost_total"))
            result.spool_dropped = int(scrape.total("flowrelay_lines_dropped_total"))
            result.peak_rss = peak_rss(relay.pid)
            result.delivered = endpoint.delivered()
            pairs = array.array("d")
            with times_file.open("rb") as data:
                pairs.frombytes(data.read())
            sent_at = send_times(pairs)
            if result.delivered > result.sent:
                # Duplicates after a reconnection: every datagram must be there whole.
                counts = sequence_counts(endpoint.output)
                missing = sum(RECORDS - min(counts.get(s, 0), RECORDS) for s in sent_at)
                result.note = (
                    f" [{result.delivered - result.sent:,} duplicates, {missing:,} missing]"
                )
                if missing:
                    result.delivered = result.sent - missing
            lat = latencies(sampler.samples, sent_at)
            result.latency_p50 = percentile(lat, 0.5)
            result.latency_p99 = percentile(lat, 0.99)
            result.latency_max = max(lat, default=float("nan"))
        return result


# ---- the search ---------------------------------------------------------------------------


def find_zero_loss_rate(
    bench: Bench,
    kind: str,
    *,
    start_rate: float,
    ceiling: float,
    search_seconds: float,
    seconds: float,
    precision: float,
) -> tuple[Trial | None, list[Trial]]:
    """Step up x2 until a trial loses (or down /2 while the start rate loses), bisect to
    ``precision``, confirm for ``seconds``."""
    trials: list[Trial] = []

    def run(rate: float, duration: float) -> Trial:
        trial = bench.trial(kind, rate, duration)
        trials.append(trial)
        log(trial.describe())
        return trial

    good, bad = 0.0, ceiling
    rate = start_rate
    while rate < ceiling:
        if run(rate, search_seconds).zero_loss:
            good = rate
            rate *= 2
        else:
            bad = rate
            break
    else:
        bad = ceiling
    # The start rate already lost (a loaded machine): halve, at most 4 times, for a floor.
    rate = bad / 2
    for _ in range(4 if not good else 0):
        if run(rate, search_seconds).zero_loss:
            good = rate
            break
        bad, rate = rate, round(rate / 2, -3)
    while good and bad - good > precision * good:
        middle = round((good + bad) / 2, -3)
        if run(middle, search_seconds).zero_loss:
            good = middle
        else:
            bad = middle
    if not good:
        return None, trials
    rate = good
    for _ in range(5):
        confirm = run(rate, seconds)
        if confirm.zero_loss:
            return confirm, trials
        rate = round(rate * 0.9, -3)
    return None, trials


# ---- profile --------------------------------------------------------------------------------

_FRAME_RE = re.compile(r"^(.*) \((.*):(\d+)\)$")


def stage_of(function: str, path: str) -> str | None:
    """The pipeline stage of a frame in relay/ (None: not the relay's own code)."""
    if path.startswith("<render "):
        return "decode+render"
    if path.startswith("relay/"):
        name = path.removeprefix("relay/")
    elif "/relay/" in path and "site-packages" not in path:
        name = path.rsplit("/relay/", 1)[-1]
    else:
        return None
    if name in ("cli.py", "__main__.py"):
        return None  # trio.run's caller: what is below it is the event loop itself
    if name == "receiver.py":
        return "receive (recvfrom)"
    if name in (
        "ingest.py",
        "templated_ingest.py",
        "template_state.py",
        "sequence.py",
        "allow.py",
        "offline.py",
        "values.py",
    ) or (name.startswith(("flows/", "render/"))):
        return "decode+render"
    if name.startswith("spool/") or (name == "service.py" and function == "_spool_writer"):
        return "spool"
    if name == "forward.py" or name.startswith("forward/"):
        return "forward (TLS)"
    if name in ("metrics.py", "logs.py") or (name == "service.py" and "stat" in function.lower()):
        return "metrics+logs"
    return f"other relay ({name})"


def profile_stages(raw: Path) -> tuple[dict[str, float], dict[str, float], int]:
    """(share per stage, share per innermost relay function, samples) of a py-spy raw file."""
    stages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        stage, where = "trio event loop / other", "(no relay frame)"
        for frame in reversed(stack.split(";")):
            match = _FRAME_RE.match(frame)
            if match is None:
                continue
            function, path = match.group(1), match.group(2)
            found = stage_of(function, path)
            if found is not None:
                stage = found
                where = f"{function} ({path.rsplit('/', 1)[-1]})"
                # The C call a relay function is in (py-spy shows none): its innermost
                # non-relay frame above, if any, says what it was waiting in.
                break
        stages[stage] += count
        functions[where] += count
    if not total:
        return {}, {}, 0
    return (
        {k: v / total for k, v in stages.most_common()},
        {k: v / total for k, v in functions.most_common(15)},
        total,
    )


# ---- references -----------------------------------------------------------------------------


def nfcapd_trial(work: Path, rate: float, seconds: float) -> Trial:
    """nfcapd at ``rate``: records counted by nfdump, kernel drops from /proc/net/udp."""
    directory = work / "nfcapd"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    port = free_udp_port()
    result = Trial(endpoint="nfcapd", rate=rate, seconds=seconds, load=load_average())
    process = subprocess.Popen(
        ["nfcapd", "-b", LOOPBACK, "-p", str(port), "-w", str(directory), "-t", "3600",
         "-B", str(4 << 20)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while udp_socket(port) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nfcapd did not start")
            time.sleep(0.05)
        generator = subprocess.run(
            [
                *LOADGEN,
                "--to", f"{LOOPBACK}:{port}", "--rate", str(rate), "--seconds", str(seconds),
            ],
            capture_output=True, check=True,
        )  # fmt: skip
        sent = json.loads(generator.stdout)
        time.sleep(0.5)
        result.kernel_drops = udp_socket(port) or 0
        result.peak_rss = proc_status(process.pid, "VmHWM")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    result.sent = int(sent["records"])
    result.achieved = float(sent["records_per_second"])
    stat = subprocess.run(
        ["nfdump", "-R", str(directory), "-I"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"^Flows:\s+(\d+)", stat, re.M)
    result.delivered = result.decoded = int(match.group(1)) if match else 0
    shutil.rmtree(directory, ignore_errors=True)
    return result


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def udp_socket(port: int) -> int | None:
    """The drop counter of the UDP socket bound to ``port`` (None: no such socket)."""
    with open("/proc/net/udp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[-1])
    return None


def find_nfcapd_rate(
    work: Path, *, start_rate: float, ceiling: float, seconds: float, precision: float
) -> tuple[Trial | None, list[Trial]]:
    trials: list[Trial] = []
    good: Trial | None = None
    rate, bad = start_rate, ceiling
    while rate <= ceiling:
        trial = nfcapd_trial(work, rate, seconds)
        trials.append(trial)
        log(trial.describe())
        if trial.zero_loss:
            good = trial
            if rate == ceiling:
                break
            rate = min(rate * 2, ceiling)
        else:
            bad = rate
            break
    while good is not None and bad - good.rate > precision * good.rate and bad < ceiling + 1:
        middle = round((good.rate + bad) / 2, -3)
        trial = nfcapd_trial(work, middle, seconds)
        trials.append(trial)
        log(trial.describe())
        if trial.zero_loss:
            good = trial
        else:
            bad = middle
    return good, trials


def parse_rates(seconds: float) -> dict[str, float]:
    """Records/s in this process, best of 3, on the load generator's datagrams."""
    pool = [bytes(d) for d in build_pool()]
    out: dict[str, float] = {}

    def measure(work: Callable[[bytes], object]) -> float:
        best = 0.0
        for _ in range(3):
            done = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                for d in pool:
                    work(d)
                done += len(pool) * RECORDS
            best = max(best, done / (time.perf_counter() - start))
        return best

    try:
        netflow = importlib.import_module("netflow")
        out["PyPI netflow parse_packet (parse only)"] = measure(netflow.parse_packet)
    except ImportError:
        log("PyPI netflow is not installed (pip install netflow): skipped")
    renderer = Renderer()
    out["relay decode only"] = measure(decode)
    out["relay decode+render (render_datagram)"] = measure(
        lambda d: renderer.render_datagram(d, LOOPBACK)
    )
    return out


# ---- outage ---------------------------------------------------------------------------------


def outage_trial(
    bench: Bench, kind: str, rate: float, *, before: float, outage: float, after: float
) -> Trial:
    """Send at ``rate`` for before+outage+after s; the endpoint is down in the middle."""
    timeline: list[dict[str, float]] = []
    state = {"down": False, "up": False}

    def during(endpoint: Endpoint, relay: RelayProcess, elapsed: float) -> None:
        if not state["down"] and elapsed >= before:
            endpoint.stop()
            state["down"] = True
            log(f"endpoint stopped at {elapsed:.1f} s")
        elif state["down"] and not state["up"] and elapsed >= before + outage:
            endpoint.start()
            state["up"] = True
            log(f"endpoint restarted at {elapsed:.1f} s")
        with contextlib.suppress(OSError, AssertionError):
            scrape = relay.scrape()
            timeline.append(
                {
                    "t": elapsed,
                    "pending": scrape.total("flowrelay_spool_pending_lines"),
                    "forwarded": scrape.total("flowrelay_lines_forwarded_total"),
                    "spooled": scrape.total("flowrelay_lines_spooled_total"),
                    "rss": proc_status(relay.pid, "VmRSS"),
                }
            )

    trial = bench.trial(kind, rate, before + outage + after, during=during)
    trial.timeline = timeline
    return trial


def drain_summary(trial: Trial, *, before: float, outage: float) -> dict[str, float]:
    """Peak backlog and RSS, and how fast the backlog went after the endpoint returned."""
    points = trial.timeline
    peak = max(points, key=lambda p: p["pending"], default=None)
    out: dict[str, float] = {
        "peak_pending": peak["pending"] if peak else 0.0,
        "peak_rss_sampled": max((p["rss"] for p in points), default=0),
    }
    after = [p for p in points if p["t"] >= before + outage]
    if not after or peak is None:
        return out
    start = after[0]
    drained = next((p for p in after[1:] if p["pending"] < trial.rate * 0.5), None)
    if drained is None:
        return out
    span = drained["t"] - start["t"]
    out["drain_seconds"] = span
    out["forward_rate_during_drain"] = (drained["forwarded"] - start["forwarded"]) / span
    out["net_drain_rate"] = (start["pending"] - drained["pending"]) / span
    return out


# ---- report ---------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def rcvbuf_note() -> str:
    with contextlib.suppress(OSError):
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        return f"net.core.rmem_max = {rmem_max:,} (the relay asks for 32 MiB; it gets the cap)"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="openssl,rsyslog")
    parser.add_argument(
        "--versions", default="5",
        help="comma list of NetFlow versions to search and profile in turn: 5, 9, 10 (IPFIX)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30.0, help="confirmation trial")
    parser.add_argument("--search-seconds", type=float, default=10.0, help="search trials")
    parser.add_argument("--start-rate", type=float, default=25_000)
    parser.add_argument("--precision", type=float, default=0.1)
    parser.add_argument(
        "--profile-rate",
        type=float,
        default=None,
        help="records/s for the py-spy profile (default: half the best rate)",
    )
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--outage-rate", type=float, default=50_000)
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument(
        "--outage-spool-max",
        default="4GiB",
        help="spool.max_size for the outage run (the default 1GiB holds ~40 s at 50,000/s)",
    )
    parser.add_argument("--outage-endpoint", default="openssl", choices=sorted(ENDPOINTS))
    parser.add_argument("--nfcapd-seconds", type=float, default=10.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="relay run --workers (the load comes from 127.0.0.1-16; needs --endpoints rsyslog)",
    )
    parser.add_argument(
        "--skip", default="", help="comma list of: search,profile,nfcapd,parse,outage"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short trials (3 s search, 5 s confirm, 10 s outage)"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch directory")
    args = parser.parse_args()  # fmt: skip
    if args.quick:
        args.search_seconds, args.seconds, args.outage_seconds = 3.0, 5.0, 10.0
        args.profile_seconds, args.nfcapd_seconds = 5.0, 3.0
    skip = set(filter(None, args.skip.split(",")))
    versions = [int(v) for v in args.versions.split(",") if v]
    if not versions or any(v not in LOAD_VERSIONS for v in versions):
        parser.error(f"--versions takes a comma list of {', '.join(map(str, LOAD_VERSIONS))}")
    kinds = [k for k in args.endpoints.split(",") if k]
    if args.workers > 1 and "openssl" in kinds:
        # s_server serves one connection at a time; each worker has its own connection.
        parser.error("--workers above 1 needs --endpoints rsyslog")
    if "rsyslog" in kinds and (find_rsyslogd() is None or tls_driver() is None):
        log("rsyslogd with a TLS driver is not installed: rsyslog skipped")
        kinds.remove("rsyslog")
    command = "python -m bench.e2e " + " ".join(sys.argv[1:])
    started = datetime.datetime.now(datetime.UTC)
    work = Path(tempfile.mkdtemp(prefix="flowrelay-e2e-", dir=args.work))
    try:
        benches = {v: Bench(work / f"v{v}", workers=args.workers, version=v) for v in versions}
        for bench_dir in benches.values():
            bench_dir.work.mkdir(exist_ok=True)
        report: list[str] = []
        generators = {
            v: json.loads(
                subprocess.run(
                    [*LOADGEN, "--max-rate", "--seconds", "2", "--version", str(v)],
                    capture_output=True, check=True,
                ).stdout
            )
            for v in versions
        }  # fmt: skip
        for v, generator in generators.items():
            log(f"load generator ceiling, v{v}: {generator['records_per_second']:,.0f} "
                f"records/s ({generator['packets_per_second']:,.0f} packets/s)")  # fmt: skip
        generator = generators[versions[0]]
        ceiling = generator["records_per_second"]

        results: dict[tuple[int, str], Trial | None] = {}
        if "search" not in skip:
            for kind in kinds:
                for v in versions:
                    best, _ = find_zero_loss_rate(
                        benches[v], kind,
                        start_rate=args.start_rate,
                        ceiling=generators[v]["records_per_second"] / 2,
                        search_seconds=args.search_seconds, seconds=args.seconds,
                        precision=args.precision,
                    )  # fmt: skip
                    results[v, kind] = best

        profiles: list[tuple[Trial, dict[str, float], dict[str, float], int]] = []
        if "profile" not in skip and shutil.which("py-spy"):
            for v in versions:
                best = results.get((v, kinds[0])) if kinds else None
                rate = args.profile_rate or (round(best.rate / 2, -3) if best else 50_000)
                raw = work / f"profile-v{v}.txt"
                profile_trial = benches[v].trial(kinds[0], rate, args.profile_seconds, profile=raw)
                log("profile trial: " + profile_trial.describe())
                if raw.exists():
                    profiles.append((profile_trial, *profile_stages(raw)))
        elif "profile" not in skip:
            log("py-spy is not installed (pip install py-spy): no profile")

        nfcapd_best: Trial | None = None
        if "nfcapd" not in skip and shutil.which("nfcapd"):
            nfcapd_best, _ = find_nfcapd_rate(
                work, start_rate=250_000, ceiling=ceiling, seconds=args.nfcapd_seconds,
                precision=args.precision,
            )  # fmt: skip
        parse: dict[str, float] = {}
        if "parse" not in skip:
            parse = parse_rates(2.0)
            for name, value in parse.items():
                log(f"{name}: {value:,.0f} records/s")

        outage: Trial | None = None
        drain: dict[str, float] = {}
        if "outage" not in skip:
            before, after = 10.0, max(30.0, args.outage_seconds / 2)
            if args.quick:
                before, after = 3.0, 10.0
            outage_bench = Bench(work / "outage", spool_max=args.outage_spool_max)
            outage = outage_trial(
                outage_bench, args.outage_endpoint, args.outage_rate,
                before=before, outage=args.outage_seconds, after=after,
            )  # fmt: skip
            log("outage trial: " + outage.describe())
            drain = drain_summary(outage, before=before, outage=args.outage_seconds)

        # ---- Markdown ----
        report.append(f"Machine: {machine()}; {rcvbuf_note()}.")
        report.append(f"Date: {started:%Y-%m-%d %H:%M} UTC. Command: `{command}`.")
        report.append(f"Load average at the start: {load_average():.2f} (the table gives each "
                      "confirmation trial's).")  # fmt: skip
        report.append(
            "Load generator (bench/loadgen.py, one Python process) ceiling: "
            + "; ".join(
                f"v{v} {g['records_per_second']:,.0f} records/s "
                f"({g['packets_per_second']:,.0f} packets/s)"
                for v, g in generators.items()
            )
            + "."
        )
        report.append("")
        if results:
            report.append(
                f"### Highest zero-loss rate ({args.seconds:g} s, fresh spool, fsync interval)"
            )
            report.append("")
            report.append(
                "| version | endpoint | records/s | packets/s | peak RSS (VmHWM) | latency p50 | "
                "latency p99 | relay CPU per record | load avg |"
            )
            report.append("|---|---|---|---|---|---|---|---|---|")
            for (v, kind), best in results.items():
                if best is None:
                    report.append(f"| {v} | {kind} | no zero-loss rate found | | | | | | |")
                    continue
                report.append(
                    f"| {v} | {best.endpoint} | {best.rate:,.0f} | {best.rate / RECORDS:,.0f} | "
                    f"{best.peak_rss / 2**20:.0f} MiB | {best.latency_p50 * 1000:,.0f} ms | "
                    f"{best.latency_p99 * 1000:,.0f} ms | {best.cpu_per_record * 1e6:.1f} µs | "
                    f"{best.load:.2f} |"
                )
            report.append("")
        for profile_trial, stages, functions, samples in profiles:
            if not stages:
                continue
            report.append(
                f"### Relay CPU by stage, v{profile_trial.version} (py-spy, {samples:,} samples at "
                f"{profile_trial.rate:,.0f} records/s into {profile_trial.endpoint}, "
                f"latency p50 {profile_trial.latency_p50 * 1000:.0f} ms, "
                f"p99 {profile_trial.latency_p99 * 1000:.0f} ms, relay CPU "
                f"{profile_trial.cpu_per_record * 1e6:.1f} µs/record, "
                f"load {profile_trial.load:.2f})"
            )
            report.append("")
            report.append("| stage | share of the relay's busy samples |")
            report.append("|---|---|")
            for stage, share in stages.items():
                report.append(f"| {stage} | {share:.0%} |")
            report.append("")
            report.append("| innermost relay function | share |")
            report.append("|---|---|")
            for where, share in functions.items():
                report.append(f"| `{where}` | {share:.1%} |")
            report.append("")
        if nfcapd_best is not None or parse:
            ours = results.get((5, "openssl")) or next(iter(results.values()), None)
            report.append("### Side by side, same datagrams")
            report.append("")
            report.append("| program | records/s | relay's ratio to it |")
            report.append("|---|---|---|")
            if ours is not None:
                report.append(f"| flowrelay end to end ({ours.endpoint}), zero loss | "
                              f"{ours.rate:,.0f} | 1 |")  # fmt: skip
            if nfcapd_best is not None:
                capped = " (= generator limit)" if nfcapd_best.rate >= ceiling * 0.9 else ""
                ratio = f"{ours.rate / nfcapd_best.rate:.3f}" if ours else ""
                report.append(
                    f"| nfcapd {nfcapd_version()} zero loss, {args.nfcapd_seconds:g} s, "
                    f"counted by nfdump{capped} | ≥ {nfcapd_best.rate:,.0f} | {ratio} |"
                )
            for name, value in parse.items():
                ratio = f"{ours.rate / value:.2f}" if ours else ""
                report.append(f"| {name}, in process | {value:,.0f} | {ratio} |")
            report.append("")
        if outage is not None:
            report.append(
                f"### Outage under load ({outage.endpoint} killed for "
                f"{args.outage_seconds:g} s at {outage.rate:,.0f} records/s)"
            )
            report.append("")
            report.append("| measure | value |")
            report.append("|---|---|")
            report.append(f"| records sent / delivered | {outage.sent:,} / "
                          f"{outage.delivered:,}{outage.note} |")  # fmt: skip
            report.append(f"| zero loss | {'yes' if outage.lossless else 'NO'} "
                          f"(kernel drops {outage.kernel_drops}) |")  # fmt: skip
            report.append(f"| spool.max_size | {args.outage_spool_max} |")
            report.append(f"| lines dropped by the spool | {outage.spool_dropped:,} |")
            report.append(f"| peak spool backlog | {drain.get('peak_pending', 0):,.0f} lines |")
            report.append(f"| peak RSS (VmHWM) | {outage.peak_rss / 2**20:.0f} MiB |")
            if "drain_seconds" in drain:
                fwd = drain["forward_rate_during_drain"]
                report.append(f"| backlog drained in | {drain['drain_seconds']:.1f} s |")
                report.append(
                    f"| forwarding rate while draining | {fwd:,.0f} lines/s = "
                    f"{fwd / outage.rate:.1f}× the incoming rate |"
                )
                report.append(
                    f"| net drain rate (backlog shrinking) | {drain['net_drain_rate']:,.0f} "
                    f"lines/s = {drain['net_drain_rate'] / outage.rate:.1f}× incoming |"
                )
            else:
                report.append("| backlog drained | not within the trial |")
            report.append(f"| load avg | {outage.load:.2f} |")
            report.append("")
        print("\n".join(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def nfcapd_version() -> str:
    out = subprocess.run(["nfcapd", "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"Version:\s*(\S+)", out.stdout + out.stderr)
    return match.group(1) if match else ""


if __name__ == "__main__":
    main()
