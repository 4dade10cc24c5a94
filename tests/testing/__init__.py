"""Tests of relay.testing: the TLS syslog sink."""
