"""The kernel registry every kernel-mode replica shares (issue 19), on the embedded store:
records, sessions, ``--max-kernels`` slots and the sweep of a gone replica's kernels."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nb2svc.config import normalize_advertise_url
from nb2svc.runtime.kernels_api.cluster import Cluster, jsonable
from nb2svc.runtime.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "store.sqlite"))
    yield store
    store.close()


def replica(store: SqliteStore, port: int, max_kernels: int = 0) -> Cluster:
    cluster = Cluster(store, f"http://127.0.0.1:{port}/", lease=30, max_kernels=max_kernels)
    cluster.heartbeat()
    return cluster


def test_max_kernels_slots_are_shared_by_every_replica(store: SqliteStore) -> None:
    a, b = replica(store, 1, max_kernels=2), replica(store, 2, max_kernels=2)
    assert a.take_slot("k1") and b.take_slot("k2")
    assert not a.take_slot("k3") and not b.take_slot("k3"), "two replicas hold the limit together"
    a.release_slot("k1")
    assert b.take_slot("k3"), "a slot freed on one replica is free on the other"
    assert not a.take_slot("k4")
    assert replica(store, 3).take_slot("k5"), "no --max-kernels: no slot needed"


def test_every_replica_reads_the_records_and_sessions(store: SqliteStore) -> None:
    a, b = replica(store, 1), replica(store, 2)
    a.publish({"id": "k1", "name": "python3", "model": {"id": "k1"}})
    record = b.kernel("k1")
    assert record is not None
    assert (record["owner"], record["url"]) == (a.replica, "http://127.0.0.1:1"), "the owner and its URL"
    assert [r["id"] for r in b.kernels()] == ["k1"]
    b.put_session({"id": "s1", "path": "x.ipynb", "name": "", "type": "notebook", "kernel_id": "k1"})
    assert [s["id"] for s in a.sessions()] == ["s1"]
    a.withdraw("k1")
    a.drop_sessions(["k1"])
    assert b.kernel("k1") is None and b.kernels() == [] and b.sessions() == []


def test_a_gone_replicas_kernels_are_claimed_once_or_removed(store: SqliteStore) -> None:
    dead, a, b = replica(store, 1), replica(store, 2), replica(store, 3)
    dead.publish({"id": "local", "name": "python3", "provisioner": "local-provisioner"})
    dead.publish({"id": "remote", "name": "python3", "provisioner": "k8s"})
    dead.put_session({"id": "s1", "path": "x", "name": "", "type": "notebook", "kernel_id": "local"})
    assert a.sweep(lambda record: True) == [], "a replica with a lease is left alone"
    dead.leave()
    assert not a.alive(dead.replica)
    claimed = a.sweep(lambda record: record["provisioner"] != "local-provisioner")
    assert [r["id"] for r in claimed] == ["remote"]
    assert b.sweep(lambda record: True) == [], "claimed once: the record now names a live owner"
    remote = b.kernel("remote")
    assert remote is not None and remote["owner"] == a.replica
    assert b.kernel("local") is None and b.sessions() == [], "the local kernel died with its replica"


def test_connection_and_provisioner_info_become_json() -> None:
    info = {"key": b"secret", "ports": (1, 2), "nested": {"k": b"v"}}
    assert jsonable(info) == {"key": "secret", "ports": [1, 2], "nested": {"k": "v"}}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://10.0.0.5:8888/", "http://10.0.0.5:8888"),
        ("https://gw.example", "https://gw.example"),
        ("", ""),
    ],
)
def test_advertise_url_is_scheme_host_and_port(given: str, expected: str) -> None:
    assert normalize_advertise_url(given) == expected


@pytest.mark.parametrize(
    "bad", ["10.0.0.5:8888", "ftp://host", "http://host/base/", "http://u:p@host", "http://"]
)
def test_a_bad_advertise_url_is_refused_with_the_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="must be|only"):
        normalize_advertise_url(bad)


def test_serve_refuses_a_bad_advertise_url_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", "--kernels", "--advertise-url", "10.0.0.5:8888"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--advertise-url" in result.stderr and "Traceback" not in result.stderr
