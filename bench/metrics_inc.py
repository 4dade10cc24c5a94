"""The hot path's counter bumps: a plain dict entry against prometheus_client's Counter.

    python3 -m bench.metrics_inc [--seconds S] [--repeat N]

Per datagram the ingest path bumps three counters today (packets received by version,
records decoded by the datagram's record count, and one more on an odd datagram), so the
per-call cost times three is what a metric library adds to every datagram. Measured:

- dict: :class:`relay.metrics.Family` ``inc(n, labels)``, a dict get and set;
- client labels: ``Counter.labels("5").inc()``, the library's usual call (label lookup under
  the metric's lock, then the value's lock);
- client child: a ``Counter.labels("5")`` bound once, then ``.inc()`` (the value's lock only);
- client unlabelled: ``Counter.inc(n)`` on a metric without labels.

Then what one scrape costs the event loop: the relay's families (with a few labelled series)
and the process metrics through prometheus_client's text exposition, once each way.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from relay.metrics import Family, RelayMetrics

CALLS = 100_000


def per_call_ns(fn: Callable[[], None], seconds: float) -> float:
    """Nanoseconds per ``fn()`` call, the loop's own cost subtracted."""

    def empty() -> None:
        pass

    def run(f: Callable[[], None]) -> float:
        calls = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(CALLS // 100):
                f()
                f()
                f()
                f()
                f()
                f()
                f()
                f()
                f()
                f()
            calls += CALLS // 10
        return (time.perf_counter() - started) / calls * 1e9

    return run(fn) - run(empty)


def cases() -> dict[str, Callable[[], None]]:
    registry = CollectorRegistry()
    labelled = Counter("bench_labelled", "h", ["version"], registry=registry)
    unlabelled = Counter("bench_unlabelled", "h", registry=registry)
    child = labelled.labels("5")
    family = Family(name="bench_dict_total", kind="counter", help="h")
    version = (("version", "5"),)
    return {
        "dict (Family.inc)": lambda: family.inc(1, version),
        "client labels().inc()": lambda: labelled.labels("5").inc(),
        "client child.inc()": child.inc,
        "client unlabelled inc(30)": lambda: unlabelled.inc(30),
    }


def scrape_us(seconds: float) -> tuple[float, float]:
    """Microseconds per text and per OpenMetrics exposition of a relay's metrics."""
    metrics = RelayMetrics()
    for version in ("1", "5", "7", "9", "10", "other"):
        metrics.packets_received.inc(1, (("version", version),))
    for reason in ("empty", "short_header", "unknown_version", "zero_count", "short_records"):
        metrics.packets_malformed.inc(1, (("reason", reason),))
    registry = metrics.registry

    def each(fn: Callable[[], object]) -> float:
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            fn()
            calls += 1
        return (time.perf_counter() - started) / calls * 1e6

    return each(registry.render), each(lambda: registry.exposition("application/openmetrics-text"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for name, fn in cases().items():
        best = min(per_call_ns(fn, args.seconds) for _ in range(args.repeat))
        print(f"{name:28} {best:7.0f} ns per call")
    runs = [scrape_us(args.seconds) for _ in range(args.repeat)]
    text, om = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"{'scrape, text 0.0.4':28} {text:7.0f} us")
    print(f"{'scrape, OpenMetrics':28} {om:7.0f} us")


if __name__ == "__main__":
    main()
