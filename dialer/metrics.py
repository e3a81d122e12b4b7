"""Prometheus metrics of one dialer process, on a registry of its own (no global
state: two daemons in one test process keep separate figures)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Counter", "Metrics"]


class Metrics:
    """Every figure docs/webhooks.md lists: dials, outcomes, live calls, queue depth,
    callback latency, signature failures, DB errors, loop restarts (plus carrier errors)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.dials = Counter(
            "dialer_dials", "Carrier requests started, by campaign", ["campaign_id"], registry=r
        )
        self.outcomes = Counter(
            "dialer_call_outcomes",
            "Final call outcomes (completed, busy, no-answer, ...), by campaign",
            ["campaign_id", "outcome"],
            registry=r,
        )
        self.carrier_errors = Counter(
            "dialer_carrier_errors", "Carrier request errors by kind", ["kind"], registry=r
        )
        self.live_calls = Gauge("dialer_live_calls", "Calls held by this instance's pool", registry=r)
        self.queue_depth = Gauge(
            "dialer_due_calls",
            "Scheduled calls already due in dialable campaigns, at the last count: state=dialable "
            "inside the contact's calling hours and days, state=held outside them (waiting, not late)",
            ["state"],
            registry=r,
        )
        self.callback_seconds = Histogram(
            "dialer_callback_seconds",
            "Time to handle one carrier callback",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.callbacks = Counter(
            "dialer_callbacks", "Carrier callbacks by result (applied, ignored, unknown)", ["result"],
            registry=r,
        )
        self.gather_seconds = Histogram(
            "dialer_gather_seconds",
            "Time to handle one key press (a <Gather> action request)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.key_presses = Counter(
            "dialer_key_presses",
            "Key presses (<Gather> action requests) by result (applied, ignored, unknown, malformed, error)",
            ["result"],
            registry=r,
        )
        self.responses = Counter(
            "dialer_call_responses",
            "Answers of finished calls: a campaign's declared outcomes, opted_out, transferred, "
            "no_response, voicemail (other: a label no longer in the campaign's menu), by campaign",
            ["campaign_id", "response"],
            registry=r,
        )
        self.signature_failures = Counter(
            "dialer_signature_failures", "Requests refused for a missing or wrong signature", registry=r
        )
        self.db_errors = Counter("dialer_db_errors", "Database errors seen by the daemon", registry=r)
        self.http_connections = Gauge(
            "dialer_http_connections", "Open connections to the daemon's HTTP listeners", registry=r
        )
        self.http_buffered_bytes = Gauge(
            "dialer_http_buffered_bytes", "Request bytes received and not yet handled", registry=r
        )
        self.http_closed = Counter(
            "dialer_http_connections_closed",
            "Connections closed by the listener's limits (header_timeout, body_timeout, "
            "idle_evicted, refused_at_cap, memory_budget)",
            ["reason"],
            registry=r,
        )
        self.dial_slot_grants = Counter(
            "dialer_dial_slot_grants", "Statements spent taking dial slots of the shared rate", registry=r
        )
        self.dial_slots_dropped = Counter(
            "dialer_dial_slots_dropped",
            "Dial slots let go unused because the call woke too late for them (a loaded loop)",
            registry=r,
        )
        self.dial_rate_share = Gauge(
            "dialer_dial_rate_share",
            "Dials per second this instance can count on: the account's rate over the live instances",
            registry=r,
        )
        self.loop_restarts = Counter(
            "dialer_loop_restarts", "Side loops (scheduler, listener) restarted after a crash", ["loop"],
            registry=r,
        )

    def prune_campaigns(self, keep: Callable[[str], bool]) -> None:
        """Drop the per-campaign series of every campaign `keep` rejects (one that is
        no longer dialed), so the label's values stay bounded by the live campaigns."""
        for counter in (self.dials, self.outcomes, self.responses):
            stale = {
                tuple(sample.labels.values())
                for family in counter.collect()
                for sample in family.samples
                if sample.name.endswith("_total") and not keep(sample.labels["campaign_id"])
            }
            for labels in stale:
                counter.remove(*labels)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))
