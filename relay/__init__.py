"""flowrelay: NetFlow v1/v5/v6/v7 in, one syslog line per flow out, over TLS, losing nothing."""

__version__ = "0.1.0"
