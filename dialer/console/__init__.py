"""The operator console (docs/console.md): campaign board, campaign pages, actions,
CSV upload and the instances page, served by `dialer run` on its own listener.

Submodules, one job each: `app` (routes and handlers), `server` (its own listener
and pool, as `dialer run` starts it), `auth` (sign-in, sessions, CSRF, roles), `live`
(server-sent events fed by the daemon's LISTEN connection), `charts` (server-rendered
SVG), `passwords` (the operator password hash), `views` (template helpers), `cli`
(`dialer console hash-password`). Importing this package pulls in
nothing heavy: the configuration reads `passwords` from here.
"""
