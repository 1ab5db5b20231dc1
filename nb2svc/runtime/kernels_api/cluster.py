"""Kernel mode across replicas: the kernels and sessions of every replica, in the shared store.

Why: behind a load balancer without affinity, any replica gets any request. Each kernel
still runs under one replica's ``KernelManager`` (its *owner*), but every replica can list
it, describe it and find its owner to forward to (:mod:`.forward`). Used when ``--store``
names a shared store (Redis); without one, kernel mode keeps everything in its one worker.

In the store (see :mod:`nb2svc.runtime.store.base` for the operations):

- ``replica:{id}`` → the replica's advertised URL, a lease of ``--replica-lease``
  seconds that the owner renews every third of it (a replica whose lease is gone is gone);
  the index ``replicas`` lists the live ones;
- ``kernel:{id}`` → the kernel's record (JSON): id, kernelspec, owner replica and URL,
  connection info, the provisioner's ``get_provisioner_info()``, and the Jupyter model
  (last activity, execution state, connection count) as the owner last published it;
  the index ``kernels`` lists them;
- ``ksession:{id}`` → a session record (id, path, name, type, kernel id); the index
  ``ksessions`` lists them;
- ``kernel-slot:{n}`` for ``n < --max-kernels`` → the id of the kernel holding slot
  ``n``: taking a slot is an atomic ``create``, so concurrent starts on several replicas
  never exceed the limit; the owner renews its kernels' slots with its lease.

A kernel whose owner's lease expired and that cannot be carried on elsewhere (a local
child of the dead replica) is removed by whichever replica notices first
(:meth:`Cluster.sweep`), so it answers 404 rather than a forward that fails forever.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from nb2svc.runtime.store import Store, StoreUnavailable

log = logging.getLogger("nb2svc")

KERNELS = "kernels"
REPLICAS = "replicas"
SESSIONS = "ksessions"
#: Index membership of a record: long, renewed by the owner; the sweep removes orphans sooner.
RECORD_TTL = 24 * 3600.0


def _kernel_key(kernel_id: str) -> str:
    return f"kernel:{kernel_id}"


def _session_key(session_id: str) -> str:
    return f"ksession:{session_id}"


def _replica_key(replica: str) -> str:
    return f"replica:{replica}"


def _slot_key(slot: int) -> str:
    return f"kernel-slot:{slot}"


def _load(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def jsonable(value: Any) -> Any:
    """Connection or provisioner info as JSON can hold it: jupyter_client keeps the
    session key as bytes (decoded here; ``load_provisioner_info`` takes either)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class Cluster:
    """This replica's view of every replica's kernels and sessions (see the module docstring)."""

    def __init__(self, store: Store, url: str, lease: float, max_kernels: int = 0) -> None:
        self.store = store
        self.replica = uuid.uuid4().hex
        self.url = url.rstrip("/")
        self.lease = lease
        self.max_kernels = max_kernels
        #: Slot held by each of this replica's kernels (``--max-kernels``).
        self._slots: dict[str, int] = {}

    # --- this replica ------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew this replica's lease and its kernels' slots (every third of the lease)."""
        self.store.put(_replica_key(self.replica), self.url.encode(), self.lease)
        self.store.index_add(REPLICAS, self.replica, self.lease)
        for kernel_id, slot in list(self._slots.items()):
            self.store.put(_slot_key(slot), kernel_id.encode(), self.lease)

    def leave(self) -> None:
        """The replica stops: its lease goes at once, so the kernels it left running are
        taken over on the other replicas' next beat."""
        self.store.delete(_replica_key(self.replica))
        self.store.index_remove(REPLICAS, self.replica)

    def others(self) -> list[str]:
        """The other replicas whose lease is current."""
        return [r for r in self.store.index_members(REPLICAS) if r != self.replica]

    def alive(self, replica: str) -> bool:
        return replica == self.replica or self.store.get(_replica_key(replica)) is not None

    # --- the --max-kernels slots --------------------------------------------------------

    def take_slot(self, kernel_id: str) -> bool:
        """Reserve one of ``--max-kernels`` slots for ``kernel_id``; ``False`` when all are held."""
        if not self.max_kernels:
            return True
        for slot in range(self.max_kernels):
            if self.store.create(_slot_key(slot), kernel_id.encode(), self.lease):
                self._slots[kernel_id] = slot
                return True
        return False

    def forget_slot(self, kernel_id: str) -> None:
        """Stop renewing ``kernel_id``'s slot (its new owner holds one now) without freeing it."""
        self._slots.pop(kernel_id, None)

    def release_slot(self, kernel_id: str) -> None:
        slot = self._slots.pop(kernel_id, None)
        if slot is not None:
            self.store.compare_and_delete(_slot_key(slot), kernel_id.encode())

    # --- kernels ----------------------------------------------------------------------

    def publish(self, record: dict[str, Any]) -> None:
        """Write (or refresh) one of this replica's kernels."""
        record = {**record, "owner": self.replica, "url": self.url}
        self.store.put(_kernel_key(record["id"]), json.dumps(record).encode())
        self.store.index_add(KERNELS, record["id"], RECORD_TTL)

    def withdraw(self, kernel_id: str) -> None:
        self.store.delete(_kernel_key(kernel_id))
        self.store.index_remove(KERNELS, kernel_id)
        self.release_slot(kernel_id)

    def kernel(self, kernel_id: str) -> dict[str, Any] | None:
        return _load(self.store.get(_kernel_key(kernel_id)))

    def kernels(self) -> list[dict[str, Any]]:
        ids = self.store.index_members(KERNELS)
        return [r for r in map(_load, self.store.get_many([_kernel_key(i) for i in ids])) if r is not None]

    def sweep(self, can_adopt: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Records of kernels whose owner is gone: those ``can_adopt`` accepts are returned
        (claimed by this replica), the others are removed with their sessions."""
        adoptable = []
        for record in self.kernels():
            if self.alive(record.get("owner", "")):
                continue
            raw = self.store.get(_kernel_key(record["id"]))
            if raw is None:
                continue
            if can_adopt(record):
                claimed = {**record, "owner": self.replica, "url": self.url}
                if self.store.compare_and_set(_kernel_key(record["id"]), raw, json.dumps(claimed).encode()):
                    adoptable.append(record)
                continue
            if self.store.compare_and_delete(_kernel_key(record["id"]), raw):
                self.store.index_remove(KERNELS, record["id"])
                self.drop_sessions([record["id"]])
                log.warning(
                    "kernel %s died with its replica (%s): removed", record["id"], record.get("url", "?")
                )
        return adoptable

    # --- sessions ---------------------------------------------------------------------

    def put_session(self, record: dict[str, Any]) -> None:
        self.store.put(_session_key(record["id"]), json.dumps(record).encode())
        self.store.index_add(SESSIONS, record["id"], RECORD_TTL)

    def delete_session(self, session_id: str) -> None:
        self.store.delete(_session_key(session_id))
        self.store.index_remove(SESSIONS, session_id)

    def session(self, session_id: str) -> dict[str, Any] | None:
        return _load(self.store.get(_session_key(session_id)))

    def sessions(self) -> list[dict[str, Any]]:
        ids = self.store.index_members(SESSIONS)
        return [r for r in map(_load, self.store.get_many([_session_key(i) for i in ids])) if r is not None]

    def drop_sessions(self, kernel_ids: Iterable[str]) -> None:
        gone = set(kernel_ids)
        for record in self.sessions():
            if record.get("kernel_id") in gone:
                self.delete_session(record["id"])


__all__ = ["Cluster", "StoreUnavailable", "jsonable"]
