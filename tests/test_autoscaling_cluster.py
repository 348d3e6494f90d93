"""The cluster loop rehearsed on one machine: Ray's fake autoscaling cluster (``cluster_local.yaml``,
node types mirroring ``cluster.yaml``) launches GPU workers as local processes when a sweep asks
for them, and trials share a worker's GPU. Its GPUs are declared, not real, so CUDA cannot see
them: the sweep runs there only with the explicit CPU fallback, and without it stops with an error
naming the node. Plus the GPU-side helpers (the memory share of a fractional GPU) as unit tests.

Everything listens on 127.0.0.1; the cluster is stopped through the process it started (never
``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from sweep import ray_adapter
from conftest import end_ray_in_process
from sweep.run import main

ROOT = Path(__file__).parents[1]
HEAD_ONLY = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # the fake provider's head node id
TINY = ["--dataset", "digits", "--profile", "smoke", "--methods", "random", "--fractions", "0.5", "--epochs", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeCluster:
    """``RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config cluster_local.yaml`` on free
    loopback ports; its autoscaler starts the worker nodes as children of the head's processes."""

    def __init__(self, folder: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = yaml.safe_load((ROOT / "cluster_local.yaml").read_text())
        config["provider"]["gcs_address"] = self.address  # where the launched workers find this head
        path = folder / "cluster_local.yaml"
        path.write_text(yaml.safe_dump(config))
        env = dict(os.environ, RAY_FAKE_CLUSTER="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                   AUTOSCALER_UPDATE_INTERVAL_S="1")  # the autoscaler's loop every second, not every 5
        env.pop("RAY_ADDRESS", None)
        self.log = open(folder / "head.log", "w")
        # Its own Ray folder (short: Ray's socket paths must stay under 108 characters), so that
        # `ray start` leaves the machine's "current cluster" (/tmp/ray/ray_current_cluster) alone.
        self.temp_dir = tempfile.mkdtemp(prefix="kdray")
        self.head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats",
             "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--num-cpus", "0",
             "--include-dashboard", "false", "--dashboard-port", str(_free_port()),
             "--dashboard-agent-listen-port", str(_free_port()), "--object-store-memory", "300000000",
             "--temp-dir", self.temp_dir, "--autoscaling-config", str(path)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def nodes(self) -> list[dict]:
        """Every node the cluster has had (``ray.nodes()``: dead ones too, with ``Alive`` false)."""
        ray_adapter.connect(self.address)
        try:
            return ray.nodes()
        finally:
            ray_adapter.shutdown()

    def wait_until_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.head.poll() is None, (Path(self.log.name).read_text()[-3000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if any(n["Alive"] for n in self.nodes()):
                    return
            except (OSError, ray_adapter.ClusterUnreachableError):
                pass
            time.sleep(1)
        raise TimeoutError(f"the fake cluster did not start: {Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop this cluster's processes only: the tree under the ``ray start`` this fixture ran
        (launched workers included), which is also its own process group."""
        import psutil  # shipped inside Ray (ray/thirdparty_files), importable once ray is

        try:
            tree = psutil.Process(self.head.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        self.head.kill()  # on SIGTERM it would first drain the head for 30 s
        self.head.wait()
        for process in tree:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=3)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.head.pid, signal.SIGKILL)  # anything left of its group (the head was its leader)
        except ProcessLookupError:
            pass
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    end_ray_in_process()  # the sweeps join this cluster: no other Ray in this process
    cluster = FakeCluster(tmp_path_factory.mktemp("fake_cluster"))
    try:
        cluster.wait_until_up()
        yield cluster
    finally:
        cluster.stop()


def _overlap(a, b) -> bool:
    return a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


@pytest.mark.cluster
def test_a_sweep_makes_the_autoscaler_launch_gpu_workers_and_two_trials_share_a_gpu(fake_cluster, tmp_path, capsys,
                                                                                      monkeypatch):
    monkeypatch.delenv(ray_adapter.CPU_FALLBACK_ENV, raising=False)
    before = [n["NodeID"] for n in fake_cluster.nodes() if n["Alive"]]
    assert before == [HEAD_ONLY]  # the head alone: it declares CPU 0, so nothing fits a trial yet

    args = [*TINY, "--trials-per-cell", "4", "--cohort-size", "1", "--storage", str(tmp_path), "--name", "rehearsal",
            "--address", fake_cluster.address, "--gpus-per-cohort", "0.5", "--allow-cpu-fallback",
            "--wait-for-nodes", "180"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # no node fitted a trial: the sweep asked the autoscaler for one and waited until it joined
    assert "a trial asks for 1 CPU and 0.5 GPU, but the nodes have 0 CPU / 0 GPU" in out
    assert "a node that fits a trial joined the cluster" in out

    nodes = {n["NodeID"]: n for n in fake_cluster.nodes()}
    workers = {i for i, n in nodes.items() if i not in before}
    assert workers, "the autoscaler launched no worker"
    for worker in workers:  # the cluster's gpu_worker type: one (declared) GPU, two CPUs
        assert nodes[worker]["Resources"].get("GPU") == 1 and nodes[worker]["Resources"].get("CPU") == 2
        assert nodes[worker]["NodeManagerAddress"] == "127.0.0.1"

    results = pd.read_csv(tmp_path / "rehearsal" / "results.csv")
    assert len(results) == 4 and (results["status"] == "completed").all() and results["error"].isna().all()
    assert results["node_id"].notna().all() and set(results["node_id"]) <= workers  # named, and never the head
    # two trials (cohorts of one) ran at the same time on one GPU worker: 0.5 GPU each
    rows = results.to_dict("records")
    shared = [(a["cohort"], b["cohort"], a["node_id"]) for i, a in enumerate(rows) for b in rows[i + 1:]
              if a["node_id"] == b["node_id"] and a["cohort"] != b["cohort"] and _overlap(a, b)]
    assert shared, results[["cohort", "node_id", "started_at", "finished_at"]].to_string()

    # the stages ran on workers too: the teacher and the random method's scoring run name their node
    teacher_nodes = re.findall(r"small_cnn\|replicate=0 done: .*node ([0-9a-f]{56})", out)
    score_nodes = re.findall(r"random run 0 done: node ([0-9a-f]{56})", out)
    assert len(teacher_nodes) == 1 and len(score_nodes) == 1, out[-3000:]
    assert set(teacher_nodes + score_nodes) <= workers


@pytest.mark.cluster
def test_a_gpu_that_cuda_cannot_see_is_an_error_naming_the_node_without_the_fallback(fake_cluster, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.delenv(ray_adapter.CPU_FALLBACK_ENV, raising=False)
    args = [*TINY, "--trials-per-cell", "1", "--storage", str(tmp_path), "--name", "no-fallback",
            "--address", fake_cluster.address, "--gpus-per-cohort", "0.5", "--wait-for-nodes", "180"]
    assert main(args) == 1  # the teacher, the first task given the GPU, stops the sweep
    err = capsys.readouterr().err
    assert "CUDA cannot use a GPU there" in err and "torch.cuda.is_available() is False" in err
    named = re.search(r"on node ([0-9a-f]{56}) \(127\.0\.0\.1, host ", err)
    assert named and named.group(1) != HEAD_ONLY, err[-2000:]
    assert named.group(1) in {n["NodeID"] for n in fake_cluster.nodes()}
    assert "--allow-cpu-fallback" in err and "KDSWEEP_ALLOW_CPU_FALLBACK=1" in err and "nvidia-smi" in err
    assert not (tmp_path / "no-fallback" / "results.csv").exists()  # no silent slow run


@pytest.mark.cluster
def test_a_trial_no_node_type_can_hold_is_refused_after_waiting(fake_cluster, tmp_path, capsys):
    args = [*TINY, "--trials-per-cell", "1", "--storage", str(tmp_path), "--name", "too-big",
            "--address", fake_cluster.address, "--gpus-per-cohort", "4", "--wait-for-nodes", "5"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "waiting up to 5 s (--wait-for-nodes)" in captured.out  # it said it was waiting
    err = " ".join(captured.err.split())  # argparse wraps long messages
    refused = re.search(r"a trial asks for 1 CPU and 4 GPU, but the nodes have (.*?), and no node that fits joined "
                        r"within 5 s \(--wait-for-nodes\)", err)
    assert refused, err
    # the cluster's actual resources are named: the head's, and those of any worker still up
    named = refused.group(1).split(", ")
    assert "0 CPU / 0 GPU" in named and set(named) <= {"0 CPU / 0 GPU", "2 CPU / 1 GPU"}, named


# ---- the GPU side of a trial, without a GPU ------------------------------------------------------


def test_the_gpu_memory_share_is_the_fraction_of_a_gpu_a_trial_was_given():
    assert ray_adapter.gpu_memory_share({"CPU": 1.0, "GPU": 0.25}) == 0.25
    assert ray_adapter.gpu_memory_share({"GPU": 0.5}) == 0.5
    assert ray_adapter.gpu_memory_share({"CPU": 1.0, "GPU": 1.0}) is None  # a whole GPU: nothing to share
    assert ray_adapter.gpu_memory_share({"GPU": 2.0}) is None
    assert ray_adapter.gpu_memory_share({"CPU": 2.0}) is None and ray_adapter.gpu_memory_share({}) is None


@pytest.fixture
def assigned_gpu(monkeypatch):
    """A process that Ray gave 0.25 of GPU 0, on a named node."""
    monkeypatch.setattr(ray_adapter.worker.ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr(ray_adapter.worker, "_assigned_resources", lambda: {"CPU": 1.0, "GPU": 0.25})
    monkeypatch.setattr(ray_adapter.worker, "_node_description", lambda: "abc123 (10.0.0.7, host gpu-3)")
    monkeypatch.setattr(ray_adapter.worker, "_fallback_warned", False)
    monkeypatch.delenv(ray_adapter.CPU_FALLBACK_ENV, raising=False)


def test_a_gpu_cuda_cannot_see_is_an_error_or_the_asked_for_cpu_with_one_warning(assigned_gpu, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ray_adapter.GpuNotUsableError) as error:
        ray_adapter.trial_device()
    assert "node abc123 (10.0.0.7, host gpu-3)" in str(error.value) and "--allow-cpu-fallback" in str(error.value)

    assert ray_adapter.trial_device(allow_cpu_fallback=True) == "cpu"
    assert ray_adapter.trial_device(allow_cpu_fallback=True) == "cpu"
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "abc123" in err and "running on the CPU" in err  # once, never silent

    monkeypatch.setenv(ray_adapter.CPU_FALLBACK_ENV, "1")  # the node's environment asks for it
    assert ray_adapter.trial_device() == "cpu"


def test_a_fraction_of_a_visible_gpu_caps_the_process_memory_at_its_share(assigned_gpu, monkeypatch):
    import torch

    capped = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction, device: capped.append((fraction, device)))
    assert ray_adapter.trial_device() == "cuda"
    assert capped == [(0.25, 0)]
    monkeypatch.setattr(ray_adapter.worker, "_assigned_resources", lambda: {"GPU": 1.0})
    assert ray_adapter.trial_device() == "cuda" and capped == [(0.25, 0)]  # a whole GPU: no cap


def test_without_a_gpu_a_trial_runs_on_the_cpu_quietly(monkeypatch, capsys):
    monkeypatch.setattr(ray_adapter.worker.ray, "get_gpu_ids", lambda: [])
    assert ray_adapter.trial_device() == "cpu" and capsys.readouterr().err == ""


def test_cluster_local_yaml_mirrors_cluster_yaml():
    import json

    import jsonschema
    import ray.autoscaler

    local = yaml.safe_load((ROOT / "cluster_local.yaml").read_text())
    real = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(local, schema)  # Ray's own schema for cluster configs
    assert local["provider"]["type"] == "fake_multinode"
    head, real_head = local["available_node_types"][local["head_node_type"]], real["available_node_types"][real["head_node_type"]]
    assert head["resources"]["CPU"] == real_head["resources"]["CPU"] == 0  # no trials on the head
    workers = {k: v for k, v in local["available_node_types"].items() if k != local["head_node_type"]}
    assert set(workers) <= set(real["available_node_types"])  # the same worker types, by name
    for name, worker in workers.items():
        assert worker["resources"]["GPU"] >= 1 and worker["min_workers"] == real["available_node_types"][name]["min_workers"] == 0
        assert worker["max_workers"] >= 1
