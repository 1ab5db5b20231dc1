"""The counts of gone workers stay in the server's metrics (nb2svc.runtime.retired_metrics):
each gone worker's counters and histograms are folded into the server's retired counts
exactly once, under a lock, whoever folds them (a scraping worker, the exiting worker
itself, gunicorn's master before the reaper removes the worker's directory)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from nb2svc.runtime import reaper
from nb2svc.runtime.metrics import Family, Histogram, Page, exposition
from nb2svc.runtime.retired_metrics import (
    LOCK,
    RETIRED,
    SNAPSHOT,
    MetricsBusy,
    fold_dead,
    locked,
    read,
    retire_dead_workers,
)


def worker_page(requests: float, *, cpu: float = 3.0, live: int = 2) -> str:
    """A worker's page: a counter, a histogram, a gauge and a per-process counter."""
    durations = Histogram("d_seconds", "Durations.", (0.1, 1))
    for _ in range(int(requests)):
        durations.observe(0.5, route="/a")
    return exposition(
        [
            Family("r_total", "counter", "Requests.").add(requests, route="/a"),
            durations,
            Family("live", "gauge", "Kernels.").add(live),
            Family("process_cpu_seconds_total", "counter", "CPU.", merge="worker").add(cpu),
        ]
    )


def value(pages: list[Page], sample: str) -> float | None:
    """The value of the one sample named ``sample`` (whatever its labels) in ``pages``."""
    found = [v for page in pages for (name, _), v in page.samples.items() if name == sample]
    assert len(found) <= 1, found
    return found[0] if found else None


def dead_owner(server: Path, k: int, requests: float) -> Path:
    """A dead worker's directory (this process's pid with another start time, as a reused
    pid looks) holding its last snapshot."""
    directory = server / f"{os.getpid()}-{k}"
    directory.mkdir(parents=True)
    (directory / SNAPSHOT).write_text(worker_page(requests))
    return directory


def test_a_dead_workers_counters_and_histograms_are_kept_its_gauges_are_not(tmp_path: Path) -> None:
    dead = dead_owner(tmp_path, 1, 4)
    with locked(str(tmp_path)):
        retired = fold_dead(str(tmp_path))
    assert value(retired, "r_total") == 4 and value(retired, "d_seconds_count") == 4
    assert value(retired, "d_seconds_sum") == 2.0
    assert value(retired, "live") is None  # a gone worker's kernels are no one's
    assert not (dead / SNAPSHOT).exists()
    assert read(str(tmp_path)) == (retired, {dead.name})


def test_a_fold_interrupted_before_the_snapshot_was_removed_is_not_counted_again(tmp_path: Path) -> None:
    server = str(tmp_path)
    first = dead_owner(tmp_path, 1, 4)
    with locked(server):
        fold_dead(server)
    # the folder was killed after its rename, before removing the snapshot: it is still there
    (first / SNAPSHOT).write_text(worker_page(4))
    with locked(server):
        assert value(fold_dead(server), "r_total") == 4
    assert not (first / SNAPSHOT).exists()
    # once the reaper removed the directory, no snapshot can turn up there: the name goes
    first.rename(tmp_path / "removed")
    second = dead_owner(tmp_path, 2, 1)
    with locked(server):
        assert value(fold_dead(server), "r_total") == 5
    assert read(server)[1] == {second.name}


def test_a_scrape_sums_the_retired_counts_but_not_a_gone_processs_own_figures(tmp_path: Path) -> None:
    from nb2svc.runtime.shared_metrics import SharedMetrics

    server = tmp_path / str(reaper._name(os.getppid()))
    mine = server / str(reaper._name(os.getpid()))
    mine.mkdir(parents=True)
    dead_owner(server, 1, 4)
    shared = SharedMetrics()
    shared.source = lambda: [
        Family("r_total", "counter", "Requests.").add(1, route="/a"),
        Family("process_cpu_seconds_total", "counter", "CPU.", merge="worker").add(0.5),
    ]
    assert shared.start(2, lambda: str(mine), period=3600)
    try:
        lines = shared.page(shared.source).splitlines()
        assert 'r_total{route="/a"} 5' in lines
        cpu = [line for line in lines if line.startswith("process_cpu_seconds_total")]
        assert cpu == [f'process_cpu_seconds_total{{worker="{os.getpid()}"}} 0.5']
    finally:
        shared.stop()


def test_a_lock_held_past_the_wait_fails_the_scrape_and_a_dead_holders_lock_is_free(tmp_path: Path) -> None:
    from nb2svc.runtime.shared_metrics import SharedMetrics

    server = tmp_path / str(reaper._name(os.getppid()))
    mine = server / str(reaper._name(os.getpid()))
    mine.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom nb2svc.runtime.retired_metrics import locked\n"
            f"with locked({str(server)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    shared = SharedMetrics(lock_wait=0.05)
    shared.source = lambda: [Family("r_total", "counter", "Requests.").add(1)]
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(MetricsBusy), locked(str(server), wait=0.05):
            pass
        assert shared.start(2, lambda: str(mine), period=3600)
        with pytest.raises(MetricsBusy):
            shared.page(shared.source)
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        assert "r_total 1" in shared.page(shared.source)  # the kernel released the dead holder's lock
    finally:
        holder.kill()
        holder.wait(30)
        shared.stop()


def test_a_busy_lock_is_a_503_not_a_page_missing_workers() -> None:
    from nb2svc.config import Settings
    from nb2svc.runtime.webapp import create_webapp

    def busy(metrics: object) -> str:
        raise MetricsBusy("the metrics lock metrics.lock stayed taken for 5 s")

    app = create_webapp("t", Settings(), readiness=lambda: (True, {}), metrics=lambda: [], metrics_page=busy)
    response = app.test_client().get("/_api/metrics")
    assert response.status_code == 503
    assert response.get_json()["message"] == "the metrics lock metrics.lock stayed taken for 5 s"


#: One process of the race below: it makes ``count`` dead workers, each followed by a fold
#: under the lock and, as the reaper does once a snapshot is folded, the removal of its
#: directory; then it exits gracefully itself (a live worker folding its own final page).
RACER = textwrap.dedent(
    """
    import os, shutil, sys
    from tests.test_metrics_retired import worker_page
    from nb2svc.runtime import reaper
    from nb2svc.runtime.retired_metrics import SNAPSHOT, fold_dead, locked, retire
    server, count = sys.argv[1], int(sys.argv[2])
    for k in range(1, count + 1):
        dead = os.path.join(server, f"{os.getpid()}-{k}")
        os.mkdir(dead)
        with open(os.path.join(dead, "new"), "w") as f:
            f.write(worker_page(1))
        os.replace(os.path.join(dead, "new"), os.path.join(dead, SNAPSHOT))
        with locked(server):
            fold_dead(server)
        for name in os.listdir(server):
            folded = os.path.join(server, name)
            if name.startswith(f"{os.getpid()}-") and not os.path.exists(os.path.join(folded, SNAPSHOT)):
                shutil.rmtree(folded)
    mine = os.path.join(server, reaper._name(os.getpid()))
    os.mkdir(mine)
    with open(os.path.join(mine, SNAPSHOT), "w") as f:
        f.write(worker_page(0))  # a stale snapshot: its final page says 1
    retire(mine, worker_page(1))
    """
)


def test_racing_folders_and_readers_count_every_gone_worker_exactly_once(tmp_path: Path) -> None:
    server, racers, count = str(tmp_path), 4, 25
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen([sys.executable, "-c", RACER, server, str(count)], cwd=root) for _ in range(racers)
    ]
    seen: list[float] = []
    try:
        while any(p.poll() is None for p in processes):
            with locked(server):  # a scraping worker reads the retired counts meanwhile
                seen.append(value(fold_dead(server), "r_total") or 0)
        assert [p.wait(60) for p in processes] == [0] * racers
    finally:
        for p in processes:
            p.kill()
            p.wait(30)
    with locked(server):
        retired = fold_dead(server)
    assert value(retired, "r_total") == value(retired, "d_seconds_count") == racers * (count + 1)
    assert seen == sorted(seen)  # never a drop between two reads
    assert not list(tmp_path.glob(f"*/{SNAPSHOT}"))


def test_the_master_touches_nothing_without_a_snapshot_and_folds_one_before_reaping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nb2svc.runtime.server import _child_exit

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server = reaper.own_server_dir()
    assert server is not None and server.startswith(str(tmp_path))
    quiet = Path(server, f"{os.getpid()}-1")  # a dead worker that never published (one worker)
    (quiet / "kernel").mkdir(parents=True)
    retire_dead_workers()
    assert sorted(os.listdir(server)) == [quiet.name]  # no lock file, no retired counts
    dead = dead_owner(Path(server), 2, 3)
    _child_exit(None, None)  # gunicorn's master reaps the dead worker
    assert not dead.exists() and not quiet.exists()
    assert sorted(os.listdir(server)) == [LOCK, RETIRED]
    assert value(read(server)[0], "r_total") == 3
