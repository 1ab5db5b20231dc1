"""The kernel registry's bookkeeping in the shared store, for several kernel-mode replicas.

:class:`ReplicaBook` is the :class:`~.manager.Bookkeeper` a registry reports to when
``--store`` is set: it publishes each kernel this replica owns (:mod:`.cluster` says what a
record holds), keeps the replica's lease and the kernels' ``--max-kernels`` slots renewed
and the published models (activity, state, connections) fresh, every third of
``--replica-lease``, and takes over the kernels of replicas that are gone when their
provisioner can be reloaded (removing the others). It answers the
listing and the kernel models the REST routes give, the same on every replica.

Culling stays with each kernel's owner (its registry only culls the kernels it holds), so
each kernel is culled once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gevent

from nb2svc.runtime.kernel.process import LOCAL_PROVISIONER
from nb2svc.runtime.kernels_api.cluster import Cluster, jsonable
from nb2svc.runtime.kernels_api.manager import KernelNotFound
from nb2svc.runtime.store import StoreUnavailable

if TYPE_CHECKING:
    from nb2svc.runtime.kernels_api.managed import ManagedKernel
    from nb2svc.runtime.kernels_api.manager import KernelRegistry

log = logging.getLogger("nb2svc")


def _static_record(managed: ManagedKernel) -> dict[str, Any]:
    """What does not change while the kernel runs: its spec, connection and provisioner info."""
    process = managed.kernel.process
    record: dict[str, Any] = {"id": managed.id, "name": managed.name, "provisioner": process.provisioner_name}
    km = process.km
    if km is None:
        return record
    record["connection_info"] = jsonable(process.connection_info())
    try:
        info = managed.kernel.host.lifecycle.run(km.provisioner.get_provisioner_info(), timeout=10)
        record["provisioner_info"] = jsonable(info)
    except Exception as exc:  # the record is still useful for listing and forwarding
        log.warning("kernel %s: no provisioner info (%s)", managed.id, exc)
    return record


def _can_adopt(record: dict[str, Any]) -> bool:
    """Whether a dead replica's kernel may still run: one its provisioner can reload. A local
    kernel (jupyter_client's ``LocalProvisioner``, forked or spawned) died with its replica."""
    return (
        record.get("provisioner") != LOCAL_PROVISIONER
        and isinstance(record.get("provisioner_info"), dict)
        and isinstance(record.get("connection_info"), dict)
    )


class ReplicaBook:
    """A registry's kernels in the shared store (see the module docstring)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.registry: KernelRegistry | None = None
        self._records: dict[str, dict[str, Any]] = {}
        #: The process each record describes: a restart swaps it, and the record is redone.
        self._processes: dict[str, Any] = {}
        self._loop: gevent.Greenlet | None = None

    def start(self, registry: KernelRegistry) -> None:
        """Join the cluster (the lease is taken now, then renewed in the background)."""
        self.registry = registry
        self.cluster.heartbeat()
        self._loop = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)
        try:
            self.cluster.leave()
        except StoreUnavailable as exc:
            log.warning("could not leave the kernel registry: %s", exc)

    # --- the Bookkeeper protocol ---------------------------------------------------------

    def reserve(self, kernel_id: str) -> bool:
        return self.cluster.take_slot(kernel_id)

    def release(self, kernel_id: str) -> None:
        try:
            self.cluster.release_slot(kernel_id)
        except StoreUnavailable as exc:  # the slot expires with the lease it is no longer renewed by
            log.warning("kernel %s: could not release its slot: %s", kernel_id, exc)

    def listed(self, managed: ManagedKernel) -> None:
        self._records[managed.id] = _static_record(managed)
        self._processes[managed.id] = managed.kernel
        self._publish(managed)

    def unlisted(self, kernel_id: str) -> None:
        self._records.pop(kernel_id, None)
        self._processes.pop(kernel_id, None)
        try:
            self.cluster.withdraw(kernel_id)
            self.cluster.drop_sessions([kernel_id])
        except StoreUnavailable as exc:
            log.warning("kernel %s: could not remove it from the kernel registry: %s", kernel_id, exc)

    def hands_over(self, managed: ManagedKernel) -> bool:
        """Leave an adoptable kernel running when this replica stops and another is up
        (a rolling restart keeps its kernels); with no other replica, it is shut down."""
        record = self._records.get(managed.id)
        if record is None or not _can_adopt(record):
            return False
        try:
            return bool(self.cluster.others())
        except StoreUnavailable:
            return False

    # --- what every replica answers -------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Every replica's kernels: live models for this one's, published ones for the others'."""
        local = self.registry.kernels if self.registry is not None else {}
        records = self.cluster.kernels()
        owners = {record.get("owner", "") for record in records}
        alive = {owner for owner in owners if self.cluster.alive(owner)}
        return [
            local[record["id"]].model() if record["id"] in local else record["model"]
            for record in records
            if record["id"] in local or (record.get("owner") in alive and "model" in record)
        ]

    def model(self, kernel_id: str) -> dict[str, Any]:
        """One kernel's model; :class:`KernelNotFound` if no replica has it."""
        local = self.registry.kernels if self.registry is not None else {}
        if kernel_id in local:
            return local[kernel_id].model()
        record = self.cluster.kernel(kernel_id)
        if record is None or "model" not in record or not self.cluster.alive(record.get("owner", "")):
            raise KernelNotFound(kernel_id)
        return record["model"]

    def exists(self, kernel_id: str) -> bool:
        """Whether a live replica (this one included) has the kernel."""
        local = self.registry.kernels if self.registry is not None else {}
        if kernel_id in local:
            return True
        record = self.cluster.kernel(kernel_id)
        return record is not None and self.cluster.alive(record.get("owner", ""))

    def owner_url(self, kernel_id: str) -> str | None:
        """Where the replica owning ``kernel_id`` answers, when it is another live replica.

        Only an address from the registry is ever returned: requests are forwarded nowhere else.
        """
        record = self.cluster.kernel(kernel_id)
        if record is None or record.get("owner") == self.cluster.replica:
            return None
        if not self.cluster.alive(record.get("owner", "")):
            return None
        return record.get("url") or None

    # --- in the background ------------------------------------------------------------------

    def _publish(self, managed: ManagedKernel) -> None:
        static = self._records.get(managed.id)
        if static is None:
            return
        try:
            self.cluster.publish({**static, "model": managed.model()})
        except StoreUnavailable as exc:  # published again on the next beat
            log.warning("kernel %s: could not publish it: %s", managed.id, exc)

    def beat(self) -> None:
        """Renew the lease and slots, refresh this replica's kernels, remove the dead replicas'."""
        self.cluster.heartbeat()
        local = self.registry.kernels if self.registry is not None else {}
        stored = {record["id"]: record for record in self.cluster.kernels()}
        for kernel_id in list(self._records):
            managed = local.get(kernel_id)
            if managed is None:
                continue
            owner = stored.get(kernel_id, {}).get("owner", self.cluster.replica)
            if owner != self.cluster.replica:
                self._let_go(managed)
                continue
            if self._processes.get(kernel_id) is not managed.kernel:  # restarted: new connection info
                self._records[kernel_id] = _static_record(managed)
                self._processes[kernel_id] = managed.kernel
            self._publish(managed)
        for record in self.cluster.sweep(_can_adopt):
            self._adopt(record)

    def _let_go(self, managed: ManagedKernel) -> None:
        """Another replica took this kernel over (this one's lease lapsed: a stall, a lost
        store): stop serving it here without stopping it, so it has one owner again."""
        log.warning("kernel %s was taken over by another replica (this one's lease lapsed)", managed.id)
        if self.registry is not None and self.registry.kernels.get(managed.id) is managed:
            del self.registry.kernels[managed.id]
        self._records.pop(managed.id, None)
        self._processes.pop(managed.id, None)
        self.cluster.forget_slot(managed.id)
        managed.hand_over()

    def _adopt(self, record: dict[str, Any]) -> None:
        """Carry on a dead replica's kernel here, or remove it if it cannot be reached."""
        kernel_id = record["id"]
        if self.registry is None:
            return
        try:
            self.cluster.take_slot(kernel_id)  # best effort: the kernel runs whether or not one is free
            self.registry.adopt(
                kernel_id, record["name"], record["connection_info"], record["provisioner_info"]
            )
        except Exception as exc:
            log.warning("kernel %s of a replica that is gone cannot be taken over: %s", kernel_id, exc)
            self._records.pop(kernel_id, None)
            self._processes.pop(kernel_id, None)
            self.cluster.withdraw(kernel_id)
            self.cluster.drop_sessions([kernel_id])

    def _run(self) -> None:
        interval = self.cluster.lease / 3
        while True:
            gevent.sleep(interval)
            try:
                self.beat()
            except StoreUnavailable as exc:
                log.warning("cannot reach the kernel registry: %s", exc)
            except Exception:
                log.exception("the kernel registry's bookkeeping failed")


__all__ = ["ReplicaBook"]
