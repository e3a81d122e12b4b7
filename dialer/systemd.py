"""The sd_notify protocol, spoken directly: one datagram per message to the socket in
$NOTIFY_SOCKET (a path, or an abstract name written with a leading '@').

Without $NOTIFY_SOCKET (not under systemd, or Type= is not notify) every method is a
no-op, so the daemon calls them unconditionally. A failed send is logged and ignored:
the service manager being unreachable must never stop calls in flight.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SystemdNotifier:
    """Sends READY/WATCHDOG/STOPPING/STATUS to systemd; build it with `from_env()`."""

    address: str | None
    watchdog_usec: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> SystemdNotifier:
        """Read $NOTIFY_SOCKET and $WATCHDOG_USEC/$WATCHDOG_PID (default: os.environ and
        this process). The watchdog is ours only when WATCHDOG_PID is unset or our pid."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        raw_usec = env.get("WATCHDOG_USEC", "")
        raw_pid = env.get("WATCHDOG_PID", "")
        own_pid = os.getpid() if pid is None else pid
        if raw_usec.isdigit() and int(raw_usec) > 0 and (not raw_pid or raw_pid == str(own_pid)):
            watchdog = int(raw_usec)
        return cls(address=address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to talk to."""
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec (as systemd advises),
        or None when the watchdog is off."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished (database, LISTEN and HTTP up)."""
        return self.notify(READY="1", STATUS=status)

    def watchdog(self) -> bool:
        """Still alive: sent from the scheduler loop, so a hung loop gets restarted."""
        return self.notify(WATCHDOG="1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began (SIGTERM received; draining)."""
        return self.notify(STOPPING="1", STATUS=status)

    def status(self, text: str) -> bool:
        """A one-line status shown by `systemctl status`."""
        return self.notify(STATUS=text)

    def notify(self, **fields: str | None) -> bool:
        """Send one datagram of KEY=value lines (None values are left out); True if sent."""
        if self.address is None:
            return False
        # A newline would start a new assignment in the protocol: keep values one line.
        lines = [f"{key}={' '.join(value.splitlines())}"
                 for key, value in fields.items() if value is not None]
        if not lines:
            return False
        payload = "\n".join(lines).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(payload)
        except OSError as exc:
            log.warning("systemd_notify_failed", error=str(exc), fields=sorted(fields))
            return False
        return True
