"""The store contract, run against both backends: embedded SQLite and a real redis-server (issue 18)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nb2svc.runtime.store import (
    Store,
    StoreUnavailable,
    normalize_store_url,
    open_store,
    read_password_file,
    redact,
)
from nb2svc.runtime.store.check import check_in_child
from nb2svc.runtime.store.redis import RedisStore
from nb2svc.runtime.store.sqlite import SqliteStore
from tests.scaleout import RedisServer, self_signed_certificate
from tests.support import REPO, wait_for


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(str(tmp_path / "store.sqlite"))
    else:
        redis_server = request.getfixturevalue("redis_server")
        opened = RedisStore(redis_server.url, "test redis")
    yield opened
    opened.close()


@pytest.fixture
def key() -> str:
    return "test:" + uuid.uuid4().hex


def test_get_put_delete(store: Store, key: str) -> None:
    assert store.get(key) is None
    store.put(key, b"one")
    assert store.get(key) == b"one"
    store.put(key, b"two\x00binary")
    assert store.get(key) == b"two\x00binary"
    assert store.get_many([key, key + ":absent"]) == [b"two\x00binary", None]
    assert store.get_many([]) == []
    assert store.delete(key) is True
    assert store.delete(key) is False
    assert store.get(key) is None


def test_keys_expire(store: Store, key: str) -> None:
    store.put(key, b"short", ttl=0.3)
    store.put(key + ":long", b"long", ttl=60)
    assert store.get(key) == b"short"
    wait_for(lambda: store.get(key) is None, 10, "the short key to expire")
    assert store.get(key + ":long") == b"long"
    assert store.create(key, b"again", ttl=60), "an expired key is absent for create too"


def test_create_is_atomic_first_wins(store: Store, key: str) -> None:
    assert store.create(key, b"first", ttl=60) is True
    assert store.create(key, b"second", ttl=60) is False
    assert store.get(key) == b"first"


def test_compare_and_set_and_delete(store: Store, key: str) -> None:
    assert store.compare_and_set(key, b"x", b"y") is False, "absent never matches"
    store.put(key, b"running")
    assert store.compare_and_set(key, b"done", b"cancelled") is False
    assert store.get(key) == b"running"
    assert store.compare_and_set(key, b"running", b"done", ttl=60) is True
    assert store.get(key) == b"done"
    assert store.compare_and_delete(key, b"running") is False
    assert store.compare_and_delete(key, b"done") is True
    assert store.get(key) is None


def test_leases_expire_unless_renewed(store: Store, key: str) -> None:
    assert store.acquire_lease(key, "worker-a", 0.5)
    assert not store.acquire_lease(key, "worker-b", 0.5), "held by a"
    assert not store.renew_lease(key, "worker-b", 5), "b cannot renew a's lease"
    assert store.renew_lease(key, "worker-a", 60)
    assert store.release_lease(key, "worker-b") is False
    assert store.release_lease(key, "worker-a") is True
    assert store.acquire_lease(key, "worker-b", 0.3)
    wait_for(lambda: store.get(key) is None, 10, "b's lease to expire")
    assert not store.renew_lease(key, "worker-b", 5), "an expired lease is not renewed"
    assert store.acquire_lease(key, "worker-a", 5)


def test_index_members_expire_one_by_one(store: Store, key: str) -> None:
    assert store.index_count(key) == 0
    store.index_add(key, "job-1", 60)
    store.index_add(key, "job-2", 0.3)
    store.index_add(key, "job-2", 0.3)  # renewing does not count twice
    assert store.index_count(key) == 2
    assert sorted(store.index_members(key)) == ["job-1", "job-2"]
    wait_for(lambda: store.index_count(key) == 1, 10, "job-2 to stop counting")
    assert store.index_members(key) == ["job-1"], "an expired member is not listed"
    store.index_add(key, "job-3", 60)
    store.index_remove(key, "job-1")
    store.index_remove(key, "job-unknown")
    assert store.index_count(key) == 1
    assert store.index_members(key) == ["job-3"]
    assert store.index_members(key + "-absent") == []


def test_sqlite_connections_share_one_file(tmp_path: Path, key: str) -> None:
    """Two workers are two connections to one file: each sees the other's writes and locks."""
    first, second = SqliteStore(str(tmp_path / "s.sqlite")), SqliteStore(str(tmp_path / "s.sqlite"))
    try:
        assert first.create(key, b"a", ttl=60)
        assert not second.create(key, b"b", ttl=60)
        assert second.compare_and_set(key, b"a", b"c", ttl=60)
        assert first.get(key) == b"c"
    finally:
        first.close()
        second.close()


def test_a_redis_that_is_gone_is_store_unavailable_quickly(tmp_path: Path, key: str) -> None:
    redis_server = RedisServer(tmp_path)
    store = RedisStore(redis_server.url, "redis for the outage test")
    try:
        store.put(key, b"v")
        redis_server.stop()
        for operation in (lambda: store.get(key), store.ping, lambda: store.index_count(key)):
            with pytest.raises(StoreUnavailable, match="redis for the outage test"):
                operation()
    finally:
        redis_server.stop()
        store.close()


def test_a_closed_sqlite_store_is_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.sqlite"))
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get("k")


def test_urls_are_checked_and_printed_redacted() -> None:
    assert redact("redis://:s3cret@db.example:6379/2") == "redis://***@db.example:6379/2"
    assert redact("rediss://user:s3cret@[::1]:6380/0") == "rediss://***@[::1]:6380/0"
    assert redact("redis://db:6379/0") == "redis://db:6379/0"
    assert redact("") == "embedded"
    assert normalize_store_url("  ") == ""
    assert normalize_store_url("redis://h:1/0") == "redis://h:1/0"
    for bad in ("http://:s3cret@h/0", "redis://:s3cret@h:notaport/0", "redis:///0"):
        with pytest.raises(ValueError) as caught:
            normalize_store_url(bad)
        assert "s3cret" not in str(caught.value)


def test_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("hunter2\nignored\n")
    assert read_password_file(str(path)) == "hunter2"
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_password_file(str(path))
    with pytest.raises(StoreUnavailable, match="No such file"):
        open_store("redis://127.0.0.1:1/0", str(tmp_path / "missing"))


def test_redis_password_from_the_file_is_used(tmp_path: Path, key: str) -> None:
    """A Redis that requires a password: the URL without it fails, the password file works."""
    redis_server = RedisServer(tmp_path, extra=("--requirepass", "pw-from-file"))
    (tmp_path / "pw").write_text("pw-from-file\n")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            RedisStore(redis_server.url, "no password").ping()
        assert "pw-from-file" not in str(caught.value)
        store = open_store(redis_server.url, str(tmp_path / "pw"))
        store.put(key, b"ok")
        assert store.get(key) == b"ok"
        store.close()
        # the start-up check (in a child process) uses the file too, and says why without it
        assert check_in_child(redis_server.url, str(tmp_path / "pw")) is None
        problem = check_in_child(redis_server.url)
        assert problem is not None and "authenticat" in problem.lower() and "pw-from-file" not in problem
    finally:
        redis_server.stop()


def test_rediss_talks_tls_and_checks_the_certificate(tmp_path: Path, key: str) -> None:
    pem = self_signed_certificate(tmp_path)
    redis_server = RedisServer(tmp_path, tls_cert=pem)
    try:
        store = open_store(f"{redis_server.url}?ssl_ca_certs={pem}")
        store.put(key, b"over tls")
        assert store.get(key) == b"over tls"
        store.close()
        with pytest.raises(StoreUnavailable, match="certificate"):
            open_store(redis_server.url).ping()  # a certificate nobody vouched for
    finally:
        redis_server.stop()


OPENER = """
import sys, time
from nb2svc.runtime.store.sqlite import SqliteStore
directory, start, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for round_ in range(rounds):
    at = start + round_ * 0.25
    while time.time() < at:  # every process opens this round's new file at the same moment
        pass
    try:
        SqliteStore(f"{directory}/store-{round_}.sqlite").close()
        print("ok", flush=True)
    except Exception as exc:
        print(repr(exc), flush=True)
"""


def test_workers_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Several workers open a server's new store file together (gunicorn boots them at once):
    the race to switch it to WAL made one of them fail to boot, once in about 25 starts."""
    rounds, start = 8, time.time() + 2.0  # after the six interpreters have started
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(tmp_path), str(start), str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(6)
    ]
    outputs = [opener.communicate(timeout=60)[0].split() for opener in openers]
    assert outputs == [["ok"] * rounds] * 6, outputs
