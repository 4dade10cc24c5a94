"""Test equipment that ships with the relay, as ``trio.testing`` does with trio: a TLS syslog
receiver (the platform's stand-in) and a synthetic exporter. ``relay demo``, ``relay
send-test``, the tests and the benchmarks use them; the daemon never imports them."""
