"""The operator console (docs/console.md): campaign board, campaign pages, actions,
CSV upload and the instances page, served by `dialer run` on its own listener.

Submodules, one job each: `app` (routes and handlers), `auth` (sign-in, sessions,
CSRF, roles), `live` (server-sent events fed by the daemon's LISTEN connection),
`charts` (server-rendered SVG), `passwords` (the operator password hash), `views`
(snapshots turned into what the templates show). Importing this package pulls in
nothing heavy: the configuration reads `passwords` from here.
"""
