"""The Ray backend on a cluster of two nodes joined with ``ray start``: the same run as local.

The two nodes run on this machine, but they are what a multi-machine cluster is: a head started
with ``ray start --head`` and a worker node that joins it with ``ray start --address``; the
simulation connects with ``ray_address``. Each node offers one CPU and each training actor asks
for one, so the two actors run on different nodes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_serve_logs import free_port
from tests.simulator.test_simulate import small_run

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def _ray(*args: str, attempts: int = 1) -> None:
    """Run ``ray ARGS``; a join is retried (a loaded machine's head may not take it at once)."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run([RAY, *args], capture_output=True, text=True, timeout=180)
        if done.returncode == 0:
            return
        if attempt == attempts:
            raise RuntimeError(f"ray {' '.join(args)} failed: {done.stderr[-2000:]}")
        time.sleep(5)


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")
    if shutil.which(RAY) is None:  # pragma: no cover - the ray extra installs the command
        pytest.skip("the ray command is not installed")
    address = f"127.0.0.1:{free_port()}"
    host, port = address.split(":")
    common = ("--num-cpus", "1", "--disable-usage-stats")
    _ray("start", "--head", "--port", port, "--include-dashboard", "false", *common)
    try:
        _ray("start", "--address", address, *common, attempts=3)
        yield address
    finally:
        _ray("stop", "--force")


def test_a_run_on_a_two_node_cluster_equals_the_local_run(two_node_cluster, tmp_path, plans_dir):
    import ray

    ray.init(address=two_node_cluster, log_to_driver=False)
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        on_cluster = small_run(tmp_path, plans_dir, "cluster", backend="ray", workers=2, hours=0.5)
    finally:
        ray.shutdown()
    local = small_run(tmp_path, plans_dir, "local", hours=0.5)

    assert [node["Resources"]["CPU"] for node in nodes] == [1.0, 1.0]
    assert on_cluster.rows == local.rows
