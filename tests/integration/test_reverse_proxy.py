"""The reverse-proxy example of docs/operations.md (systemd/nginx-dialer.conf), served
by a real nginx with a throwaway self-signed certificate on loopback in front of the
webhook app and the real store: a callback signed for the https public URL is
applied through it, and the page shows the file exactly as it is tested."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from twilio.request_validator import RequestValidator

from dialer.store.lifecycle import LifecycleStore
from tests.harness import free_port
from tests.integration.webhook_helpers import SID, insert_live_call
from tests.webhook_harness import TOKEN, MakeServer, make_server, status_form  # noqa: F401 - fixture requested by name

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "systemd" / "nginx-dialer.conf"
OPERATIONS = REPO / "docs" / "operations.md"
HOST = "dialer.example.com"


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    return found


@dataclass
class Proxy:
    """A running nginx on 127.0.0.1:port speaking TLS."""

    port: int
    error_log: Path

    @property
    def public_url(self) -> str:
        """What http.public_url says behind this proxy (a test port, so it is written out)."""
        return f"https://{HOST}:{self.port}"


def _substitute(text: str, replacements: dict[str, str]) -> str:
    """The example with only its site-specific values changed, each found exactly once."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{EXAMPLE.name} no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


def _configure(upstream_port: int, port: int, tmp: Path) -> tuple[list[str], Path]:
    """Write a throwaway certificate and nginx's configuration (the example, with its
    site values replaced) under tmp; check it with `nginx -t`; return the command."""
    nginx = _nginx()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian: apt-get install -y openssl)")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "1", "-subj", f"/CN={HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    site = _substitute(
        EXAMPLE.read_text(),
        {
            "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            f"/etc/letsencrypt/live/{HOST}/fullchain.pem": str(cert),
            f"/etc/letsencrypt/live/{HOST}/privkey.pem": str(key),
        },
    )
    (tmp / "dialer.conf").write_text(site)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir()
    error_log = tmp / "error.log"
    # As root, nginx's workers would switch to nobody, who cannot enter pytest's 0700 tmp.
    user = "user root;" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(
        f"""{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/dialer.conf;
}}
"""
    )
    command = [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(error_log)]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr
    return command, error_log


@contextlib.asynccontextmanager
async def _nginx_in_front_of(upstream_port: int, port: int, tmp: Path) -> AsyncIterator[Proxy]:
    """nginx on 127.0.0.1:port with the example's configuration, forwarding to
    127.0.0.1:upstream_port; stopped (SIGQUIT) on exit."""
    command, error_log = await asyncio.to_thread(_configure, upstream_port, port, tmp)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        for _ in range(200):
            assert proc.poll() is None, error_log.read_text()
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.025)
        yield Proxy(port, error_log)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
async def proxied(
    make_server: MakeServer, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[tuple[Proxy, aiohttp.ClientSession]]:
    """The webhook app on the real store, behind nginx, and an HTTPS client for it."""
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=lambda _t: None)
    # The app must know its public URL before nginx starts, so nginx's port comes first.
    port = free_port()
    server = await make_server(store, public_url=f"https://{HOST}:{port}")
    upstream = int(server.base.rsplit(":", 1)[1])
    async with _nginx_in_front_of(upstream, port, tmp_path) as proxy:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE  # a throwaway self-signed certificate
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            yield proxy, http


def _target(proxy: Proxy, path_qs: str) -> str:
    return f"https://127.0.0.1:{proxy.port}{path_qs}"


async def test_a_callback_signed_for_the_https_url_is_applied_through_nginx(
    proxied: tuple[Proxy, aiohttp.ClientSession], conn: asyncpg.Connection
) -> None:
    """Twilio's view: POST https://host/twilio/status?call_id=… signed for the public
    URL reaches the daemon through the proxy unchanged and completes the call."""
    proxy, http = proxied
    call = await insert_live_call(conn)
    form = status_form(SID, "completed", CallDuration="12")
    signature = RequestValidator(TOKEN).compute_signature(proxy.public_url + call.status_path, form)
    headers = {"X-Twilio-Signature": signature, "Host": f"{HOST}:{proxy.port}"}
    async with http.post(_target(proxy, call.status_path), data=form, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Server"] == "nginx"  # server_tokens off: no version
    row = await conn.fetchrow("SELECT status::text, duration FROM calls WHERE id = $1", call.call_id)
    assert row is not None and (row["status"], row["duration"]) == ("completed", 12)


async def test_the_proxy_exposes_only_the_carrier_routes(proxied: tuple[Proxy, aiohttp.ClientSession]) -> None:
    """/healthz, /readyz and /metrics answer 404 through the proxy; an unsigned callback
    still meets the daemon's 403; a body over 64 KiB is refused by nginx (413)."""
    proxy, http = proxied
    for path in ("/healthz", "/readyz", "/metrics"):
        async with http.get(_target(proxy, path)) as response:
            assert response.status == 404, path
    async with http.post(_target(proxy, "/twilio/status"), data=status_form()) as response:
        assert response.status == 403
    async with http.post(_target(proxy, "/twilio/status"), data=b"x" * (65 * 1024)) as response:
        assert response.status == 413


def test_the_operations_page_shows_the_tested_file() -> None:
    """docs/operations.md quotes systemd/nginx-dialer.conf verbatim, so the page and the
    tested file cannot drift apart."""
    page = OPERATIONS.read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", page, flags=re.S)
    assert blocks, "docs/operations.md has no nginx example"
    assert blocks[0] == EXAMPLE.read_text()
