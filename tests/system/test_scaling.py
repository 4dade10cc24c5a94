"""deploy/keepalived.conf and deploy/SCALING.md: the example passes keepalived's own config
test (Debian's keepalived), broken copies of it fail that test, and it agrees with the relay
it fronts (the NetFlow port, UDP, source hashing, direct routing, the /healthz check on the
metrics port)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from relay.config import DEFAULT_LISTEN, SCHEMA

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KEEPALIVED = DEPLOY / "keepalived.conf"
SCALING = DEPLOY / "SCALING.md"
NETFLOW_PORT = int(DEFAULT_LISTEN[0].rsplit(":", 1)[1])
METRICS_PORT = int(SCHEMA["metrics"]["address"].rsplit(":", 1)[1])

needs_keepalived = pytest.mark.skipif(
    shutil.which("keepalived") is None, reason="keepalived missing (tests/setup.sh installs it)"
)


def interface() -> str:
    """A non-loopback interface of this machine: keepalived's config test checks that the
    VRRP interface exists, and the example's eth0 may not be there."""
    names = [name for _, name in socket.if_nameindex() if name != "lo"]
    if not names:
        pytest.skip("no network interface other than lo for VRRP")
    return "eth0" if "eth0" in names else names[0]


def config_test(tmp_path: Path, text: str, name: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    path.write_text(text.replace(" eth0", f" {interface()}"))
    return subprocess.run(
        ["keepalived", "--config-test", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )


@needs_keepalived
def test_the_example_passes_the_keepalived_config_test(tmp_path: Path) -> None:
    done = config_test(tmp_path, KEEPALIVED.read_text(), "keepalived.conf")
    # Warnings make it exit non-zero too: the example is expected to be spotless.
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr


BROKEN = {
    "an unknown scheduler": ("lb_algo sh", "lb_algo shash"),
    "a misspelt protocol": ("protocol UDP", "protocol UPD"),
    "an impossible VRRP router id": ("virtual_router_id 51", "virtual_router_id 300"),
    "a keyword that does not exist": ("inhibit_on_failure", "inhibit_on_failures"),
}


@needs_keepalived
@pytest.mark.parametrize("change", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_copy_fails_the_config_test(tmp_path: Path, change: tuple[str, str]) -> None:
    old, new = change
    text = KEEPALIVED.read_text()
    assert old in text
    done = config_test(tmp_path, text.replace(old, new), "broken.conf")
    assert done.returncode != 0, done.stdout + done.stderr


def virtual_server() -> str:
    text = KEEPALIVED.read_text()
    match = re.search(r"^virtual_server (\S+) (\d+) \{(.*?)^\}", text, re.M | re.S)
    assert match is not None
    assert int(match.group(2)) == NETFLOW_PORT
    return match.group(3)


def settings(block: str) -> set[str]:
    return {line.split("#")[0].strip() for line in block.splitlines()} - {""}


def test_the_virtual_server_is_udp_source_hashed_with_direct_routing() -> None:
    found = settings(virtual_server())
    for wanted in ("protocol UDP", "lb_algo sh", "sh-fallback", "lb_kind DR"):
        assert wanted in found
    # sh-port would split one exporter over relays whenever its source port changed.
    assert "sh-port" not in found


def test_every_relay_is_health_checked_on_its_healthz_at_the_metrics_port() -> None:
    block = virtual_server()
    servers = re.findall(r"real_server (\S+) (\d+) \{(.*?)\n    \}", block, re.S)
    assert len(servers) >= 2
    for address, port, body in servers:
        assert int(port) == NETFLOW_PORT
        checks = settings(body)
        assert "path /healthz" in checks
        assert "status_code 200" in checks
        assert f"connect_port {METRICS_PORT}" in checks
        assert f"connect_ip {address}" in checks


def test_scaling_doc_gives_the_ipvsadm_commands_and_says_what_is_lost() -> None:
    text = SCALING.read_text()
    assert re.search(rf"ipvsadm -A -u \S+:{NETFLOW_PORT} -s sh", text)
    assert re.search(rf"ipvsadm -a -u \S+:{NETFLOW_PORT} -r \S+ -g", text)
    for topic in ("Workers per core", "VRRP", "NAT", "spool stays on the dead box"):
        assert topic in text, topic
