"""The store for several replicas: a Redis (or Valkey) server through redis-py.

Why Redis: every replica behind a load balancer reaches it, keys expire by themselves
(``PX``), and a short Lua script makes compare-and-set atomic on the server. Under
gevent, redis-py's sockets are cooperative, so a slow Redis blocks one greenlet, not
the worker. Short socket timeouts make a Redis that went away a quick
:class:`StoreUnavailable` (a 503 on job routes) rather than a hung request.

An index is a sorted set whose scores are the members' expiry times (milliseconds);
counting first drops the expired ones. Every key is prefixed with ``nb2svc:`` so one
Redis database can be shared with other users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisError

from nb2svc.runtime.store.base import Store, StoreUnavailable

T = TypeVar("T")

PREFIX = "nb2svc:"
#: Seconds to connect and to wait for an answer: a store that is gone must fail fast.
SOCKET_TIMEOUT = 2.0

# KEYS[1]; ARGV: expected, new value, ttl in ms ("" for none)
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2])
  else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
  return 1
end
return 0
"""
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


class RedisStore(Store):
    """:class:`Store` over Redis (see the module docstring); ``description`` is redacted."""

    def __init__(self, url: str, description: str, password: str | None = None) -> None:
        self.description = description
        options: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
            "retry_on_timeout": False,
        }
        if password is not None:
            options["password"] = password
        try:
            self._redis = redis.Redis.from_url(url, **options)
        except (ValueError, RedisError) as exc:
            raise StoreUnavailable(f"{description}: {exc}") from None
        self._cas = self._redis.register_script(_COMPARE_AND_SET)
        self._cad = self._redis.register_script(_COMPARE_AND_DELETE)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except RedisError as exc:
            # redis-py's messages name the host and port, never the password
            raise StoreUnavailable(f"{self.description}: {exc}") from None

    def ping(self) -> None:
        self._call(self._redis.ping)

    def get(self, key: str) -> bytes | None:
        return self._call(self._redis.get, PREFIX + key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return list(self._call(self._redis.mget, [PREFIX + k for k in keys]))

    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._call(lambda: self._redis.set(PREFIX + key, value, px=None if ttl is None else _ms(ttl)))

    def create(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        return bool(
            self._call(
                lambda: self._redis.set(PREFIX + key, value, nx=True, px=None if ttl is None else _ms(ttl))
            )
        )

    def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        ms = "" if ttl is None else str(_ms(ttl))
        return bool(self._call(lambda: self._cas(keys=[PREFIX + key], args=[expected, value, ms])))

    def delete(self, key: str) -> bool:
        return bool(self._call(self._redis.delete, PREFIX + key))

    def compare_and_delete(self, key: str, expected: bytes) -> bool:
        return bool(self._call(lambda: self._cad(keys=[PREFIX + key], args=[expected])))

    def index_add(self, key: str, member: str, ttl: float) -> None:
        expires = _ms(time.time() + ttl)

        def run() -> None:
            pipe = self._redis.pipeline()
            pipe.zadd(PREFIX + key, {member: expires})
            # the index itself goes once its last member could have expired
            pipe.pexpire(PREFIX + key, _ms(ttl), gt=True)
            pipe.pexpire(PREFIX + key, _ms(ttl), nx=True)
            pipe.execute()

        self._call(run)

    def index_remove(self, key: str, member: str) -> None:
        self._call(self._redis.zrem, PREFIX + key, member)

    def index_count(self, key: str) -> int:
        def run() -> int:
            pipe = self._redis.pipeline()
            pipe.zremrangebyscore(PREFIX + key, "-inf", _ms(time.time()))
            pipe.zcard(PREFIX + key)
            return int(pipe.execute()[1])

        return self._call(run)

    def index_members(self, key: str) -> list[str]:
        members = self._call(self._redis.zrangebyscore, PREFIX + key, f"({_ms(time.time())}", "+inf")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def close(self) -> None:
        self._redis.close()


__all__ = ["RedisStore"]
