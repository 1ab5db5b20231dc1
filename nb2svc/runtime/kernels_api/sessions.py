"""``/api/sessions``: Jupyter Server's session records (path ↔ kernel), in memory or in the
shared store (with ``--store``, so that every replica answers the same).

A session names a kernel after a document (``path``, ``name``, ``type``). Semantics follow
Jupyter Server 2: creating a session for a path that has one returns the existing one;
deleting a session shuts its kernel down; a session whose kernel is gone (shut down,
culled) disappears from the list.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nb2svc.runtime.kernels_api.manager import KernelNotFound, KernelRegistry

if TYPE_CHECKING:
    from nb2svc.runtime.kernels_api.replicas import ReplicaBook


class SessionNotFound(KeyError):
    """No session with that id (404)."""


@dataclass
class SessionRecord:
    id: str
    path: str
    name: str
    type: str
    kernel_id: str


FIELDS = frozenset(f.name for f in dataclasses.fields(SessionRecord))


class SessionRegistry:
    """Sessions in this worker's memory, or in the shared store (``book``) so that every
    replica answers the same; ``shutdown_kernel`` stops a session's kernel wherever it runs."""

    def __init__(
        self,
        kernels: KernelRegistry,
        book: ReplicaBook | None = None,
        shutdown_kernel: Callable[[str], None] | None = None,
    ) -> None:
        self.kernels = kernels
        self.book = book
        self.shutdown_kernel = shutdown_kernel or kernels.shutdown_kernel
        self._sessions: dict[str, SessionRecord] = {}

    def _records(self) -> dict[str, SessionRecord]:
        if self.book is None:
            return self._sessions
        records = (SessionRecord(**r) for r in self.book.cluster.sessions() if set(r) == FIELDS)
        return {r.id: r for r in records}

    def _save(self, record: SessionRecord) -> None:
        if self.book is None:
            self._sessions[record.id] = record
        else:
            self.book.cluster.put_session(dataclasses.asdict(record))

    def _remove(self, session_id: str) -> None:
        if self.book is None:
            self._sessions.pop(session_id, None)
        else:
            self.book.cluster.delete_session(session_id)

    def kernel_exists(self, kernel_id: str) -> bool:
        if self.book is None:
            return kernel_id in self.kernels.kernels
        return self.book.exists(kernel_id)

    def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        if self.book is None:
            return self.kernels.get(kernel_id).model()
        return self.book.model(kernel_id)

    def _prune(self) -> dict[str, SessionRecord]:
        records = self._records()
        for record in list(records.values()):
            if not self.kernel_exists(record.kernel_id):
                del records[record.id]
                self._remove(record.id)
        return records

    def model(self, record: SessionRecord) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": record.id,
            "path": record.path,
            "name": record.name,
            "type": record.type,
            "kernel": self.kernel_model(record.kernel_id),
        }
        if record.type == "notebook":  # Jupyter Server's deprecated shape, still read by old clients
            model["notebook"] = {"path": record.path, "name": record.name}
        return model

    def models(self) -> list[dict[str, Any]]:
        models = []
        for record in self._prune().values():
            try:
                models.append(self.model(record))
            except KernelNotFound:  # shut down meanwhile
                continue
        return models

    def get(self, session_id: str) -> SessionRecord:
        try:
            return self._prune()[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    def find(self, path: str) -> SessionRecord | None:
        return next((r for r in self._prune().values() if r.path == path), None)

    def create(
        self,
        path: str,
        type: str,
        name: str | None = None,
        kernel_name: str | None = None,
        kernel_id: str | None = None,
        env: dict[str, str] | None = None,
    ) -> SessionRecord:
        """A new session on an existing kernel (``kernel_id``) or a new one.

        Raises :class:`KernelNotFound` for an unknown ``kernel_id``, and whatever
        :meth:`KernelRegistry.start_kernel` raises.
        """
        if kernel_id:
            if not self.kernel_exists(kernel_id):
                raise KernelNotFound(kernel_id)
        else:
            kernel_id = self.kernels.start_kernel(kernel_name, env).id
        record = SessionRecord(str(uuid.uuid4()), path, name or "", type, kernel_id)
        self._save(record)
        return record

    def update(self, session_id: str, changes: dict[str, Any]) -> SessionRecord:
        """Apply ``path``/``name``/``type``/``kernel_id`` changes; a replaced kernel is shut down."""
        record = self.get(session_id)
        old_kernel = record.kernel_id
        for key in ("path", "name", "type", "kernel_id"):
            if key in changes:
                setattr(record, key, changes[key])
        self._save(record)
        if record.kernel_id != old_kernel:
            try:
                self.shutdown_kernel(old_kernel)
            except KernelNotFound:
                pass
        return record

    def delete(self, session_id: str) -> None:
        record = self.get(session_id)
        self._remove(session_id)
        try:
            self.shutdown_kernel(record.kernel_id)
        except KernelNotFound:
            pass
