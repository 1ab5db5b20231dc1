"""Kernel-mode benchmark: nb2svc --kernels vs Jupyter Kernel Gateway 3 (jupyter-websocket mode).

What it measures, on 127.0.0.1, one server at a time:

* **Websocket execute round trip**: one client sends ``execute_request`` for
  ``print("hello, world")`` over ``/api/kernels/{id}/channels`` and waits for both the shell
  ``execute_reply`` and the iopub ``status: idle`` of that request, as bench/floor.py does with
  a bare jupyter_client (no HTTP, no websocket): p50/p99, executes/s and websocket messages/s,
  for both wire formats (``v1.kernel.websocket.jupyter.org`` and legacy JSON). Then two clients
  on two kernels at once, the machine's throughput ceiling (as the floor's 2-kernel variant).
* **Kernel start**: ``POST /api/kernels`` until its response, and until the first
  ``kernel_info_reply`` over a websocket opened right after (the kernel is usable). nb2svc is
  measured cold and with ``--warm``; before each warm sample the pool is allowed to refill
  (not timed), so the number is the hand-out, not the refill.

The same client code drives both servers, so client cost cancels out of the ratios. Servers are
started and stopped with bench/api_bench.py's helpers (process groups, leaked-kernel check).

Run: ``python bench/ws_bench.py`` (about a minute; ``--help`` for sizes). Needs
``bash bench/setup_reference.sh`` once for the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import requests
import websocket
from api_bench import KG_VENV, LOG_DIR, REPO, RunningServer, ServerSpec, free_port, machine_info, stop_server
from floor import FloorKernel, percentile, run_concurrent, run_single

TOKEN = "bench-token"
AUTH = {"Authorization": f"token {TOKEN}"}
V1 = "v1.kernel.websocket.jupyter.org"
CODE = 'print("hello, world")'
BLOCK = 25  # executes per block when a variant is interleaved with the floor

NB2SVC_CMD = "{python} -m nb2svc serve --kernels --host 127.0.0.1 --port {port} --token {token}"
REFERENCE_CMD = (
    "{kg_venv}/bin/jupyter kernelgateway --KernelGatewayApp.api=kernel_gateway.jupyter_websocket"
    " --KernelGatewayApp.ip=127.0.0.1 --KernelGatewayApp.port={port} --KernelGatewayApp.auth_token={token}"
)


# --- a lean websocket kernel client (both wire formats) ------------------------------------------


class WsClient:
    """Just enough of a Jupyter websocket client to time executes; parses only what it must."""

    def __init__(self, base: str, kernel_id: str, v1: bool) -> None:
        url = (
            base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
        )
        # skip_utf8_validation: websocket-client's own pure-Python pass; json.loads still rejects bad UTF-8
        self.ws = websocket.create_connection(
            url, header=AUTH, subprotocols=[V1] if v1 else None, timeout=30, skip_utf8_validation=True
        )
        self.v1 = self.ws.getsubprotocol() == V1
        self.received = 0

    def close(self) -> None:
        self.ws.close()

    def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": "bench", "username": "bench",
                  "date": "", "version": "5.3"}  # fmt: skip
        parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
        if self.v1:
            pieces = [channel.encode(), *parts]
            offsets = [8 * (len(pieces) + 2)]
            for piece in pieces:
                offsets.append(offsets[-1] + len(piece))
            table = b"".join(n.to_bytes(8, "little") for n in (len(offsets), *offsets))
            self.ws.send_binary(table + b"".join(pieces))
        else:
            msg = {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": channel,
            }
            self.ws.send(json.dumps(msg))
        return msg_id

    def recv(self) -> tuple[str, dict[str, Any], dict[str, Any], bytes | dict[str, Any]]:
        """``(channel, header, parent_header, content)``; content stays raw in v1 until needed."""
        data = self.ws.recv()
        self.received += 1
        if self.v1:
            offsets = [int.from_bytes(data[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(7)]
            channel = data[offsets[0] : offsets[1]].decode()
            header = json.loads(data[offsets[1] : offsets[2]])
            parent = json.loads(data[offsets[2] : offsets[3]])
            return channel, header, parent, data[offsets[4] : offsets[5]]
        msg = json.loads(data)
        return msg["channel"], msg["header"], msg["parent_header"], msg["content"]

    def execute(self, code: str) -> float:
        """One timed round trip (seconds); checks the output like the floor does."""
        t0 = time.perf_counter()
        msg_id = self.request(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
        )
        reply = idle = False
        stdout = ""
        while not (reply and idle):
            channel, header, parent, content = self.recv()
            if parent.get("msg_id") != msg_id:
                continue
            if channel == "shell":
                reply = True
                continue
            kind = header["msg_type"]
            if kind == "stream":
                stdout += _content(content)["text"]
            elif kind == "status" and _content(content)["execution_state"] == "idle":
                idle = True
        elapsed = time.perf_counter() - t0
        if stdout != "hello, world\n":
            raise RuntimeError(f"unexpected output {stdout!r}")
        return elapsed

    def kernel_info(self) -> None:
        msg_id = self.request("kernel_info_request", {})
        while True:
            channel, _header, parent, _content = self.recv()
            if channel == "shell" and parent.get("msg_id") == msg_id:
                return


def _content(content: bytes | dict[str, Any]) -> dict[str, Any]:
    return json.loads(content) if isinstance(content, bytes) else content


# --- servers ------------------------------------------------------------------------------------------


def launch(name: str, template: str, extra: str, timeout: float = 90) -> RunningServer:
    """Start a server in its own session and wait until its API (and warm pool) answer."""
    port = free_port()
    cmd = shlex.split(
        template.format(
            python=shlex.quote(sys.executable), port=port, token=TOKEN, kg_venv=shlex.quote(str(KG_VENV))
        )
    ) + shlex.split(extra)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"ws-{name.replace(' ', '')}.log"
    with open(log_path, "wb") as log:
        log.write(("$ " + shlex.join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    srv = RunningServer(ServerSpec(name, template, {}, None), proc, port, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(srv, 5)
            raise RuntimeError(f"{name} did not come up; see {log_path}")
        try:
            if requests.get(srv.base + "/api", headers=AUTH, timeout=2).status_code == 200 and _warm_ready(
                srv
            ):
                break
        except requests.RequestException:
            pass
        time.sleep(0.05)
    srv.snapshot()
    return srv


def _warm_ready(srv: RunningServer) -> bool:
    """True unless an nb2svc server says its warm pool is not full yet (the reference has none)."""
    try:
        r = requests.get(srv.base + "/_api/health/ready", timeout=2)
    except requests.RequestException:
        return True
    return r.status_code != 503 and (r.status_code == 404 or r.json().get("warm", 0) >= _warm_size(srv))


def _warm_size(srv: RunningServer) -> int:
    args = shlex.split(srv.spec.name)
    return int(args[args.index("--warm") + 1]) if "--warm" in args else 0


def new_kernel(srv: RunningServer) -> str:
    r = requests.post(srv.base + "/api/kernels", json={"name": "python3"}, headers=AUTH, timeout=60)
    r.raise_for_status()
    return r.json()["id"]


def delete_kernel(srv: RunningServer, kid: str) -> None:
    requests.delete(srv.base + f"/api/kernels/{kid}", headers=AUTH, timeout=60)


# --- measurements ------------------------------------------------------------------------------------


@dataclass
class Row:
    variant: str
    p50_ms: float
    p99_ms: float
    executes_per_s: float
    msgs_per_s: float
    protocol: str = ""
    floor_p50_ms: float = float("nan")  # the floor measured interleaved with this variant


def round_trips(srv: RunningServer, v1: bool, n: int, warmup: int, floor: FloorKernel | None) -> Row:
    """Sequential executes over one websocket, interleaved in blocks with the bare
    jupyter_client floor (when given) so both see the same moment of this shared machine."""
    kid = new_kernel(srv)
    client = WsClient(srv.base, kid, v1)
    lat: list[float] = []
    floor_lat: list[float] = []
    busy = 0.0
    try:
        for _ in range(warmup):
            client.execute(CODE)
        client.received = 0
        while len(lat) < n:
            block = min(BLOCK, n - len(lat))
            t0 = time.perf_counter()
            lat += [client.execute(CODE) * 1000 for _ in range(block)]
            busy += time.perf_counter() - t0
            if floor is not None:
                floor_lat += [floor.round_trip(store_history=False) * 1000 for _ in range(block)]
        protocol = "v1" if client.v1 else "legacy"
        name = f"{srv.spec.name.split()[0]} {protocol}"
        lat.sort()
        floor_lat.sort()
        floor_p50 = percentile(floor_lat, 50) if floor_lat else float("nan")
        row = Row(name, percentile(lat, 50), percentile(lat, 99), n / busy, client.received / busy, protocol)
        row.floor_p50_ms = floor_p50
        return row
    finally:
        client.close()
        delete_kernel(srv, kid)


def concurrent_round_trips(srv: RunningServer, n: int, warmup: int, clients: int = 2) -> Row:
    kernels = [new_kernel(srv) for _ in range(clients)]
    conns = [WsClient(srv.base, kid, True) for kid in kernels]
    lats: list[list[float]] = [[] for _ in conns]
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def drive(i: int) -> None:
        try:
            for _ in range(warmup):
                conns[i].execute(CODE)
            conns[i].received = 0
            barrier.wait()
            lats[i] = [conns[i].execute(CODE) * 1000 for _ in range(n // clients)]
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
        for kid in kernels:
            delete_kernel(srv, kid)
    if errors:
        raise RuntimeError(f"concurrent client failed: {errors[0]!r}")
    flat = sorted(x for per in lats for x in per)
    name = f"{srv.spec.name.split()[0]} v1, {clients} kernels x {clients} clients"
    return Row(name, percentile(flat, 50), percentile(flat, 99), len(flat) / wall,
               sum(c.received for c in conns) / wall, "v1")  # fmt: skip


@dataclass
class StartRow:
    server: str
    post_p50_ms: float
    post_max_ms: float
    usable_p50_ms: float
    usable_max_ms: float
    samples: int


def kernel_starts(srv: RunningServer, samples: int) -> StartRow:
    posts: list[float] = []
    usable: list[float] = []
    for _ in range(samples):
        deadline = time.monotonic() + 60
        while not _warm_ready(srv) and time.monotonic() < deadline:  # let a warm pool refill (not timed)
            time.sleep(0.05)
        t0 = time.perf_counter()
        kid = new_kernel(srv)
        posts.append((time.perf_counter() - t0) * 1000)
        client = WsClient(srv.base, kid, False)
        client.kernel_info()
        usable.append((time.perf_counter() - t0) * 1000)
        client.close()
        delete_kernel(srv, kid)
    med = statistics.median
    return StartRow(srv.spec.name, med(posts), max(posts), med(usable), max(usable), samples)


def floor_rows(kernels: list[FloorKernel], n: int, warmup: int) -> list[Row]:
    single = run_single(kernels[0], n, warmup, store_history=False)
    both = run_concurrent(kernels, n, warmup, store_history=False)
    return [
        Row(
            "floor: jupyter_client, 1 kernel",
            single.p50_ms,
            single.p99_ms,
            single.executes_per_s,
            float("nan"),
        ),
        Row("floor: 2 kernels x 2 threads", both.p50_ms, both.p99_ms, both.executes_per_s, float("nan")),
    ]


# --- report -----------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "-"


def report(rows: list[Row], starts: list[StartRow], n: int) -> str:
    by = {r.variant: r for r in rows}
    floor1 = by.get("floor: jupyter_client, 1 kernel")
    floor2 = by.get("floor: 2 kernels x 2 threads")
    head = (
        f"{'round trip: ' + CODE + f', store_history=False, n={n}':<44} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'exec/s':>7} {'msgs/s':>7} {'p50/floor':>9} {'p50/ref':>8} {'exec/s vs ref':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        floor = floor2 if "2 kernels" in r.variant else floor1
        if r.floor_p50_ms == r.floor_p50_ms:  # measured interleaved: the fairer baseline
            floor = Row("interleaved floor", r.floor_p50_ms, 0, 0, 0)
        ref_name = r.variant.replace("nb2svc", "reference", 1)
        ref = by.get(ref_name) if r.variant.startswith("nb2svc") else None
        lines.append(
            f"{r.variant:<44} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.executes_per_s:>7.0f} {r.msgs_per_s:>7.0f} "
            f"{_ratio(r.p50_ms, floor.p50_ms) if floor and not r.variant.startswith('floor') else '-':>9} "
            f"{_ratio(r.p50_ms, ref.p50_ms) if ref else '-':>8} "
            f"{_ratio(r.executes_per_s, ref.executes_per_s) if ref else '-':>13}"
        )
    head2 = (
        f"{'kernel start (POST /api/kernels)':<44} {'POST p50':>9} {'POST max':>9} "
        f"{'usable p50':>11} {'usable max':>11}"
    )
    lines += ["", head2, "-" * len(head2)]
    for s in starts:
        lines.append(
            f"{s.server + f' ({s.samples} starts)':<44} {s.post_p50_ms:>9.1f} {s.post_max_ms:>9.1f} "
            f"{s.usable_p50_ms:>11.1f} {s.usable_max_ms:>11.1f}"
        )
    lines.append("(usable: until the first kernel_info_reply over a websocket opened after the POST)")
    lines.insert(
        len(rows) + 2,
        "(p50/floor: single-client rows against the floor measured interleaved with them, in blocks of "
        f"{BLOCK}; 2-client rows against the 2-kernel floor)",
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="timed executes per variant (default 400)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed executes first (default 50)")
    ap.add_argument("--starts", type=int, default=6, help="kernel starts timed per server (default 6)")
    ap.add_argument("--warm", type=int, default=2, help="--warm for the nb2svc warm-pool run (default 2)")
    ap.add_argument("--only", choices=("nb2svc", "reference"), help="run one server only")
    ap.add_argument("--no-floor", action="store_true", help="skip the jupyter_client floor")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    info = machine_info()
    rows: list[Row] = []
    starts: list[StartRow] = []
    floor_kernels: list[FloorKernel] = []
    if not args.no_floor:
        say("floor ...")
        floor_kernels = [FloorKernel(), FloorKernel()]
        for k in floor_kernels:
            k.start()
        rows += floor_rows(floor_kernels, args.n, args.warmup)
    floor = floor_kernels[0] if floor_kernels else None
    servers = []
    if args.only != "reference":
        servers += [
            ("nb2svc", NB2SVC_CMD, ""),
            (f"nb2svc --warm {args.warm}", NB2SVC_CMD, f"--warm {args.warm}"),
        ]
    if args.only != "nb2svc":
        if not (KG_VENV / "bin" / "jupyter").exists():
            say("reference missing: run bash bench/setup_reference.sh")
        else:
            servers.append(("reference", REFERENCE_CMD, ""))
    stops = {}
    try:
        for name, template, extra in servers:
            say(f"{name} ...")
            srv = launch(name, template, extra)
            try:
                starts.append(kernel_starts(srv, args.starts))
                if "--warm" not in name:
                    rows.append(round_trips(srv, True, args.n, args.warmup, floor))
                    rows.append(round_trips(srv, False, args.n, args.warmup, floor))
                    rows.append(concurrent_round_trips(srv, args.n, args.warmup))
            finally:
                stops[name] = stop_server(srv, 15)
    finally:
        for k in floor_kernels:
            k.stop()
    print(f"# kernel mode, cpus={os.cpu_count()} loadavg={info['loadavg'][0]:.2f} {info['time']}")
    print(report(rows, starts, args.n))
    for name, stop in stops.items():
        if stop["leaked"] or stop["forced_kill"]:
            print(f"WARNING {name}: forced_kill={stop['forced_kill']} leaked={stop['leaked']}")
    if args.json:
        with open(args.json, "w") as fh:
            payload = {
                "machine": info,
                "round_trips": [asdict(r) for r in rows],
                "starts": [asdict(s) for s in starts],
                "stops": stops,
            }
            json.dump(payload, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
