"""The `ticketflow` command: `serve`, `migrate`, `create-admin`, `seed-demo` (and `bench`).

`main.py` parses the arguments and runs the short commands; `serve.py` is `ticketflow serve`
(start, watch, stop); `databases.py` finds or starts the database a command uses; `ray_env.py`
is the environment Ray and Serve start with (secrets file, fast ingress through HAProxy);
`signals.py` turns SIGTERM/SIGINT into an orderly stop. The Serve application itself is
`serve_app.py`'s.
"""
