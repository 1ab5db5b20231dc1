"""``/api/sessions``: Jupyter Server's session records (path ↔ kernel), in memory.

A session names a kernel after a document (``path``, ``name``, ``type``). Semantics follow
Jupyter Server 2: creating a session for a path that has one returns the existing one;
deleting a session shuts its kernel down; a session whose kernel is gone (shut down,
culled) disappears from the list.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from nb2svc.runtime.kernels_api.manager import KernelNotFound, KernelRegistry


class SessionNotFound(KeyError):
    """No session with that id (404)."""


@dataclass
class SessionRecord:
    id: str
    path: str
    name: str
    type: str
    kernel_id: str


class SessionRegistry:
    def __init__(self, kernels: KernelRegistry) -> None:
        self.kernels = kernels
        self._sessions: dict[str, SessionRecord] = {}

    def _prune(self) -> None:
        for record in list(self._sessions.values()):
            if record.kernel_id not in self.kernels.kernels:
                del self._sessions[record.id]

    def model(self, record: SessionRecord) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": record.id,
            "path": record.path,
            "name": record.name,
            "type": record.type,
            "kernel": self.kernels.get(record.kernel_id).model(),
        }
        if record.type == "notebook":  # Jupyter Server's deprecated shape, still read by old clients
            model["notebook"] = {"path": record.path, "name": record.name}
        return model

    def models(self) -> list[dict[str, Any]]:
        self._prune()
        return [self.model(r) for r in self._sessions.values()]

    def get(self, session_id: str) -> SessionRecord:
        self._prune()
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    def find(self, path: str) -> SessionRecord | None:
        self._prune()
        return next((r for r in self._sessions.values() if r.path == path), None)

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
            self.kernels.get(kernel_id)
        else:
            kernel_id = self.kernels.start_kernel(kernel_name, env).id
        record = SessionRecord(str(uuid.uuid4()), path, name or "", type, kernel_id)
        self._sessions[record.id] = record
        return record

    def update(self, session_id: str, changes: dict[str, Any]) -> SessionRecord:
        """Apply ``path``/``name``/``type``/``kernel_id`` changes; a replaced kernel is shut down."""
        record = self.get(session_id)
        old_kernel = record.kernel_id
        for key in ("path", "name", "type", "kernel_id"):
            if key in changes:
                setattr(record, key, changes[key])
        if record.kernel_id != old_kernel:
            try:
                self.kernels.shutdown_kernel(old_kernel)
            except KernelNotFound:
                pass
        return record

    def delete(self, session_id: str) -> None:
        record = self.get(session_id)
        del self._sessions[session_id]
        try:
            self.kernels.shutdown_kernel(record.kernel_id)
        except KernelNotFound:
            pass
