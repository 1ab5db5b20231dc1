"""What a typed contract costs a small request (issue 21): validators alone, then served.

Part 1, the validators alone: one small request (``?qty=2&color=red`` against ``qty:
integer, minimum 1`` and ``color: string, enum red|green``) checked by jsonschema's
Draft 2020-12 validator, by fastjsonschema's compiled function, and by nb2svc's whole
check (``Contract.check_request``: reading text as types, defaults, validation), in
microseconds per call.

The worker's own step (``Contracts.apply`` in a Flask request context, query string
parsed afresh each call) is timed the same way for the plain and the typed endpoint: their
difference is exactly the CPU the worker adds per request, free of the noise of a shared
machine.

Part 2, served: one ``nb2svc serve`` (1 worker, 1 kernel) with two endpoints that differ
only in their declaration, ``GET /plain`` and ``GET /typed`` (both ``print("ok")`` under
two comment lines of the same length: ``# param`` lines or prose), both
sent ``?qty=2&color=red``. Sequential keep-alive requests in alternating blocks (the order
flipped every round); CPU seconds of the
worker and of the kernel are read from /proc before and after each block, so the figure
is CPU per request (wall time on a shared machine says little). The added CPU of the
typed endpoint over the plain one is the cost of the contract.

Run: ``python bench/contract_bench.py [--requests 500] [--rounds 16] [--json out.json]``
(about a minute).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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

#: The same two comment lines, not declarations: IPython transforms every line of a cell,
#: so both cells are the same size and only the contract differs.
PLAIN = '# GET /plain\n# qty is an integer, minimum 1 - how many\n# color is red or green\nprint("ok")'
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
    from flask import Flask, request

    from nb2svc.runtime.http_api.contract import Contracts
    from nb2svc.runtime.kernel.invoke import RequestPayload

    both = compile_notebook(notebook(PLAIN, TYPED))
    contracts = Contracts(both)
    plain_ep, typed_ep = sorted(both.endpoints, key=lambda ep: ep.path)
    app = Flask(__name__, root_path=str(REPO))
    context = app.test_request_context("/x?qty=2&color=red")
    context.push()

    def apply(endpoint: Any) -> None:
        request.__dict__.pop("args", None)  # each request parses its own query string
        assert isinstance(contracts.apply(endpoint, request, {}, RequestPayload("{}")), RequestPayload)

    cases = {
        "jsonschema is_valid": lambda: full.is_valid(instance),
        "jsonschema iter_errors (every error)": lambda: list(full.iter_errors(instance)),
        "fastjsonschema compiled": lambda: fast(instance),
        "nb2svc check_request": lambda: contract.check_request({}, args, {}),
        "worker step, endpoint without a contract": lambda: apply(plain_ep),
        "worker step, typed endpoint (as served)": lambda: apply(typed_ep),
    }
    try:
        return {name: min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6 for name, fn in cases.items()}
    finally:
        context.pop()


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(requests: int, rounds: int) -> dict[str, Any]:
    """CPU milliseconds per request of the worker and the kernel, per endpoint, over every round."""
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
            targets = ("/plain?qty=2&color=red", "/typed?qty=2&color=red")
            for target in targets:
                for _ in range(200):  # warm-up
                    _get(conn, target)
            procs = descendants(server.pid)
            kernels = [p.pid for p in procs if "ipykernel" in p.cmdline]
            workers = [server.pid] + [p.pid for p in procs if "ipykernel" not in p.cmdline]
            spent = {t: {"worker": 0.0, "kernel": 0.0} for t in targets}
            per_round: dict[str, list[float]] = {t: [] for t in targets}
            for index in range(rounds):
                # small alternating blocks, the order flipped each round: drift on a shared
                # machine falls on both endpoints alike
                for target in targets if index % 2 == 0 else targets[::-1]:
                    before_w, before_k = sum(map(_cpu, workers)), sum(map(_cpu, kernels))
                    for _ in range(requests):
                        _get(conn, target)
                    worker = sum(map(_cpu, workers)) - before_w
                    kernel = sum(map(_cpu, kernels)) - before_k
                    spent[target]["worker"] += worker
                    spent[target]["kernel"] += kernel
                    per_round[target].append((worker + kernel) / requests * 1e3)
            total = rounds * requests
            return {
                target: {part: seconds / total * 1e3 for part, seconds in parts.items()}
                | {"rounds_total_ms": per_round[target]}
                for target, parts in spent.items()
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
    parser.add_argument("--requests", type=int, default=500, help="requests per endpoint per round")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--calls", type=int, default=20000, help="calls per validator timing")
    parser.add_argument("--json", type=Path, help="save the figures")
    args = parser.parse_args(argv)
    micro = validators(args.calls)
    print("validators, one small request (us per call, best of 5):")
    for name, us in micro.items():
        print(f"  {name:40s} {us:8.2f}")
    step = (
        micro["worker step, typed endpoint (as served)"] - micro["worker step, endpoint without a contract"]
    )
    cpu = served(args.requests, args.rounds)
    print(f"\nserved, CPU ms per request ({args.rounds} alternating rounds of {args.requests}):")
    print(f"  {'endpoint':28s} {'worker':>8s} {'kernel':>8s} {'total':>8s}")
    for target, parts in cpu.items():
        total = parts["worker"] + parts["kernel"]
        print(f"  {target:28s} {parts['worker']:8.3f} {parts['kernel']:8.3f} {total:8.3f}")
    plain, typed = cpu["/plain?qty=2&color=red"], cpu["/typed?qty=2&color=red"]
    plain_total = plain["worker"] + plain["kernel"]
    added = typed["worker"] + typed["kernel"] - plain_total
    worker_added = typed["worker"] - plain["worker"]
    spread = [t - p for t, p in zip(typed["rounds_total_ms"], plain["rounds_total_ms"], strict=True)]
    print(
        f"\ncontract added: {added * 1e3:+.0f} us per request ({added / plain_total:+.1%} of the total CPU); "
        f"worker {worker_added * 1e3:+.0f} us ({worker_added / plain_total:+.1%}); "
        f"per-round difference {min(spread) * 1e3:+.0f} .. {max(spread) * 1e3:+.0f} us"
    )
    print(
        f"worker step added, timed in process: {step:.1f} us per request "
        f"({step / 1e3 / plain_total:.2%} of the plain endpoint's total CPU)"
    )
    if args.json:
        args.json.write_text(json.dumps({"validators_us": micro, "served_cpu_ms": cpu}, indent=2))


if __name__ == "__main__":
    main()
