"""pretix, the open-source ticket shop, as a `bench compare` target (issue 16).

- `install`: pretix in a virtual environment of its own, from PyPI on first use;
- `server`: its database, configuration, API token and gunicorn (`start_pretix`);
- `bootstrap`: the organiser and API token, run by pretix's interpreter (not imported here);
- `scenario`: the on-sale scenario through pretix's REST order creation (`run_pretix_onsale`).
"""
