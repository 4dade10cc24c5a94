"""Tests that run real processes: relay subprocesses, rsyslog, exporters, crashes, deploy."""
