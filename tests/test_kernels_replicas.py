"""Kernel mode on several replicas (issue 19): a real redis-server, two kernel-mode replicas
sharing it, and haproxy in front (round robin, no affinity)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
import websocket

from tests.kernels_support import AUTH, TOKEN, JupyterServer, KernelClient, detached_spec, start_kernel
from tests.scaleout import Haproxy, RedisServer, balanced_replicas
from tests.support import Server, alive, wait_for

pytestmark = pytest.mark.slow

#: Short, so that a killed replica is noticed quickly; long enough for a loaded machine.
LEASE = "2"
MAX_KERNELS = 3


def replica(directory: Path, store: str, *args: str, env: dict[str, str] | None = None) -> Server:
    server = Server(
        ["--kernels", "--token", TOKEN, "--store", store, "--replica-lease", LEASE, *args],
        log_dir=directory,
        env=env,
    )
    server.wait_ready(60)
    return server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, list[Server], Haproxy]]:
    directory = tmp_path_factory.mktemp("kernel-replicas")
    env = detached_spec(directory)

    def start(url: str) -> Iterator[Server]:
        for _ in range(2):
            yield replica(directory, url, "--max-kernels", str(MAX_KERNELS), env=env)

    with balanced_replicas(directory, start) as cluster:
        yield cluster


def kernel_ids(server: Server | Haproxy) -> set[str]:
    response = requests.get(server.url("/api/kernels"), headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return {k["id"] for k in response.json()}


def delete(server: Server | Haproxy, kernel_id: str) -> int:
    return requests.delete(server.url(f"/api/kernels/{kernel_id}"), headers=AUTH, timeout=60).status_code


def test_every_replica_lists_and_describes_every_kernel(cluster: tuple) -> None:
    _, (a, b), _ = cluster
    kernel = start_kernel(a)
    try:
        assert kernel["id"] in kernel_ids(a) and kernel["id"] in kernel_ids(b)
        on_b = requests.get(b.url(f"/api/kernels/{kernel['id']}"), headers=AUTH, timeout=30)
        assert on_b.status_code == 200, on_b.text
        assert on_b.json()["id"] == kernel["id"] and on_b.json()["name"] == kernel["name"]
        # a session made on one replica is seen on the other
        made = requests.post(
            b.url("/api/sessions"),
            json={"path": "shared.ipynb", "type": "notebook", "kernel": {"id": kernel["id"]}},
            headers=AUTH,
            timeout=30,
        )
        assert made.status_code == 201, made.text
        listed = requests.get(a.url("/api/sessions"), headers=AUTH, timeout=30).json()
        assert [(s["id"], s["kernel"]["id"]) for s in listed] == [(made.json()["id"], kernel["id"])]
        # deleting the session on the replica that does not own the kernel stops the kernel
        gone = requests.delete(a.url(f"/api/sessions/{made.json()['id']}"), headers=AUTH, timeout=60)
        assert gone.status_code == 204, gone.text
        assert kernel["id"] not in kernel_ids(a) | kernel_ids(b)
        assert requests.get(b.url("/api/sessions"), headers=AUTH, timeout=30).json() == []
    finally:
        delete(a, kernel["id"])


def test_rest_calls_are_forwarded_to_the_owner(cluster: tuple) -> None:
    _, (a, b), _ = cluster
    kernel = start_kernel(a)
    try:
        path = f"/api/kernels/{kernel['id']}"
        interrupted = requests.post(b.url(path + "/interrupt"), headers=AUTH, timeout=30)
        assert interrupted.status_code == 204, interrupted.text
        restarted = requests.post(b.url(path + "/restart"), headers=AUTH, timeout=60)
        assert restarted.status_code == 200 and restarted.json()["id"] == kernel["id"], restarted.text
        no_token = requests.get(b.url(path), timeout=30)
        assert no_token.status_code == 401, "the forwarding replica still checks the client's token"
        assert delete(b, kernel["id"]) == 204
        assert requests.get(a.url(path), headers=AUTH, timeout=30).status_code == 404
        assert requests.get(b.url(path), headers=AUTH, timeout=30).status_code == 404
    finally:
        delete(a, kernel["id"])


@pytest.mark.parametrize("v1", [False, True], ids=["legacy", "v1"])
def test_websockets_on_any_replica_share_one_kernel(cluster: tuple, v1: bool) -> None:
    _, (a, b), balancer = cluster
    kernel = requests.post(balancer.url("/api/kernels"), headers=AUTH, timeout=60)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    owner, other = (a, b) if owns(a, kernel_id) else (b, a)
    try:
        with KernelClient(other, kernel_id, v1=v1) as client:
            assert client.protocol == ("v1.kernel.websocket.jupyter.org" if v1 else None)
            assert client.execute("x = 40").status == "ok"
        # each connection through the balancer lands on the next replica (round robin)
        for expected in (41, 42, 43, 44):
            with KernelClient(balancer, kernel_id, v1=v1) as client:
                assert client.execute("x += 1; print(x)").stdout.strip() == str(expected)
        with KernelClient(owner, kernel_id, v1=v1) as client:
            assert client.execute("print(x)").stdout.strip() == "44"
        assert f"relaying kernel {kernel_id}'s websocket" in other.log()
    finally:
        delete(balancer, kernel_id)


def owns(server: Server, kernel_id: str) -> bool:
    """Whether ``server`` owns the kernel: a request marked as forwarded is never forwarded again."""
    headers = {**AUTH, "X-Nb2svc-Forwarded": "1"}
    return (
        requests.get(server.url(f"/api/kernels/{kernel_id}"), headers=headers, timeout=30).status_code == 200
    )


def test_max_kernels_holds_under_concurrent_starts_on_two_replicas(cluster: tuple) -> None:
    _, (a, b), _ = cluster

    def post(server: Server) -> requests.Response:
        return requests.post(server.url("/api/kernels"), headers=AUTH, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, [a, b] * 4))
    started = [r.json()["id"] for r in answers if r.status_code == 201]
    try:
        assert sorted(r.status_code for r in answers) == [201] * MAX_KERNELS + [403] * (8 - MAX_KERNELS)
        assert set(started) == kernel_ids(a) == kernel_ids(b)
        # a slot freed on one replica can be taken on the other
        assert delete(a, started[0]) == 204
        again = post(b)
        assert again.status_code == 201, again.text
        started[0] = again.json()["id"]
    finally:
        for kernel_id in started:
            delete(a, kernel_id)


def test_a_local_kernel_of_a_killed_replica_answers_404(cluster: tuple, tmp_path: Path) -> None:
    redis_server, (a, b), _ = cluster
    doomed = replica(tmp_path, redis_server.url)
    try:
        kernel = start_kernel(doomed)
        assert kernel["id"] in kernel_ids(a)
        doomed.kernel_pids |= doomed.find_kernels()
        os.killpg(doomed.proc.pid, signal.SIGKILL)  # the gateway dies at once; its kernel is an orphan
        path = f"/api/kernels/{kernel['id']}"
        wait_for(
            lambda: requests.get(a.url(path), headers=AUTH, timeout=30).status_code == 404,
            30,
            "the dead replica's kernel to be removed",
        )
        assert requests.get(b.url(path), headers=AUTH, timeout=30).status_code == 404
        assert kernel["id"] not in kernel_ids(a) | kernel_ids(b)
        store = redis.Redis.from_url(redis_server.url)
        try:  # and a surviving replica removes its record from the store
            wait_for(lambda: not store.exists(f"nb2svc:kernel:{kernel['id']}"), 30, "the record to go")
        finally:
            store.close()
    finally:
        doomed.kill()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_detached_kernel_is_adopted_when_its_owner_stops(cluster: tuple, tmp_path: Path, how: str) -> None:
    """Killed, or stopped gracefully (a rolling restart) while other replicas are up: the
    kernel keeps running and another replica carries it on, state and all."""
    redis_server, (a, b), balancer = cluster
    doomed = replica(tmp_path, redis_server.url, env=detached_spec(tmp_path))
    pid = 0
    try:
        kernel_id = start_kernel(doomed, name="detached_python")["id"]
        with KernelClient(doomed, kernel_id) as client:
            pid = int(client.execute("import os; state = 'kept'; print(os.getpid())").stdout)
        if how == "SIGKILL":
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # the kernel runs on, in a session of its own
            doomed.proc.wait(10)
        else:
            assert doomed.stop(signal.SIGTERM) == 0
            assert "left 1 kernels running for the other replicas" in doomed.log()
        assert alive(pid)
        wait_for(lambda: owns(a, kernel_id) or owns(b, kernel_id), 30, "a replica to adopt the kernel")
        assert kernel_id in kernel_ids(a) and kernel_id in kernel_ids(b)
        for _ in range(2):  # through the balancer: the owner and the other replica
            with KernelClient(balancer, kernel_id) as client:
                assert client.execute("print(state, os.getpid())").stdout.split() == ["kept", str(pid)]
        assert delete(balancer, kernel_id) == 204
        wait_for(lambda: not alive(pid), 30, "the adopted kernel to stop")
    finally:
        doomed.kill()
        if pid and alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_the_forwarding_replica_keeps_the_origin_rule(cluster: tuple) -> None:
    _, (a, b), _ = cluster
    kernel_id = start_kernel(a)["id"]
    try:
        other = b if owns(a, kernel_id) else a
        url = f"ws://127.0.0.1:{other.port}/api/kernels/{kernel_id}/channels"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, header={**AUTH, "Origin": "http://evil.example"}, timeout=30)
        assert refused.value.status_code == 403
        with KernelClient(other, kernel_id) as client:  # the same upgrade from no foreign origin
            assert client.execute("print(6 * 7)").stdout == "42\n"
    finally:
        delete(a, kernel_id)


def test_jupyter_server_uses_the_balancer_as_its_gateway(cluster: tuple, tmp_path: Path) -> None:
    _, _, balancer = cluster
    jupyter = JupyterServer(balancer, tmp_path)
    try:
        jupyter.wait_ready()
        created = jupyter.request("POST", "/api/kernels", json={"name": "python3"})
        assert created.status_code == 201, created.text
        kernel_id = created.json()["id"]
        for expected in ("1", "2", "3"):  # each websocket is a new connection to the balancer
            with KernelClient(jupyter, kernel_id, token=jupyter.token, query_token=True) as client:
                assert client.execute("n = globals().get('n', 0) + 1; print(n)").stdout == expected + "\n"
        assert jupyter.request("POST", f"/api/kernels/{kernel_id}/restart").status_code == 200
        assert jupyter.request("DELETE", f"/api/kernels/{kernel_id}").status_code == 204
        assert kernel_id not in kernel_ids(balancer)
    finally:
        jupyter.stop()


def test_a_lone_replica_stops_its_detached_kernels(tmp_path: Path) -> None:
    """With no other replica to carry them on, a graceful stop shuts kernels down as before."""
    redis_server = RedisServer(tmp_path)
    lone = None
    pid = 0
    try:
        lone = replica(tmp_path, redis_server.url, env=detached_spec(tmp_path))
        kernel_id = start_kernel(lone, name="detached_python")["id"]
        with KernelClient(lone, kernel_id) as client:
            pid = int(client.execute("import os; print(os.getpid())").stdout)
        assert lone.stop(signal.SIGTERM) == 0
        wait_for(lambda: not alive(pid), 30, "the kernel to stop with its only replica")
    finally:
        if lone is not None:
            lone.kill()
        if pid and alive(pid):
            os.killpg(pid, signal.SIGKILL)
        redis_server.stop()


def test_a_stalled_owner_lets_go_of_a_kernel_taken_over_meanwhile(cluster: tuple, tmp_path: Path) -> None:
    """An owner frozen past its lease (SIGSTOP) finds its kernel adopted when it wakes: it
    stops serving it without stopping it, so the kernel has one owner again."""
    redis_server, (a, b), balancer = cluster
    stalled = replica(tmp_path, redis_server.url, env=detached_spec(tmp_path))
    pid = 0
    try:
        kernel_id = start_kernel(stalled, name="detached_python")["id"]
        with KernelClient(stalled, kernel_id) as client:
            pid = int(client.execute("import os; state = 'kept'; print(os.getpid())").stdout)
        os.killpg(stalled.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: owns(a, kernel_id) or owns(b, kernel_id), 30, "a replica to adopt the kernel")
        finally:
            os.killpg(stalled.proc.pid, signal.SIGCONT)
        wait_for(lambda: "taken over by another replica" in stalled.log(), 30, "the stalled owner to let go")
        assert not owns(stalled, kernel_id)
        with KernelClient(stalled, kernel_id) as client:  # now relayed to the new owner
            assert client.execute("print(state, os.getpid())").stdout.split() == ["kept", str(pid)]
        assert delete(balancer, kernel_id) == 204
        wait_for(lambda: not alive(pid), 30, "the kernel to stop")
    finally:
        stalled.kill()
        if pid and alive(pid):
            os.killpg(pid, signal.SIGKILL)
