"""A Twilio-compatible carrier simulator (aiohttp).

It serves the REST subset the daemon uses (create, fetch, list and update a Call under
`/2010-04-01/Accounts/{AccountSid}/`) and plays the status callbacks Twilio would, as
real signed HTTP POSTs. twilio-python talks to it unchanged when `twilio.api_base_url`
points here. Tests and benchmarks steer it through the `Simulator` object: outcome mix,
per-number scripts, REST failures, callback faults, and records of everything it did.

Waits are simulated seconds multiplied by `time_scale`; durations reported to the
client (CallDuration, duration) are the simulated seconds, timestamps are wall clock.

Modules: `core` (the Simulator, its clock and knobs; start_simulator), `rest` (the
REST API), `progress` (a call's status sequence and callbacks), `delivery` (signed
outgoing requests), `records` (what is kept per call), `cli` (`dialer simulator`).
See docs/carrier.md.
"""

from dialer.carrier.simulator.cli import register_cli
from dialer.carrier.simulator.core import RunningSimulator, Simulator, start_simulator
from dialer.carrier.simulator.records import (
    API_VERSION,
    OUTCOMES,
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    CallbackRecord,
    Gate,
    SimCall,
    rfc2822,
)

__all__ = [
    "API_VERSION",
    "OUTCOMES",
    "SIMULATOR_ACCOUNT_SID",
    "SIMULATOR_AUTH_TOKEN",
    "CallbackRecord",
    "Gate",
    "RunningSimulator",
    "SimCall",
    "Simulator",
    "register_cli",
    "rfc2822",
    "start_simulator",
]
