"""A Twilio-compatible carrier simulator (aiohttp).

It serves the REST subset the daemon uses (create, fetch, list and update a Call under
`/2010-04-01/Accounts/{AccountSid}/`) and plays the status callbacks Twilio would, as
real signed HTTP POSTs. twilio-python talks to it unchanged when `twilio.api_base_url`
points here. Tests and benchmarks steer it through the `Simulator` object: outcome mix,
per-number scripts, REST failures, callback faults, and records of everything it did.

Waits are simulated seconds multiplied by `time_scale`; durations reported to the
client (CallDuration, duration) are the simulated seconds, timestamps are wall clock.

Once a call is answered the simulator plays the callee: it runs the call's TwiML as
Twilio does (`interpreter`, `document`) and the callee behaves as scripted or drawn
(`callee`: presses keys, stays silent, hangs up, is an answering machine).

Modules: `core` (the Simulator, its clock and knobs; start_simulator), `rest` (the
REST API), `progress` (a call's status sequence, machine detection and callbacks),
`interpreter` (TwiML verb by verb), `document` (TwiML parsing and verb lengths),
`callee` (behaviours), `delivery` (signed outgoing requests), `records` (what is
kept per call), `cli` (`dialer simulator`).
See docs/carrier.md.
"""

from dialer.carrier.simulator.callee import Callee, Press, parse_callee
from dialer.carrier.simulator.cli import register_cli
from dialer.carrier.simulator.core import RunningSimulator, Simulator, start_simulator
from dialer.carrier.simulator.records import (
    API_VERSION,
    OUTCOMES,
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    AppError,
    CallbackRecord,
    DialLeg,
    Gate,
    Heard,
    SimCall,
    rfc2822,
)

__all__ = [
    "API_VERSION",
    "OUTCOMES",
    "SIMULATOR_ACCOUNT_SID",
    "SIMULATOR_AUTH_TOKEN",
    "AppError",
    "CallbackRecord",
    "Callee",
    "DialLeg",
    "Gate",
    "Heard",
    "Press",
    "RunningSimulator",
    "SimCall",
    "Simulator",
    "parse_callee",
    "register_cli",
    "rfc2822",
    "start_simulator",
]
