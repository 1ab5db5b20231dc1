"""The contract every shared-state backend keeps (:class:`Store`), and leases built on it.

Why one small interface: async jobs must be visible to every worker and replica, and
kernel mode's kernel registry comes next; both need the same few atomic operations,
whatever holds the data (SQLite for one server, Redis for several replicas).

Keys are strings, values bytes. ``ttl`` is in seconds (``None``: kept until deleted);
an expired key reads as absent everywhere. Every operation is atomic on its own
(``create`` and the ``compare_*`` operations are the building blocks for state
machines and leases). An *index* is a set of members under one key, each with its own
expiry: a member that is not renewed stops counting, so a worker that dies cannot leave
counts behind. A worker learns of changes made elsewhere (a cancel) by watching keys
with :meth:`Store.get_many`, one round trip for all the keys it cares about, a few
times a second: that works on every backend and needs no listener connection.

Every backend raises :class:`StoreUnavailable` (one message, credentials never in
it) when it cannot answer; callers turn that into a 503 and keep everything else
serving.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class StoreUnavailable(RuntimeError):
    """The store did not answer (gone, refused, timed out, or its disk failed)."""


class Store(ABC):
    """Shared keys with expiry, atomic create/compare, expiring indexes (see the module docstring)."""

    #: What the store is, for the banner and logs (credentials redacted).
    description: str = ""

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers, else raise :class:`StoreUnavailable`."""

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` in order (``None`` for absent ones), in one round trip."""

    @abstractmethod
    def put(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    @abstractmethod
    def create(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Set ``key`` only if it is absent; ``False`` if it exists."""

    @abstractmethod
    def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        """Set ``key`` to ``value`` only if it holds exactly ``expected`` now."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; ``False`` if it was absent."""

    @abstractmethod
    def compare_and_delete(self, key: str, expected: bytes) -> bool:
        """Remove ``key`` only if it holds exactly ``expected`` now."""

    @abstractmethod
    def index_add(self, key: str, member: str, ttl: float) -> None:
        """Add (or renew) ``member`` of the index ``key`` for ``ttl`` seconds."""

    @abstractmethod
    def index_remove(self, key: str, member: str) -> None: ...

    @abstractmethod
    def index_count(self, key: str) -> int:
        """How many members of the index ``key`` have not expired."""

    @abstractmethod
    def index_members(self, key: str) -> list[str]:
        """The members of the index ``key`` that have not expired (in no particular order)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads (the store's data stays)."""

    # --- leases, on top of the atomic operations ---------------------------------

    def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        """Hold ``key`` for ``owner`` for ``ttl`` seconds; ``False`` if someone holds it."""
        return self.create(key, owner.encode(), ttl)

    def renew_lease(self, key: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease; ``False`` if it expired or is held by another."""
        held = owner.encode()
        return self.compare_and_set(key, held, held, ttl)

    def release_lease(self, key: str, owner: str) -> bool:
        return self.compare_and_delete(key, owner.encode())


__all__ = ["Store", "StoreUnavailable"]
