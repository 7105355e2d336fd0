"""Issue 17 on three nodes: after a booking, no secret (JWT secret, the Postgres and Redis passwords,
the admin password), no user password, token or card token in any file of any node's Ray session
directory (the worker removed by test_multinode.py included) or in the head's dashboard state API.

Run on their own (see conftest.py): python -m pytest -m cluster tests/cluster
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from tests import secret_scrape
from tests.cluster.conftest import ClusterSecrets, RunningCluster
from tests.helpers import ADMIN, book_and_wait, create_event, login

pytestmark = pytest.mark.cluster

CARD = "pm_card_visa"


async def test_no_secret_where_ray_records_or_shows_on_a_cluster(
    ray_cluster: RunningCluster,
    cluster_http: httpx.AsyncClient,
    cluster_secrets: ClusterSecrets,
) -> None:
    password = f"Buyer{secrets.token_hex(8)}"
    email = f"buyer-{secrets.token_hex(4)}@example.com"
    r = await cluster_http.post(
        "/api/users/register", json={"name": "Buyer", "email": email, "password": password}
    )
    assert r.status_code == 201, r.text
    token = await login(cluster_http, email, password)
    admin = await login(cluster_http, *ADMIN)
    event = await create_event(cluster_http, admin, vip=0, general=4, name="Secret show")
    booking = await book_and_wait(cluster_http, token, event["id"], ["seat_A1"], CARD)
    assert booking["status"] == "CONFIRMED", booking

    needles = {
        **cluster_secrets.values,
        "buyer's password": password,
        "card token": CARD,
        "buyer's JWT": token,
        "admin's JWT": admin,
    }
    nodes = [ray_cluster.head, *ray_cluster.workers]
    sessions = sorted({Path(node.get_session_dir_path()) for node in nodes})
    assert secret_scrape.files_under(sessions) > 20
    answers = secret_scrape.dashboard_answers(
        secret_scrape.dashboard_url(Path(ray_cluster.head.get_session_dir_path()))
    )
    assert "TICKETFLOW_STATE_DIR" in answers[secret_scrape.RUNTIME_ENVS_PATH]  # the right place
    leaks = secret_scrape.leaks_in_dashboard(answers, needles) + secret_scrape.leaks_in_files(
        sessions, needles
    )
    assert leaks == []
