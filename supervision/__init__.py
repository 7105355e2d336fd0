"""Supervision of the processes `ticketflow serve` runs beside the application.

The embedded Postgres (`postgres.py`, with `postgres_root.py` and `postgres_binaries.py` for
running it as root) and Redis (`redis.py`) of the zero-configuration set-up; the loop that
restarts them when they die (`supervisor.py`); the one owner of a state directory and the URLs it
publishes (`state_dir.py`); free ports (`ports.py`) and processes as /proc shows them
(`processes.py`). Nothing here knows the application: it imports only the standard library.
"""
