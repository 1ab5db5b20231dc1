"""Forked vs spawned kernels (issue 20), side by side in one run; prints a table.

    python bench/fork_bench.py                  # every measurement, both modes (~2 min)
    python bench/fork_bench.py --rounds 5 --starts 40 --setup-mb 400 --setup-seconds 2

Measurements, each for ``--kernel-start fork`` and ``spawn`` (nb2svc from this tree):

1. heavy notebook (setup sleeps ``--setup-seconds`` and fills a ``--setup-mb`` MB bytes
   object), ``--pool-size 4``:
   - summed PSS (``/proc/PID/smaps_rollup``) of the 4 kernels and the template, against
     one spawned kernel's PSS (goal with fork: at most 1.5 of it);
   - refill: a kernel SIGKILLed until the pool is full again (metrics ``live`` and
     ``idle`` back at 4), median of ``--rounds`` (goal with fork: 0.3 s); the victim is the
     oldest kernel once it has lived 10 s, so each death is a stable kernel's, replaced at
     once (a younger kernel's death is a quick one: two in a row and the pool backs off);
2. launch to first answer: ``nb2svc serve examples/notebooks/hello.ipynb --pool-size 1``
   from the process start to the first 200 of ``GET /hello/bench`` (goal: 0.6 s);
3. kernel mode (``--warm``, default 0): ``--starts`` sequential ``POST /api/kernels``, each followed by a
   first ``execute_request`` over the websocket and its reply (goal: 2 s for 40), on a
   fresh server each round, median of ``--rounds``; each kernel is deleted after its
   answer, outside the timing. The first start is shown too: it is the one that used to
   wait for the kernel spec's template.

Small-request throughput is ``bench/api_bench.py``'s (run it with ``--nb2svc-cmd`` and
``--kernel-start fork`` / ``spawn``; see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
import requests
import websocket

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "notebooks" / "hello.ipynb"
MODES = ("fork", "spawn")
TOKEN = "bench-token"
#: nb2svc's RestartPolicy.stable_start for local kernels (seconds).
STABLE_START = 10.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def age(pid: int) -> float:
    """Seconds since ``pid`` started (``/proc/PID/stat`` field 22, in clock ticks since boot)."""
    with open(f"/proc/{pid}/stat") as f:
        started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - started


def kernel_processes(master: int) -> tuple[list[int], list[int]]:
    """(kernels, templates) under ``master``: a kernel leads its own process group, a template does not."""
    kernels, templates = [], []
    for pid in descendants(master):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
            group = os.getpgid(pid)
        except OSError:
            continue
        if "ipykernel" in command or ("kernel/template.py" in command and group == pid):
            kernels.append(pid)
        elif "kernel/template.py" in command:
            templates.append(pid)
    return kernels, templates


class Serve:
    """``nb2svc serve ARGS`` from this tree, on a free port, in its own session; killed on exit."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nb2svc", "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, path: str, timeout: float = 120, interval: float = 0.005, **kwargs: Any) -> float:
        """Seconds since the launch when ``path`` first answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"server exited:\n{self.log.read().decode(errors='replace')}")
            try:
                if requests.get(self.base + path, timeout=5, **kwargs).status_code == 200:
                    return time.perf_counter() - self.started
            except requests.RequestException:
                pass
            time.sleep(interval)
        raise SystemExit(f"{path} did not answer 200 within {timeout}s")

    def pool(self) -> tuple[int, int]:
        """(live, idle) kernels, from the readiness body (cheap: polled every few ms)."""
        body = requests.get(self.base + "/_api/health/ready", timeout=5).json()
        return body["kernels"], body["idle"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def heavy_notebook(directory: Path, mb: int, seconds: float) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell(f"import time\ntime.sleep({seconds})\nblob = b'x' * ({mb} << 20)"),
        nbformat.v4.new_code_cell("# GET /size\nprint(len(blob))"),
    ]
    path = directory / "heavy.ipynb"
    nbformat.write(nb, path)
    return path


def heavy(mode: str, notebook: Path, rounds: int, mb: int) -> dict[str, Any]:
    with Serve(str(notebook), "--pool-size", "4", "--kernel-start", mode) as server:
        server.wait("/_api/health/ready")
        kernels, templates = kernel_processes(server.proc.pid)
        assert len(kernels) == 4, kernels
        result: dict[str, Any] = {
            "pool_pss": sum(pss(p) for p in kernels + templates),
            "one_kernel_pss": pss(kernels[0]),
            "template_pss": sum(pss(p) for p in templates),
        }
        refills = []
        for _ in range(rounds):
            # The oldest kernel, once it has lived past the restart policy's stable start time
            # (10 s for a local kernel): a younger one's death counts as a crash loop, and the
            # pool then waits before replacing it on purpose (RestartPolicy.delay).
            victim = max(kernel_processes(server.proc.pid)[0], key=age)
            time.sleep(max(0.0, STABLE_START + 0.5 - age(victim)))
            began = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while server.pool()[0] == 4:  # until the death is seen
                time.sleep(0.002)
            while server.pool() != (4, 4):
                time.sleep(0.005)
            refills.append(time.perf_counter() - began)
        assert requests.get(server.base + "/size", timeout=10).text.strip() == str(mb << 20)
        result["refill"] = statistics.median(refills)
        return result


def launch(mode: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        with Serve(str(HELLO), "--pool-size", "1", "--kernel-start", mode) as server:
            times.append(server.wait("/hello/bench", interval=0.005))
    return statistics.median(times)


def execute_once(base_ws: str, kernel_id: str) -> None:
    ws = websocket.create_connection(
        f"{base_ws}/api/kernels/{kernel_id}/channels", header=[f"Authorization: token {TOKEN}"], timeout=30
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "channel": "shell",
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "b",
                               "session": msg_id, "date": "2026-01-01T00:00:00Z", "version": "5.3"},
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": "print(6 * 7)", "silent": False, "store_history": False,
                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                }
            )
        )  # fmt: skip
        while True:
            msg = json.loads(ws.recv())
            if msg["channel"] == "shell" and msg["parent_header"].get("msg_id") == msg_id:
                assert msg["content"]["status"] == "ok", msg["content"]
                return
    finally:
        ws.close()


def kernel_starts(mode: str, starts: int, warm: int) -> tuple[float, float]:
    """One fresh server's ``starts`` sequential starts, each with its first execute: the
    seconds they took in all, and the first one's."""
    headers = {"Authorization": f"token {TOKEN}"}
    with Serve("--kernels", "--token", TOKEN, "--kernel-start", mode, "--warm", str(warm)) as server:
        server.wait("/_api/health/ready")
        base_ws = server.base.replace("http://", "ws://")
        times = []
        for _ in range(starts):
            began = time.perf_counter()
            response = requests.post(
                server.base + "/api/kernels", json={"name": "python3"}, headers=headers, timeout=60
            )
            assert response.status_code == 201, response.text
            kernel_id = response.json()["id"]
            execute_once(base_ws, kernel_id)
            times.append(time.perf_counter() - began)
            requests.delete(f"{server.base}/api/kernels/{kernel_id}", headers=headers, timeout=60)
        return sum(times), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="refills, launches and kernel-mode runs per mode (median)"
    )
    parser.add_argument("--starts", type=int, default=40, help="sequential kernel-mode starts")
    parser.add_argument("--setup-mb", type=int, default=400, help="MB the heavy notebook's setup holds")
    parser.add_argument("--setup-seconds", type=float, default=2.0, help="seconds the heavy setup sleeps")
    parser.add_argument("--warm", type=int, default=0, help="kernel mode's --warm for the starts")
    parser.add_argument("--only", default="heavy,launch,kernels", help="which measurements (comma-separated)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        notebook = heavy_notebook(Path(tmp), args.setup_mb, args.setup_seconds)
        for mode in MODES:  # one mode after the other, each measurement side by side
            if "heavy" in only:
                results[mode].update(heavy(mode, notebook, args.rounds, args.setup_mb))
            if "launch" in only:
                results[mode]["launch"] = launch(mode, args.rounds)
            if "kernels" in only:
                runs = [kernel_starts(mode, args.starts, args.warm) for _ in range(args.rounds)]
                results[mode]["kernel_starts"] = statistics.median(total for total, _ in runs)
                results[mode]["first_start"] = statistics.median(first for _, first in runs)
    mib = 1 << 20
    rows = []
    spawned_one = results["spawn"].get("one_kernel_pss")
    for mode in MODES:
        r = results[mode]
        if "pool_pss" in r:
            ratio = r["pool_pss"] / spawned_one if spawned_one else float("nan")
            rows.append(
                (
                    mode,
                    "pool of 4, summed PSS (kernels + template)",
                    f"{r['pool_pss'] / mib:.0f} MiB = {ratio:.2f}x one spawned kernel",
                )
            )
            rows.append(
                (
                    mode,
                    "one kernel's PSS / the template's",
                    f"{r['one_kernel_pss'] / mib:.0f} / {r['template_pss'] / mib:.0f} MiB",
                )
            )
            rows.append(
                (mode, f"SIGKILL to pool full again (median of {args.rounds})", f"{r['refill']:.3f} s")
            )
        if "launch" in r:
            rows.append(
                (
                    mode,
                    f"hello.ipynb launch to first answer (median of {args.rounds})",
                    f"{r['launch']:.3f} s",
                )
            )
        if "kernel_starts" in r:
            what = f"{args.starts} kernel-mode starts + execute (--warm {args.warm}, median of {args.rounds})"
            value = f"{r['kernel_starts']:.2f} s (the first {1000 * r['first_start']:.0f} ms)"
            rows.append((mode, what, value))
    width = max(len(r[1]) for r in rows) if rows else 0
    print(f"{'mode':6} {'measurement':{width}} value")
    for mode, what, value in rows:
        print(f"{mode:6} {what:{width}} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
