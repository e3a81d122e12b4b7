"""The engine's store: every database operation of the dialing engine and the
webhook listener, as named methods, one facade over the modules that hold them by
subject:

    instances.py     registration, heartbeat, clean stop
    housekeeping.py  contact checks, expiry, cancellation, validation, activation, completion
    claims.py        dialable campaigns, claims, the dial gate, handing a claim back
    events.py        adoption, failed requests, carrier events, key presses, recordings
    live.py          live calls, rescue, shutdown, the TwiML lookup
    pacing.py        dial slots of the rate shared by every instance

Each method is one short transaction (most are one statement), behind the error
boundary (`dialer.database.translate_errors`). How an attempt ends is not here but in
SQL, in one place (sql/0009_attempt_end.sql, with the response rules of
sql/0014_interactive_calls.sql).
"""

from __future__ import annotations

from dialer.store.base import Clock, utcnow
from dialer.store.claims import ClaimStore
from dialer.store.events import CallEventStore
from dialer.store.housekeeping import HousekeepingStore
from dialer.store.instances import InstanceStore
from dialer.store.live import CallEnding, LiveCall, LiveCallStore
from dialer.store.pacing import PacingStore

__all__ = ["CallEnding", "Clock", "LifecycleStore", "LiveCall", "utcnow"]


class LifecycleStore(
    InstanceStore, HousekeepingStore, ClaimStore, CallEventStore, LiveCallStore, PacingStore
):
    """The engine's view of the database. One per process; safe for concurrent use.
    Built with `LifecycleStore(pool, instance_id=…, validate_template=…, clock=…)`
    (see `dialer.store.base.StoreBase`)."""
