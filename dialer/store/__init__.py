"""The store: every SQL statement of the dialer lives in this package, one module per
area (lifecycle for the engine and webhooks; campaigns and contacts for operators)."""
