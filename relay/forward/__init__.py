"""The TLS syslog forwarder: from the spool to the platform, at least once.

Delivery guarantee. Syslog over TLS has no application acknowledgement, and a returned
``send`` only means the local kernel took the bytes. So the forwarder counts every byte it
hands to the kernel on a connection, asks the kernel how many of them are still unacknowledged
(``SIOCOUTQ``), and moves the spool cursor past a batch only once the platform's TCP has
acknowledged the batch's last byte. When a connection breaks, whatever was sent but not
acknowledged is sent again on the next connection: those lines may arrive twice, and are counted
as ``duplicates_resent``. What the platform's kernel acknowledged but its application never
read (it crashed, or closed with unread data) cannot be seen from here; that is the limit of
the contract.

The package, one concern per module:

- ``config``: Endpoint and ForwarderConfig, validated once;
- ``diagnosis``: why a connection failed, in one sentence (pure);
- ``ledger``: what was sent, what was acknowledged, stalls, what is resent (sans-IO);
- ``link``: the connection (TCP, TLS over memory BIOs, SIOCOUTQ, clean close) behind the
  small ``Link`` protocol;
- ``loop``: the Forwarder, with one session object per connection.
"""

from __future__ import annotations

from relay.forward.config import Endpoint, ForwarderConfig
from relay.forward.diagnosis import describe_tls_failure
from relay.forward.loop import Forwarder, ForwarderStats

__all__ = [
    "Endpoint",
    "Forwarder",
    "ForwarderConfig",
    "ForwarderStats",
    "describe_tls_failure",
]
