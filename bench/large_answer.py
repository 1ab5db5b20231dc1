"""Large answers (issue 11, item 3): a 50 MB image and 50 MB of stdout, end to end.

    python bench/large_answer.py                       # this tree, 50 MB, 3 requests each
    python bench/large_answer.py --src before=/tmp/main-tree --src after=.   # alternating
    python bench/large_answer.py --mb 10 --n 2

Each source tree (``--src label=path``; ``PYTHONPATH`` points at it, so the same interpreter
runs that tree's nb2svc) serves a generated notebook with pool size 1 and one worker:

* ``GET /text/:n``: the cell prints ``n`` bytes of ASCII text (one ``print``);
* ``GET /image/:n``: the cell shows ``display(Image(data=png, format="png"))`` of ``n``
  bytes and a ResponseInfo cell sets ``Content-Type: image/png``, so the body is the
  decoded rich output.

Rounds alternate the order of the trees, each round on fresh servers. For every request
it measures time to the first byte of the response (status line and headers), the total
time until the last body byte, the peak RSS of the gunicorn worker and of the kernel
during the request (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` before each
request), against the worker's RSS before its first large answer (memory a request freed
stays mapped, so the RSS before each request says little) and the kernel's RSS before
the request (the cell's payload is made once, in an untimed first request, and cached:
the kernel's base includes it, and its peak above the base is what answering costs)
and the CPU of the whole process tree; each body is checked byte for byte. The table gives
medians over all requests of a tree.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import (  # noqa: E402
    REPO,
    RunningServer,
    ServerSpec,
    _read_stat,
    machine_info,
    start_server,
    stop_server,
)

TEXT_LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
PNG_HEAD = b"\x89PNG\r\n\x1a\n"

CELLS = (
    "import functools, json\nfrom IPython.display import Image, display\n"
    f"TEXT_LINE = {TEXT_LINE!r}.decode()\nPNG_HEAD = {PNG_HEAD!r}\n"
    "def _size():\n    return int(json.loads(REQUEST)['path']['n'])\n"
    # cached, so that a measured request's peak is the server's doing, not the payload's making
    "@functools.lru_cache(maxsize=2)\n"
    "def payload(kind, n):\n"
    "    if kind == 'text':\n        return (TEXT_LINE * (n // len(TEXT_LINE) + 1))[:n]\n"
    "    return (PNG_HEAD + bytes(range(256)) * (n // 256 + 1))[:n]",
    "# GET /hello/:name\nprint('hello, ' + json.loads(REQUEST)['path']['name'])",
    "# GET /text/:n\nprint(payload('text', _size()), end='')",
    "# GET /image/:n\ndisplay(Image(data=payload('image', _size()), format='png'))",
    "# ResponseInfo GET /image/:n\nprint(json.dumps({'headers': {'Content-Type': 'image/png'}}))",
)


def expected(kind: str, n: int) -> bytes:
    if kind == "text":
        return (TEXT_LINE * (n // len(TEXT_LINE) + 1))[:n]
    return (PNG_HEAD + bytes(range(256)) * (n // 256 + 1))[:n]


def write_notebook(folder: Path) -> Path:
    nb = new_notebook(
        cells=[new_code_cell(c) for c in CELLS],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    path = folder / "large.ipynb"
    nbformat.write(nb, path)
    return path


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def one_request(srv: RunningServer, kind: str, n: int, worker: int, kernel: int) -> dict[str, float]:
    """One GET, timed to the first byte and to the last; the body is checked as it streams in."""
    want = hashlib.sha256(expected(kind, n)).hexdigest()
    pids = [srv.proc.pid, worker, kernel]
    rss = {pid: _status_kb(pid, "VmRSS") for pid in (worker, kernel)}
    for pid in (worker, kernel):
        _reset_peak(pid)
    cpu0 = _cpu_s(pids)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
    started = time.perf_counter()
    conn.request("GET", f"/{kind}/{n}")
    response = conn.getresponse()
    ttfb = time.perf_counter() - started
    digest, size = hashlib.sha256(), 0
    while chunk := response.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    total = time.perf_counter() - started
    conn.close()
    cpu = _cpu_s(pids) - cpu0
    if response.status != 200 or digest.hexdigest() != want:
        raise AssertionError(f"/{kind}/{n}: status {response.status}, {size} bytes, body differs")
    return {
        "ttfb": ttfb,
        "total": total,
        "cpu": cpu,
        "worker_base": rss[worker] / 1024,
        "worker_peak": _status_kb(worker, "VmHWM") / 1024,
        "kernel_base": rss[kernel] / 1024,
        "kernel_peak": _status_kb(kernel, "VmHWM") / 1024,
        "chunked": float(response.getheader("Transfer-Encoding") == "chunked"),
    }


def worker_and_kernel(srv: RunningServer) -> tuple[int, int]:
    """The gunicorn worker and its one kernel (pool size 1, one worker)."""
    kernels = [p.pid for p in srv.kernels()]
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel below {srv.proc.pid}, found {kernels}")
    stat = _read_stat(kernels[0])
    if stat is None:
        raise RuntimeError("the kernel exited")
    return stat[0], kernels[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", default=[], help="label=path of an nb2svc source tree")
    ap.add_argument("--mb", type=float, default=50, help="answer size in MB (10^6 bytes; default 50)")
    ap.add_argument("--n", type=int, default=3, help="requests per kind per round (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds (default 1)")
    ap.add_argument("--kinds", default="image,text")
    args = ap.parse_args(argv)
    sources = [s.split("=", 1) for s in args.src] or [["this", str(REPO)]]
    size = int(args.mb * 1_000_000)
    kinds = args.kinds.split(",")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    print(f"# load average at start: {machine_info()['loadavg'][0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        notebook = write_notebook(Path(tmp))
        for rnd in range(args.rounds):
            order = sources if rnd % 2 == 0 else sources[::-1]
            for label, path in order:
                # -P: the tree on PYTHONPATH, not the harness's working directory (this
                # repository), is the nb2svc that runs, in the master and in the worker alike
                spec = ServerSpec(
                    label,
                    "{python} -P -m nb2svc serve {notebook} --host 127.0.0.1 --port {port} --pool-size 1"
                    " --workers 1 --request-timeout 600",
                    {"PYTHONPATH": str(Path(path).resolve())},
                    "/_api/health/ready",
                )
                srv = start_server(spec, notebook, 1, 120, f"large-{label}-{rnd}")
                try:
                    worker, kernel = worker_and_kernel(srv)
                    start = _status_kb(worker, "VmRSS") / 1024  # before any large answer
                    for kind in kinds:
                        one_request(srv, kind, size, worker, kernel)  # warm: imports, the cached payload
                        for _ in range(args.n):
                            sample = one_request(srv, kind, size, worker, kernel)
                            sample["worker_start"] = start
                            results.setdefault((label, kind), []).append(sample)
                            print(f"  {label} {kind}: {sample}", file=sys.stderr, flush=True)
                finally:
                    stop_server(srv, 10.0)
    print(f"# load average at end: {machine_info()['loadavg'][0]:.2f}; {size / 1e6:g} MB answers, medians")
    head = (
        f"{'tree':10} {'answer':7} {'n':>2} {'TTFB s':>7} {'total s':>7} {'CPU s':>6} "
        f"{'worker MB start→peak':>21} {'kernel MB base→peak':>20} chunked"
    )
    print(head)
    print("-" * len(head))
    for kind in kinds:
        for label, _ in sources:
            rows = results.get((label, kind), [])
            if not rows:
                continue
            m = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            print(
                f"{label:10} {kind:7} {len(rows):>2} {m['ttfb']:7.2f} {m['total']:7.2f} {m['cpu']:6.2f} "
                f"{m['worker_start']:11.0f} → {m['worker_peak']:5.0f} "
                f"{m['kernel_base']:11.0f} → {m['kernel_peak']:5.0f}   {'yes' if m['chunked'] else 'no'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
