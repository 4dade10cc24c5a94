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
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from relay.metrics import Family

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for name, fn in cases().items():
        best = min(per_call_ns(fn, args.seconds) for _ in range(args.repeat))
        print(f"{name:28} {best:7.0f} ns per call")


if __name__ == "__main__":
    main()
