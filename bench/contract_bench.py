"""What a typed contract costs a small request (issue 21): validators alone, then served.

Part 1, the validators alone: one small request (``?qty=2&color=red`` against ``qty:
integer, minimum 1`` and ``color: string, enum red|green``) checked by jsonschema's
Draft 2020-12 validator, by fastjsonschema's compiled function, and by nb2svc's whole
check (``Contract.check_request``: reading text as types, defaults, validation), in
microseconds per call.

Part 2, served: one ``nb2svc serve`` (1 worker, 1 kernel) with two endpoints that differ
only in their declaration, ``GET /plain`` and ``GET /typed`` (both ``print("ok")``).
Sequential keep-alive requests, alternating blocks of each endpoint; CPU seconds of the
worker and of the kernel are read from /proc before and after each block, so the figure
is CPU per request (wall time on a shared machine says little). The added CPU of the
typed endpoint over the plain one is the cost of the contract.

Run: ``python bench/contract_bench.py [--requests 2000] [--rounds 3] [--json out.json]``
(about a minute).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.api_bench import descendants, free_port  # noqa: E402

PLAIN = '# GET /plain\nprint("ok")'
TYPED = (
    "# GET /typed\n# param qty: integer, minimum 1 - how many\n# param color: string, enum red|green\n"
    'print("ok")'
)


def validators(n: int) -> dict[str, float]:
    """Microseconds per call of each way to check the small request."""
    import fastjsonschema
    from jsonschema import Draft202012Validator

    from nb2svc.compiler import compile_notebook
    from nb2svc.compiler.validation import Contract
    from tests.notebooks import notebook

    spec = compile_notebook(notebook(TYPED))
    schema = spec.endpoints[0].contract["params"]
    contract = Contract(spec.endpoints[0].contract)
    instance = {"qty": 2, "color": "red"}
    full = Draft202012Validator(schema)
    draft7 = {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
    fast = fastjsonschema.compile(draft7, use_default=False)
    args = {"qty": ["2"], "color": ["red"]}
    cases = {
        "jsonschema is_valid": lambda: full.is_valid(instance),
        "jsonschema iter_errors (every error)": lambda: list(full.iter_errors(instance)),
        "fastjsonschema compiled": lambda: fast(instance),
        "nb2svc check_request (as served)": lambda: contract.check_request({}, args, {}),
    }
    return {name: min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6 for name, fn in cases.items()}


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(requests: int, rounds: int) -> dict[str, Any]:
    """CPU milliseconds per request of the worker and the kernel, per endpoint (median of rounds)."""
    import nbformat

    from tests.notebooks import notebook

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contract.ipynb"
        nbformat.write(notebook(PLAIN, TYPED, kernel="python3", language="python"), path)
        port = free_port()
        cmd = [sys.executable, "-m", "nb2svc", "serve", str(path), "--port", str(port), "--pool-size", "1"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            conn = _wait_ready(port)
            samples: dict[str, dict[str, list[float]]] = {
                p: {"worker": [], "kernel": []} for p in ("/plain", "/typed?qty=2&color=red")
            }
            for _ in range(rounds):
                for target in samples:
                    for _ in range(200):  # warm-up
                        _get(conn, target)
                    procs = descendants(server.pid)
                    kernels = [p.pid for p in procs if "ipykernel" in p.cmdline]
                    workers = [p.pid for p in procs if "ipykernel" not in p.cmdline]
                    before_w = sum(_cpu(p) for p in workers) + _cpu(server.pid)
                    before_k = sum(_cpu(p) for p in kernels)
                    for _ in range(requests):
                        _get(conn, target)
                    after_w = sum(_cpu(p) for p in workers) + _cpu(server.pid)
                    after_k = sum(_cpu(p) for p in kernels)
                    samples[target]["worker"].append((after_w - before_w) / requests * 1e3)
                    samples[target]["kernel"].append((after_k - before_k) / requests * 1e3)
            return {
                target: {part: statistics.median(values) for part, values in parts.items()}
                for target, parts in samples.items()
            }
        finally:
            server.terminate()
            server.wait(30)


def _wait_ready(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/_api/health/ready")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return conn
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not get ready in 60 s")


def _get(conn: http.client.HTTPConnection, target: str) -> None:
    conn.request("GET", target)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200 or body != b"ok\n":
        raise SystemExit(f"GET {target}: {response.status} {body[:200]!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20000, help="calls per validator timing")
    parser.add_argument("--json", type=Path, help="save the figures")
    args = parser.parse_args(argv)
    micro = validators(args.calls)
    print("validators, one small request (us per call, best of 5):")
    for name, us in micro.items():
        print(f"  {name:40s} {us:8.2f}")
    cpu = served(args.requests, args.rounds)
    print(f"\nserved, CPU ms per request (median of {args.rounds} rounds of {args.requests}):")
    print(f"  {'endpoint':28s} {'worker':>8s} {'kernel':>8s} {'total':>8s}")
    for target, parts in cpu.items():
        print(f"  {target:28s} {parts['worker']:8.3f} {parts['kernel']:8.3f} {sum(parts.values()):8.3f}")
    plain, typed = cpu["/plain"], cpu["/typed?qty=2&color=red"]
    added = sum(typed.values()) - sum(plain.values())
    worker_added = typed["worker"] - plain["worker"]
    print(
        f"\ncontract added: {added * 1e3:+.0f} us per request total ({added / sum(plain.values()):+.1%}); "
        f"worker {worker_added * 1e3:+.0f} us ({worker_added / sum(plain.values()):+.1%} of the total)"
    )
    if args.json:
        args.json.write_text(json.dumps({"validators_us": micro, "served_cpu_ms": cpu}, indent=2))


if __name__ == "__main__":
    main()
