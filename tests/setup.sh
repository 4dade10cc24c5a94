#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: the real programs the
# tests run (rsyslog as the TLS platform, softflowd and fprobe as exporters, nfdump for the
# benchmark's reference) and the Python package with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PACKAGES="rsyslog rsyslog-openssl rsyslog-gnutls softflowd fprobe nfdump tcpdump procps openssl nftables iproute2 pmacct keepalived prometheus chromium"
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    # fprobe asks for an interface at install time; the tests pass their own.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
