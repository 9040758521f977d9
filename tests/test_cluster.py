"""A real two-node Ray cluster on this machine: `ray start --head` and a second `ray start`
(separate processes, separate resources), token authentication on, PostgreSQL storage.

The sweep's trials run on both nodes; then the second node is killed mid-sweep and the
study still finishes with its exact budget, the lost trial retried from its checkpoint. The
driver joins by `HEAD:6379`, RAY_ADDRESS, `auto` and Ray Client (`ray://`); a driver or a
laptop killed mid-sweep, or stopped with Ctrl-C, is followed by a resume that finishes the
budget; a node on another disk, a wrong token and bad input are each one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from sweeper.engine.cluster import NeededPath, probe
from sweeper.study.coordination import leases
from tests.conftest import postgres_url, write_spec
from tests.test_resume import (
    assert_finishes,
    assert_interrupted_then_resumed,
    ctrl_c,
    curve_spec,
    kill,
    mid_sweep,
    start,
    trials_of,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.skipif(postgres_url() is None, reason="SWEEPER_TEST_POSTGRES_URL is not set")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Two Ray nodes started with `ray start --block`, each in its own process group."""

    def __init__(self, env: dict[str, str], address: str, client_address: str, head: subprocess.Popen[bytes],
                 worker: subprocess.Popen[bytes]):
        self.env, self.address, self.client_address = env, address, client_address
        self.head, self.worker = head, worker

    def nodes(self) -> list[dict]:
        """The cluster's nodes as a separate driver sees them (with the token)."""
        script = (f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                  "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'resources': n['Resources']} "
                  "for n in ray.nodes()]))")
        done = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    def node_id(self, resource: str) -> str:
        return next(n["id"] for n in self.nodes() if resource in n["resources"])


def _ray_start(args: list[str], env: dict[str, str], log: Path, wrap: list[str] | None = None
               ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*(wrap or []), "ray", "start", "--block", "--disable-usage-stats", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Head (1 CPU, resource node_a) and a second node (1 CPU, node_b), with a token both share.

    Ray 2.60's `ray start` turns token authentication on: every node and driver gets the same
    RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, as docker/README.md tells users to do.
    """
    with _cluster(tmp_path) as made:
        yield made


@contextlib.contextmanager
def _cluster(tmp_path: Path, worker_wrap: list[str] | None = None) -> Iterator[Cluster]:
    """The two-node cluster; ``worker_wrap`` runs the second node's `ray start` through a command."""
    # The cluster's own Ray temp folder, <RAY_TMPDIR>/ray, for its nodes and drivers alike: it holds
    # ray_current_cluster, so `--address auto` finds this cluster even where other Ray instances
    # run (the test session's local Ray). Short: Ray's socket paths have a length limit.
    ray_tmpdir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PYTHONPATH": str(REPO), "RAY_TMPDIR": ray_tmpdir}
    env.pop("RAY_ADDRESS", None)
    port, client_port = _free_port(), _free_port()  # ephemeral ports: outside Ray's worker ports 10002-19999
    address = f"127.0.0.1:{port}"
    head = _ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                       "--resources", json.dumps({"node_a": 1}), "--include-dashboard=false",
                       f"--ray-client-server-port={client_port}"], env, tmp_path / "head.log")
    worker = None
    try:
        time.sleep(3)
        worker = _ray_start([f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                             "--resources", json.dumps({"node_b": 1})], env, tmp_path / "worker.log", worker_wrap)
        made = Cluster(env, address, f"ray://127.0.0.1:{client_port}", head, worker)
        deadline = time.monotonic() + 120
        while sum(n["alive"] for n in made.nodes()) < 2:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield made
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)


def test_a_sweep_uses_both_nodes_and_survives_losing_one(cluster: Cluster, tmp_path: Path, study_name: str) -> None:
    url = postgres_url()
    assert url is not None
    node_a, node_b = cluster.node_id("node_a"), cluster.node_id("node_b")
    spec = curve_spec(tmp_path / "cluster.yaml", study_name, url, run_cap=8, epochs=6, lrs=[0.002, 0.004, 0.008, 0.016],
                      sleep_s=0.6)
    log = tmp_path / "driver.log"
    proc = start(["launch", str(spec), "--address", cluster.address], tmp_path, log, env=cluster.env)
    try:
        wait_until(lambda: sum(t.state == TrialState.COMPLETE for t in trials_of(url, study_name)) >= 2, 240,
                   proc, log)
        _stop(cluster.worker)  # the second node dies mid-sweep: its raylet and its trial's worker
        assert_finishes(proc, log, 400)
    finally:
        if proc.poll() is None:
            kill(proc)
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 8  # the exact budget
    assert all(t.state == TrialState.COMPLETE for t in trials)
    ran_on = {t.user_attrs["node_id"] for t in trials}
    assert {node_a, node_b} <= ran_on, ran_on  # trials ran on both nodes
    for t in trials:
        assert len(t.intermediate_values) == 6
    retried = [t for t in trials if t.user_attrs.get("worker_retries")]
    assert retried, "no trial was running on the lost node"
    assert all(t.user_attrs["node_id"] in (node_a, node_b) for t in retried)


def test_the_driver_goes_away_and_a_resume_from_elsewhere_finishes(cluster: Cluster, tmp_path: Path,
                                                                  study_name: str) -> None:
    """The laptop case: the driver dies mid-sweep (SIGKILL); the cluster and the PostgreSQL study
    stay; `sweeper resume` from another process finishes the study with its exact budget, on
    the same cluster (its trials record that cluster's node ids)."""
    url = postgres_url()
    assert url is not None
    spec = curve_spec(tmp_path / "cluster.yaml", study_name, url, run_cap=6, epochs=4, lrs=[0.002, 0.004, 0.008],
                      sleep_s=0.5)
    log = tmp_path / "driver.log"
    proc = start(["launch", str(spec), "--address", cluster.address], tmp_path, log, env=cluster.env)
    wait_until(mid_sweep(url, study_name, 2), 240, proc, log)
    kill(proc)
    # The cluster by RAY_ADDRESS this time, as a user's shell on another machine would name it.
    _resume_finishes(cluster, cluster.address, study_name, tmp_path, log)


def _resume_finishes(cluster: Cluster, address: str, study_name: str, cwd: Path, log: Path,
                     budget: int = 6) -> list[FrozenTrial]:
    """`sweeper resume` with RAY_ADDRESS=``address`` finishes the study whose first driver was
    killed: exactly ``budget`` COMPLETE, the lost ones FAIL "driver lost", both drivers contributed,
    every COMPLETE trial ran on the cluster's nodes."""
    url = postgres_url()
    assert url is not None
    resumed = start(["resume", study_name, "--storage", url], cwd, log, env={**cluster.env, "RAY_ADDRESS": address})
    try:
        assert_finishes(resumed, log, 300)
    finally:
        if resumed.poll() is None:
            kill(resumed)
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert lost and all(t.user_attrs["fail_reason"].startswith("driver lost") for t in lost)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["driver_id"] for t in trials if t.state == TrialState.COMPLETE}) == 2
    nodes = {cluster.node_id("node_a"), cluster.node_id("node_b")}
    assert {t.user_attrs["node_id"] for t in trials if t.state == TrialState.COMPLETE} <= nodes
    return trials


def test_a_node_on_another_disk_is_named_before_the_first_trial(tmp_path: Path, study_name: str,
                                                               mnist_pngs: Path) -> None:
    """The second node runs in its own mount namespace, with an empty tmpfs over the folder that
    holds the data and the artifacts: the same paths, another disk, as on a node without the
    shared mount. Joined by address and through Ray Client, sweeper names that node and each path
    it cannot use, exits 2 and creates no study."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs mount namespaces (unshare -m, as root)")
    url = postgres_url()
    assert url is not None
    disk = tmp_path / "disk"
    shutil.copytree(mnist_pngs, disk / "data")
    spec = write_spec(tmp_path / "s.yaml", {
        "name": study_name, "method": "random", "run_cap": 1, "trainer": "tests.fake_trainers:CURVE",
        "storage": url, "artifacts": str(disk / "artifacts"),
        "data": {"dataset": "imagefolder", "root": str(disk / "data"), "image_size": 28}})
    other_disk = ["unshare", "-m", "--propagation", "private", "sh", "-c", f'mount -t tmpfs none {disk} && exec "$@"',
                  "sh"]
    with _cluster(tmp_path, worker_wrap=other_disk) as made:
        node = f"({socket.gethostname()}, id {made.node_id('node_b')[:8]})"  # the second node only
        for address in (made.address, made.client_address):
            done = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec), "--address", address],
                                  env=made.env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
            assert done.returncode == 2, done.stdout + done.stderr
            errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
            assert len(errors) == 2, done.stderr[-3000:]
            for error, key, path in zip(errors, ("data.root", "artifacts"), (disk / "data", disk / "artifacts"),
                                        strict=True):
                assert error.startswith(f"error: {key}: {str(path)!r} on node "), error
                assert error.endswith(f" {node} is not a folder there"), error
            assert study_name not in optuna.get_all_study_names(url)
            assert not [p for p in (disk / "artifacts").iterdir() if p.name.startswith(".sweeper-node-check-")]


def test_the_node_check_names_the_path_and_what_is_wrong(tmp_path: Path) -> None:
    """What each node runs before the first trial (the same function, here in this process)."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "marker").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "w.pt").write_text("")
    needed = [NeededPath("data.root", str(tmp_path / "data"), "dir"),
              NeededPath("artifacts", str(tmp_path / "shared"), "shared", "marker"),
              NeededPath("artifacts", str(tmp_path / "elsewhere"), "shared", "marker"),
              NeededPath("parameters.weights", str(tmp_path / "w.pt"), "file"),
              NeededPath("parameters.weights", str(tmp_path / "gone.pt"), "file")]
    assert probe(needed) == [
        ("data.root", str(tmp_path / "data"), "is not a folder there"),
        ("artifacts", str(tmp_path / "elsewhere"), "is another folder there (not storage shared with the driver: "
         "put it on NFS or similar, mounted at the same path on every node)"),
        ("parameters.weights", str(tmp_path / "gone.pt"), "is not a file there"),
    ]


def test_a_driver_without_the_token_gets_one_line_and_bad_input_through_ray_client_too(
        cluster: Cluster, tmp_path: Path, study_name: str) -> None:
    """A wrong token: exit 1. Through Ray Client: what cannot work there is refused before
    connecting, and what only the cluster can check (its data folder) is checked there; one
    line each, exit 2, and nothing written here or in the study's database."""
    url = postgres_url()
    assert url is not None
    base = {"name": study_name, "method": "random", "run_cap": 1, "trainer": "tests.fake_trainers:CURVE"}
    spec = write_spec(tmp_path / "s.yaml", {**base, "storage": f"sqlite:///{tmp_path / 's.db'}",
                                            "artifacts": str(tmp_path / "artifacts")})
    wrong = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    missing = tmp_path / "not-on-the-cluster"
    cases = [
        (wrong, [str(spec), "--address", cluster.address], 1, ["Ray could not join"]),
        (cluster.env, [str(spec), "--address", cluster.client_address], 2,
         ["storage: 'sqlite:///{}' cannot be SQLite through Ray Client".format(tmp_path / "s.db")]),
        (cluster.env, [str(spec), "--storage", url, "--artifacts", "rel/artifacts", "--set", "data.root=rel/data",
                       "--address", cluster.client_address], 2,
         ["artifacts: 'rel/artifacts' must be an absolute path", "data.root: 'rel/data' must be an absolute path"]),
        ({**cluster.env, "RAY_ADDRESS": cluster.client_address},
         [str(spec), "--storage", url, "--set", "data.dataset=imagefolder", "--set", f"data.root={missing}"], 2,
         [f"folder {str(missing)!r} does not exist"]),
    ]
    # what each error line says, in order
    for env, args, code, lines in cases:
        done = subprocess.run([sys.executable, "-m", "sweeper", "launch", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == code, done.stdout + done.stderr
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == len(lines) and "Traceback" not in done.stderr, done.stderr[-2000:]
        for error, words in zip(errors, lines, strict=True):
            assert words in error, error
        assert not (tmp_path / "s.db").exists() and not (tmp_path / "artifacts").exists()  # nothing written
        assert study_name not in optuna.get_all_study_names(url)


def test_through_ray_client_the_driver_runs_on_the_cluster_and_a_resume_finishes(
        cluster: Cluster, tmp_path: Path, study_name: str) -> None:
    """The laptop case through Ray Client (ray://): the laptop holds only the connection and the
    progress; the study and its driver are on the cluster. The laptop dies mid-sweep; once Ray
    has ended its session, `sweeper resume` through Ray Client from another folder finishes the
    study with its exact budget, on both nodes, and neither folder gets a file."""
    url = postgres_url()
    assert url is not None
    laptop, elsewhere = tmp_path / "laptop", tmp_path / "elsewhere"
    laptop.mkdir()
    elsewhere.mkdir()
    # 4 s trials: the 6 or more left when the laptop dies outlast Ray's grace period by far.
    spec = curve_spec(tmp_path / "client.yaml", study_name, url, run_cap=8, epochs=4, lrs=[0.002, 0.004, 0.008],
                      sleep_s=1.0)
    log = tmp_path / "laptop.log"
    # Ray ends a client's session (and its tasks) 1 s after the client is gone, not 30.
    env = {**cluster.env, "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "1"}
    proc = start(["launch", str(spec), "--address", cluster.client_address], laptop, log, env=env)
    wait_until(mid_sweep(url, study_name, 2), 240, proc, log)
    wait_until(lambda: "COMPLETE epoch 4/4" in log.read_text(), 30, proc, log)  # the trials' ends reach the laptop
    kill(proc)
    study = optuna.load_study(study_name=study_name, storage=url)
    # The driver on the cluster goes with the client's session.
    wait_until(lambda: not any(lease.alive() for lease in leases(study).values()), 120)
    resumed_log = tmp_path / "resumed.log"
    trials = _resume_finishes(cluster, cluster.client_address, study_name, elsewhere, resumed_log, budget=8)
    nodes = {cluster.node_id("node_a"), cluster.node_id("node_b")}
    assert {t.user_attrs["node_id"] for t in trials if t.state == TrialState.COMPLETE} == nodes
    text = resumed_log.read_text()
    assert "best trial: #" in text and "Traceback" not in text, text[-3000:]
    assert not list(laptop.iterdir()) and not list(elsewhere.iterdir())


def test_ctrl_c_through_ray_client_stops_the_driver_on_the_cluster(cluster: Cluster, tmp_path: Path,
                                                                  study_name: str) -> None:
    """Ctrl-C on the laptop reaches the driver on the head: it marks its running trials FAIL and
    ends; the laptop exits 130, and a resume through Ray Client finishes the budget."""
    url = postgres_url()
    assert url is not None
    spec = curve_spec(tmp_path / "client.yaml", study_name, url, run_cap=5, epochs=4, lrs=[0.002, 0.004, 0.008],
                      sleep_s=0.4)
    log = tmp_path / "laptop.log"
    proc = start(["launch", str(spec), "--address", cluster.client_address], tmp_path, log, env=cluster.env)
    wait_until(mid_sweep(url, study_name, 1), 240, proc, log)
    ctrl_c(proc, log)
    assert_interrupted_then_resumed(url, study_name, 5, tmp_path, log, env=cluster.env,
                                    resume_args=("--address", cluster.client_address))


def test_address_auto_finds_the_running_cluster(cluster: Cluster, tmp_path: Path, study_name: str) -> None:
    url = postgres_url()
    assert url is not None
    spec = curve_spec(tmp_path / "auto.yaml", study_name, url, run_cap=2, epochs=2, lrs=[0.002, 0.004],
                      sleep_s=0.2)
    log = tmp_path / "auto.log"
    assert_finishes(start(["launch", str(spec), "--address", "auto"], tmp_path, log, env=cluster.env), log, 240)
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    nodes = {cluster.node_id("node_a"), cluster.node_id("node_b")}
    assert {t.user_attrs["node_id"] for t in trials} <= nodes  # the cluster's nodes, not a new local Ray
