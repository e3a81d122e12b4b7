"""Dial slots from the account's grid (docs/architecture.md#pacing): one statement, the
SQL function `dialer_take_dial_slots` (sql/0016), so grants of every instance queue on
one row and read one clock, the database's."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Final

from dialer.database import translate_errors
from dialer.models import DialSlots
from dialer.store.base import StoreBase


class PacingStore(StoreBase):
    """The database side of `dialer.pacing.SharedPacer`."""

    # $1 campaign (null: the account only), $2 slots wanted, $3 this instance's rate,
    # $4 horizon in seconds, $5 the heartbeat deadline of a live instance.
    _TAKE_SLOTS: Final = "SELECT * FROM dialer_take_dial_slots($1, $2, $3, $4, $5)"

    @translate_errors
    async def take_dial_slots(
        self, campaign_id: uuid.UUID | None, want: int, *, rate: float, horizon: float, live_within: float
    ) -> DialSlots:
        """Up to `want` free slots within `horizon` seconds, as seconds from the
        database's now. Instances count as live by the rescue's rule: a heartbeat
        younger than `live_within` seconds on this store's clock."""
        live_after = self.clock() - timedelta(seconds=live_within)
        row = await self.pool.fetchrow(self._TAKE_SLOTS, campaign_id, want, rate, horizon, live_after)
        assert row is not None  # the function returns exactly one row
        return DialSlots(
            db_now=row["db_now"],
            offsets=list(row["offsets"]),
            rate=row["rate"],
            campaign_rate=row["campaign_rate"],
            live=row["live"],
            retry_after=row["retry_after"],
        )
