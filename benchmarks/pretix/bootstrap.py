"""Run by pretix's own interpreter (not TicketFlow's): an organiser, a team and its API token.

pretix's REST API cannot create organisers or API tokens (a system administrator does, in the
web back office), so this is the one set-up step done through pretix's Django models; everything
else (seating plan, event, products, quotas) goes through the REST API like any integration.
Checked against pretix 2026.8.0: `Organizer.save()` creates the default sales channels (the order
API needs "web"), `Team.all_events` / `all_event_permissions` / `all_organizer_permissions`, and
`TeamAPIToken.token` generated on save.

    PRETIX_CONFIG_FILE=... python bootstrap.py <organizer-slug>   -> {"organizer": ..., "token": ...}
"""

from __future__ import annotations

import json
import sys


def main(slug: str) -> dict[str, str]:
    import django

    django.setup()
    from django_scopes import scopes_disabled
    from pretix.base.models import Organizer, Team

    with scopes_disabled():
        organizer = Organizer.objects.create(name=f"Bench organiser {slug}", slug=slug)
        team = Team.objects.create(
            organizer=organizer,
            name="Benchmark",
            all_events=True,
            all_event_permissions=True,
            all_organizer_permissions=True,
        )
        token = team.tokens.create(name="ticketflow bench")
        if not organizer.sales_channels.filter(identifier="web").exists():
            raise SystemExit(
                "pretix did not create the default 'web' sales channel the order API uses"
            )
        return {"organizer": organizer.slug, "token": token.token}


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pretix.settings")
    print(json.dumps(main(sys.argv[1])))
