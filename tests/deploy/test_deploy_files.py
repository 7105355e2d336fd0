"""The deployment files in deploy/ are valid: they parse, Ray's own schemas accept them, the app
they name imports, and secrets are referenced, never written down. No Ray cluster needed."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

import serve_app
from cli import ray_env
from config.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRETS = ("DATABASE_URL", "REDIS_URL", "STRIPE_API_KEY", "JWT_SECRET", "SMTP_URL")
ALL_SECRETS = (*SECRETS, "TICKETFLOW_ADMIN_PASSWORD")
SECRET_NAME = "ticketflow-secrets"


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.fixture(scope="module")
def serve_config() -> dict[str, Any]:
    return dict(load("serve_config.yaml"))


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return dict(load("rayservice.yaml"))


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return dict(load("cluster.yaml"))


def application(config: dict[str, Any], name: str = "ticketflow") -> dict[str, Any]:
    (app,) = [a for a in config["applications"] if a["name"] == name]
    return dict(app)


def gateway_of(config: dict[str, Any]) -> dict[str, Any]:
    app = application(config)
    (deployment,) = [d for d in app["deployments"] if d["name"] == "Gateway"]
    return dict(deployment)


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_every_yaml_file_parses(name: str) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert docs and all(isinstance(d, dict) for d in docs)


# -- the Serve config -----------------------------------------------------------------------------
def test_serve_config_is_a_valid_serve_deploy_schema(serve_config: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config)
    gateway, places = schema.applications
    assert (gateway.name, gateway.import_path, gateway.route_prefix) == (
        "ticketflow",
        "serve_app:app",
        "/",
    )
    assert (places.name, places.import_path, places.route_prefix) == (
        serve_app.PLACES_APP_NAME,
        "serve_app:places_app",
        serve_app.PLACES_ROUTE_PREFIX,
    )
    # The same settings reach the place readers as the Gateway (one anchor in the file).
    assert places.runtime_env == gateway.runtime_env
    assert schema.http_options.host == "0.0.0.0"


def test_serve_config_header_says_how_it_was_generated() -> None:
    head = (DEPLOY / "serve_config.yaml").read_text().split("\n\n", 1)[0]
    assert "serve build serve_app:app serve_app:places_app -o deploy/serve_config.yaml" in head
    assert "edited" in head


def test_the_import_path_imports_the_serve_application(serve_config: dict[str, Any]) -> None:
    from ray._common.utils import import_attr
    from ray.serve import Application

    app = application(serve_config)
    target = import_attr(app["import_path"])
    assert isinstance(target, Application)
    assert target is serve_app.app
    assert serve_app.Gateway.name == "Gateway"
    places = application(serve_config, serve_app.PLACES_APP_NAME)
    assert import_attr(places["import_path"]) is serve_app.places_app
    assert serve_app.PlaceReader.name == "PlaceReader"


def test_gateway_autoscales_with_max_ongoing_requests(serve_config: dict[str, Any]) -> None:
    from ray.serve.config import AutoscalingConfig

    gateway = gateway_of(serve_config)
    assert "num_replicas" not in gateway or gateway["num_replicas"] == "auto"
    auto = AutoscalingConfig(**gateway["autoscaling_config"])
    assert (
        1 <= auto.min_replicas <= (auto.initial_replicas or auto.min_replicas) <= auto.max_replicas
    )
    assert auto.min_replicas >= 2  # one node loss must not take the API down
    assert auto.target_ongoing_requests is not None
    assert gateway["max_ongoing_requests"] >= 100  # Serve's default of 5 starves an async replica
    assert auto.target_ongoing_requests <= gateway["max_ongoing_requests"]


def test_runtime_env_carries_the_settings_and_the_proxy_callback(
    serve_config: dict[str, Any],
) -> None:
    app = application(serve_config)
    env = app["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == ray_env.PROXY_CALLBACK
    # Serve's proxies are started by the controller, so the callback must reach its environment.
    controller_env = serve_config["controller_options"]["runtime_env"]["env_vars"]
    assert controller_env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == ray_env.PROXY_CALLBACK
    assert all(isinstance(v, str) for v in env.values()), "env var values must be strings"
    fields = set(Settings.model_fields)
    for key in env:
        if key.startswith("TICKETFLOW_"):
            assert key.removeprefix("TICKETFLOW_").lower() in fields, f"{key} is not a setting"
        else:
            assert key in ray_env.SHARED_ENV or key.startswith("RAY_"), key


def test_runtime_env_settings_are_valid_with_secrets_from_the_cluster(
    serve_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = application(serve_config)
    for key, value in app["runtime_env"]["env_vars"].items():
        monkeypatch.setenv(key, value)
    # What the cluster's environment provides (deploy/README.md):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/ticketflow")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("JWT_SECRET", secrets.token_urlsafe(48))
    monkeypatch.setenv("TICKETFLOW_ADMIN_PASSWORD", "a-real-admin-password")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_placeholder")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.env == "prod"
    assert settings.seed_demo is False


def test_no_secret_is_written_in_the_serve_config(serve_config: dict[str, Any]) -> None:
    app = application(serve_config)
    env = {
        **app["runtime_env"]["env_vars"],
        **serve_config["controller_options"]["runtime_env"]["env_vars"],
    }
    assert not set(env) & set(ALL_SECRETS)
    text = (DEPLOY / "serve_config.yaml").read_text()
    assert not re.search(r"(postgres(ql)?|redis|smtps?)://[^\s]*:[^\s]*@", text)
    assert "sk_live_" not in text and "sk_test_" not in text


# -- the KubeRay RayService -----------------------------------------------------------------------
def containers(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    spec = rayservice["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_rayservice_shape(rayservice: dict[str, Any]) -> None:
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    cluster_spec = rayservice["spec"]["rayClusterConfig"]
    assert cluster_spec["rayVersion"].startswith("2.60")
    assert cluster_spec["headGroupSpec"]["rayStartParams"]["port"] == "6380"
    (workers,) = cluster_spec["workerGroupSpecs"]
    assert 2 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    for container in containers(rayservice):
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["readinessProbe"] and container["livenessProbe"]


def test_rayservice_embeds_the_serve_config(
    rayservice: dict[str, Any], serve_config: dict[str, Any]
) -> None:
    from ray.serve.schema import ServeDeploySchema

    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    assert embedded == serve_config, "serveConfigV2 must stay equal to deploy/serve_config.yaml"
    port = embedded["http_options"]["port"]
    for container in containers(rayservice):
        serve_ports = [p["containerPort"] for p in container["ports"] if p["name"] == "serve"]
        assert serve_ports == [port], container["name"]


def test_rayservice_takes_every_secret_from_a_kubernetes_secret(rayservice: dict[str, Any]) -> None:
    template = load("secret.template.yaml")
    assert template["kind"] == "Secret" and template["metadata"]["name"] == SECRET_NAME
    for container in containers(rayservice):
        env = {e["name"]: e for e in container["env"]}
        for name in ALL_SECRETS:
            assert name in env, f"{container['name']} lacks {name}"
            assert "value" not in env[name], f"{name} is inlined in {container['name']}"
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME
            assert ref["key"] in template["stringData"]
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]["value"] == ray_env.PROXY_CALLBACK


def test_the_secret_template_holds_placeholders_only() -> None:
    template = load("secret.template.yaml")
    assert set(template["stringData"]) == set(ALL_SECRETS)
    for key, value in template["stringData"].items():
        assert "REPLACE_ME" in value, key


def test_the_migration_job_uses_the_secret() -> None:
    job = load("migrate-job.yaml")
    assert job["kind"] == "Job"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "ticketflow migrate" in " ".join(container["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME


# -- the Ray cluster launcher config --------------------------------------------------------------
def test_cluster_launcher_config_is_valid(cluster: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(dict(cluster)))  # what `ray up` checks before touching a cloud
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    workers = [t for name, t in types.items() if name != cluster["head_node_type"]]
    assert workers and all(t.get("min_workers", 0) >= 1 for t in workers)


def test_cluster_launcher_uses_gcs_port_6380(cluster: dict[str, Any]) -> None:
    head = " ".join(cluster["head_start_ray_commands"])
    worker = " ".join(cluster["worker_start_ray_commands"])
    assert "ray start --head --port=6380" in head
    assert "--dashboard-host=0.0.0.0" in head
    assert "--address=$RAY_HEAD_IP:6380" in worker
    assert "6379" not in head + worker
    assert any("pip install" in c for c in cluster["setup_commands"])
    for commands in (head, worker):  # secrets reach `ray start` from the node, not from the repo
        assert "ticketflow.env" in commands


def test_cluster_launcher_keeps_secrets_out_of_the_file() -> None:
    text = (DEPLOY / "cluster.yaml").read_text()
    for name in ALL_SECRETS:
        assert not re.search(rf"^\s*(export\s+)?{name}\s*[:=]", text, re.MULTILINE), name


def test_readme_gives_the_exact_steps() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for step in (
        "ray start --head --port=6380",
        "ray start --address=",
        "serve deploy deploy/serve_config.yaml",
        "kubectl apply -f",
        "ticketflow migrate",
    ):
        assert step in readme, step
