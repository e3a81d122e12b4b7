"""dialer: outbound voice-call campaigns through Twilio, with PostgreSQL as the single
source of truth."""

__version__ = "0.1.0"
