"""HTTP benchmark: nb2svc vs Jupyter Kernel Gateway 3 (notebook-http) on the same notebook.

Why it is built this way:

* Both servers get the same notebook (bench/notebooks/hello.ipynb), the same pool size (2 kernels)
  and the same load, on 127.0.0.1 only.
* Rounds alternate the order of the servers (A,B then B,A ...) and each round restarts them, so
  slow drift on this shared 2-core machine hits both and every round yields one more
  "launch to first correct response" sample. Only one server runs at a time.
* Load comes from ``wrk -t1 -c{C} -d{D}s --latency`` with a small Lua script that checks every
  response body (status 200 AND the expected text), so a fast server that answers wrongly shows up
  as errors, not as speed. Without wrk a threaded http.client generator is used (and says so).
* The median over rounds is reported for req/s, p50 and p99; errors are summed over rounds so a
  single bad round cannot hide.
* CPU ms/req is the CPU time (user+sys) of the server's whole process tree, kernels included,
  divided by requests: a noise-resistant efficiency number on a machine others share.
* The jupyter_client floor (bench/floor.py) runs first, so one run shows how far each server is
  from a bare execute round trip.

Servers are started in their own process group and stopped with SIGTERM, then SIGKILL after a
deadline; kernels are started by jupyter_client in sessions of their own, so the harness records
every descendant while the server runs and checks afterwards that none survived (killing and
reporting any that did).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_NOTEBOOK = HERE / "notebooks" / "hello.ipynb"
KG_VENV = HERE / ".venv-kg"
LOG_DIR = HERE / "results" / "logs"

DEFAULT_REFERENCE_CMD = (
    "{kg_venv}/bin/jupyter kernelgateway --KernelGatewayApp.api=kernel_gateway.notebook_http"
    " --KernelGatewayApp.seed_uri={notebook} --KernelGatewayApp.port={port}"
    " --KernelGatewayApp.ip=127.0.0.1 --KernelGatewayApp.prespawn_count={pool}"
)
DEFAULT_NB2SVC_ARGS = "serve {notebook} --host 127.0.0.1 --port {port} --pool-size {pool} --workers 1"


# --------------------------------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True)
class Scenario:
    """One request shape, how to recognise a correct answer, and the same check in Lua for wrk."""

    name: str
    method: str
    path: str
    body: str | bytes | None
    content_type: str | None
    check: Callable[[int, str], bool]
    lua_check: str  # Lua boolean expression over `status` and `body`

    def is_correct(self, status: int, body: str) -> bool:
        """Why a function and not a status check: a 200 with the wrong text is a failure."""
        return self.check(status, body)


ECHO_PAYLOAD = {"msg": "ping-4242", "n": 42, "items": [1, 2, 3]}

SCENARIOS: dict[str, Scenario] = {
    "hello": Scenario(
        name="hello",
        method="GET",
        path="/hello/world",
        body=None,
        content_type=None,
        check=lambda st, body: st == 200 and body.rstrip("\r\n") == "hello, world",
        lua_check='status == 200 and (body == "hello, world\\n" or body == "hello, world")',
    ),
    "echo": Scenario(
        name="echo",
        method="POST",
        path="/echo",
        body=json.dumps(ECHO_PAYLOAD),
        content_type="application/json",
        check=lambda st, body: st == 200 and _json_or_none(body) == ECHO_PAYLOAD,
        lua_check='status == 200 and string.find(body, "ping-4242", 1, true) ~= nil',
    ),
    # Same cell as echo plus a ResponseInfo cell: the reference runs it as a third execute.
    "created": Scenario(
        name="created",
        method="POST",
        path="/created",
        body=json.dumps(ECHO_PAYLOAD),
        content_type="application/json",
        check=lambda st, body: st == 201 and _json_or_none(body) == ECHO_PAYLOAD,
        lua_check='status == 201 and string.find(body, "ping-4242", 1, true) ~= nil',
    ),
}


def _padded_echo(size: int) -> str:
    """A JSON body of ``size`` bytes: a marker plus an ASCII pad (json.dumps of it is cheap,
    so the numbers show the server's per-byte cost, not the user's JSON work)."""
    head = {"msg": "ping-4242", "pad": ""}
    return json.dumps({**head, "pad": "x" * (size - len(json.dumps(head)))})


def _echo_scenario(name: str, size: int) -> Scenario:
    body = _padded_echo(size)
    return Scenario(
        name=name,
        method="POST",
        path="/echo",
        body=body,
        content_type="application/json",
        check=lambda st, text: st == 200 and text.rstrip("\n") == body,
        lua_check=f"status == 200 and #body >= {len(body)}"
        ' and string.find(body, "ping-4242", 1, true) ~= nil',
    )


#: 1 MiB of printable ASCII as application/octet-stream: Kernel Gateway decodes every body as
#: UTF-8 (random bytes would be its 500), nb2svc hands Python cells the bytes as REQUEST_BODY.
UPLOAD_BODY = bytes(33 + (i * 7919 + i // 251) % 94 for i in range(1 << 20))

for _name, _size in (("echo1k", 1 << 10), ("echo64k", 64 << 10), ("echo1m", 1 << 20), ("echo8m", 8 << 20)):
    SCENARIOS[_name] = _echo_scenario(_name, _size)
SCENARIOS["upload1m"] = Scenario(
    name="upload1m",
    method="POST",
    path="/upload",
    body=UPLOAD_BODY,
    content_type="application/octet-stream",
    check=lambda st, text: st == 200 and text.strip() == str(len(UPLOAD_BODY)),
    lua_check=f'status == 200 and body == "{len(UPLOAD_BODY)}\\n"',
)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# process bookkeeping (Linux /proc)


@dataclass(frozen=True)
class ProcInfo:
    """A process identity that survives pid reuse: (pid, starttime) plus its command line."""

    pid: int
    starttime: int
    cmdline: str
    #: A kernel: a spawned ipykernel, or one forked from nb2svc's template (it leads its own group).
    kernel: bool = False


def _read_stat(pid: int) -> tuple[int, int, int, int] | None:
    """Return (ppid, starttime, utime, stime) from /proc/<pid>/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    # fields after "comm": rest[0] is field 3 (state); field k is rest[k - 3]
    return int(rest[1]), int(rest[19]), int(rest[11]), int(rest[12])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _is_kernel(pid: int, command: str) -> bool:
    if "ipykernel" in command:
        return True
    try:
        return "kernel/template.py" in command and os.getpgid(pid) == pid  # a fork, not the template
    except OSError:
        return False


def descendants(root: int) -> list[ProcInfo]:
    """All live processes below ``root`` (root excluded), found by scanning /proc once."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(int(entry))
        if st is None:
            continue
        stats[int(entry)] = st
        children.setdefault(st[0], []).append(int(entry))
    out: list[ProcInfo] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        command = _cmdline(pid)
        out.append(ProcInfo(pid, stats[pid][1], command, _is_kernel(pid, command)))
        stack.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU of ``root`` and its live descendants: the server's cost, kernels included."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [root] + [p.pid for p in descendants(root)]:
        st = _read_stat(pid)
        if st is not None:
            total += st[2] + st[3]
    return total / tick


def alive(p: ProcInfo) -> bool:
    """True if the same process (pid and start time) still exists and is not a zombie."""
    st = _read_stat(p.pid)
    if st is None or st[1] != p.starttime:
        return False
    try:
        with open(f"/proc/{p.pid}/stat", "rb") as fh:
            state = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    """Ask the kernel for an unused loopback port (tiny race until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# servers


@dataclass
class ServerSpec:
    """How to launch one server kind."""

    name: str
    cmd_template: str
    env: dict[str, str]
    ready_path: str | None  # extra readiness endpoint to wait for after the first correct response


@dataclass
class RunningServer:
    """A launched server and what we learned while starting it."""

    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    launch_s: float = float("nan")
    ready_s: float | None = None
    seen: dict[tuple[int, int], ProcInfo] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[ProcInfo]:
        """Remember every descendant now; kernels live in their own sessions, so killpg misses them."""
        procs = descendants(self.proc.pid)
        for p in procs:
            self.seen[(p.pid, p.starttime)] = p
        return procs

    def kernels(self) -> list[ProcInfo]:
        return [p for p in self.snapshot() if p.kernel]


def start_server(spec: ServerSpec, notebook: Path, pool: int, timeout: float, tag: str) -> RunningServer:
    """Launch, then poll the hello endpoint until it returns the right body.

    Launch time is wall clock from just before Popen to the first correct 200: what a user waiting
    for a fresh deployment experiences (interpreter start, imports, kernel spawn, first execute).
    """
    port = free_port()
    cmd = shlex.split(
        spec.cmd_template.format(
            notebook=shlex.quote(str(notebook)),
            port=port,
            pool=pool,
            python=shlex.quote(sys.executable),
            kg_venv=shlex.quote(str(KG_VENV)),
        )
    )
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{spec.name}-{tag}.log"
    env = {**os.environ, **spec.env}
    with open(log_path, "wb") as log_fh:
        log_fh.write(("$ " + shlex.join(cmd) + "\n").encode())
        log_fh.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=str(REPO),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    srv = RunningServer(spec, proc, port, log_path)
    sc = SCENARIOS["hello"]
    deadline = t0 + timeout
    sess = requests.Session()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} exited with {proc.returncode} before answering; see {log_path}"
                    + _log_tail(log_path)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{spec.name} gave no correct response within {timeout:.0f}s; see {log_path}"
                    + _log_tail(log_path)
                )
            try:
                r = sess.get(srv.base + sc.path, timeout=5)
                if sc.is_correct(r.status_code, r.text):
                    srv.launch_s = time.monotonic() - t0
                    break
            except requests.RequestException:
                pass
            time.sleep(0.02)
        if spec.ready_path:
            while time.monotonic() < deadline:
                try:
                    r = sess.get(srv.base + spec.ready_path, timeout=5)
                    if r.status_code == 200:
                        srv.ready_s = time.monotonic() - t0
                        break
                    if r.status_code == 404:  # no readiness endpoint: first answer is all we know
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.02)
        srv.snapshot()
    except BaseException:
        stop_server(srv, 5.0)
        raise
    finally:
        sess.close()
    return srv


def _log_tail(path: Path, lines: int = 6) -> str:
    """Last lines of a server log, so a failed start explains itself in the report."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join("\n    | " + line for line in tail)


def stop_server(srv: RunningServer, timeout: float) -> dict[str, Any]:
    """SIGTERM the process group, SIGKILL after ``timeout``, then hunt down any surviving descendant.

    Returns how long the stop took, whether SIGKILL was needed, which kernels were still running
    when the server itself had exited (orphaned) and which descendants (if any) were still alive 3 s
    later and had to be killed by us (leaked): both are bugs in the server under test, so they are
    reported, not silently tolerated.
    """
    srv.snapshot()
    t0 = time.monotonic()
    pgid = srv.proc.pid
    forced = False
    _killpg(pgid, signal.SIGTERM)
    try:
        srv.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        forced = True
        _killpg(pgid, signal.SIGKILL)
        srv.proc.wait(timeout=10)
    stop_s = time.monotonic() - t0
    _killpg(pgid, signal.SIGKILL)  # stragglers still in the server's own group (e.g. gunicorn workers)
    # Kernels are in their own sessions. Give them a moment to exit on their own (ipykernel polls its
    # parent about once a second), then kill and report what is left.
    grace_end = time.monotonic() + 3.0
    survivors = [p for p in srv.seen.values() if alive(p)]
    # Kernels still alive the moment the server is gone: the server did not shut them down itself
    # (they may still exit on their own once ipykernel notices its parent died).
    orphaned = [p.cmdline for p in survivors if p.kernel]
    while survivors and time.monotonic() < grace_end:
        time.sleep(0.1)
        survivors = [p for p in survivors if alive(p)]
    leaked = [p.cmdline for p in survivors]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in survivors:
            if alive(p):
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 2.0
        while any(alive(p) for p in survivors) and time.monotonic() < end:
            time.sleep(0.05)
    still = [p.cmdline for p in survivors if alive(p)]
    if still:
        print(f"WARNING: could not kill {still}", file=sys.stderr)
    return {
        "stop_s": stop_s,
        "forced_kill": forced,
        "orphaned": orphaned,
        "leaked": leaked,
        "unkillable": still,
    }


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------------
# load generation

LUA_TEMPLATE = """
wrk.method = "{method}"
{body_lines}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) good = 0; bad = 0 end
function response(status, headers, body)
  if {check} then good = good + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, t in ipairs(threads) do g = g + t:get("good"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f,' ..
    '"good":%d,"bad":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    g, b, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_script(sc: Scenario, body_file: str | None = None) -> str:
    """Per-scenario Lua: request shape plus a body check counted per response.

    Large or binary bodies are read from ``body_file`` instead of a Lua literal.
    """
    body_lines = ""
    if body_file is not None:
        body_lines += f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    elif sc.body is not None:
        body_lines += f"wrk.body = {json.dumps(sc.body)}\n"
    if sc.content_type:
        body_lines += f'wrk.headers["Content-Type"] = "{sc.content_type}"\n'
    return LUA_TEMPLATE.format(method=sc.method, body_lines=body_lines, check=sc.lua_check)


@dataclass
class LoadResult:
    """One load run. ``errors`` = socket errors + responses that were not a correct 200."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int
    socket_errors: int
    wrong: int
    cpu_ms_per_req: float = float("nan")
    tool: str = "wrk"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _parse_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk_text(out: str) -> LoadResult:
    """Fallback parser for wrk's human output (used if the Lua summary line is missing)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _parse_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _parse_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx_m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    non2xx = int(non2xx_m.group(1)) if non2xx_m else 0
    sock = 0
    sm = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sm:
        sock = sum(int(x) for x in sm.groups())
    return LoadResult(reqs, rps, p50, p99, non2xx + sock, non2xx, sock, non2xx)


def run_wrk(base: str, sc: Scenario, conns: int, duration: float, timeout_s: float) -> LoadResult:
    """Drive the server with wrk (-t1: one load thread leaves the other core to the server)."""
    body_file = None
    if isinstance(sc.body, bytes) or (sc.body is not None and len(sc.body) > 4096):
        with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as fh:
            fh.write(sc.body if isinstance(sc.body, bytes) else sc.body.encode())
            body_file = fh.name
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua_script(sc, body_file))
        script = fh.name
    try:
        cmd = [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={timeout_s:g}s",
            "--latency",
            "-s",
            script,
            base + sc.path,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    finally:
        os.unlink(script)
        if body_file:
            os.unlink(body_file)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    m = re.search(r"^BENCHJSON (\{.*\})$", proc.stdout, re.M)
    if not m:
        return parse_wrk_text(proc.stdout)
    d = json.loads(m.group(1))
    sock = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return LoadResult(
        requests=d["requests"],
        rps=d["requests"] / (d["duration_us"] / 1e6),
        p50_ms=d["p50_us"] / 1000.0,
        p99_ms=d["p99_us"] / 1000.0,
        errors=sock + d["bad"],
        non2xx=d["status"],
        socket_errors=sock,
        wrong=d["bad"],
    )


def run_pyload(base: str, sc: Scenario, conns: int, duration: float, timeout_s: float) -> LoadResult:
    """Fallback generator: one thread per keep-alive http.client connection.

    It shares the GIL and the 2 cores with the server, so its numbers are lower and noisier than
    wrk's; the table says which tool produced them.
    """
    host, port = base.removeprefix("http://").split(":")
    lat: list[list[float]] = [[] for _ in range(conns)]
    bad = [0] * conns
    sock_err = [0] * conns
    non2xx = [0] * conns
    headers = {"Content-Type": sc.content_type} if sc.content_type else {}
    body = sc.body.encode() if isinstance(sc.body, str) else sc.body
    start = threading.Barrier(conns + 1)
    end_at = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
        start.wait()
        while time.perf_counter() < end_at[0]:
            t0 = time.perf_counter()
            try:
                conn.request(sc.method, sc.path, body=body, headers=headers)
                resp = conn.getresponse()
                text = resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException):
                sock_err[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
                continue
            lat[i].append(time.perf_counter() - t0)
            if not 200 <= resp.status < 300:
                non2xx[i] += 1
            if not sc.is_correct(resp.status, text):
                bad[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    end_at[0] = t0 + duration
    start.wait()
    for t in threads:
        t.join(duration + timeout_s + 5)
    wall = time.perf_counter() - t0
    all_ms = sorted(x * 1000 for per in lat for x in per)
    from floor import percentile

    sock = sum(sock_err)
    return LoadResult(
        requests=len(all_ms),
        rps=len(all_ms) / wall,
        p50_ms=percentile(all_ms, 50),
        p99_ms=percentile(all_ms, 99),
        errors=sock + sum(bad),
        non2xx=sum(non2xx),
        socket_errors=sock,
        wrong=sum(bad),
        tool="python",
    )


# --------------------------------------------------------------------------------------------------
# orchestration


@dataclass
class Sample:
    """One (round, server, scenario, concurrency) measurement."""

    round: int
    server: str
    scenario: str
    concurrency: int
    result: LoadResult


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]  # drop NaN
    return statistics.median(xs) if xs else float("nan")


def bench_server(
    spec: ServerSpec,
    args: argparse.Namespace,
    rnd: int,
    load: Callable[..., LoadResult],
    say: Callable[[str], None],
) -> tuple[list[Sample], dict[str, Any]]:
    """Start one server, warm it, run every scenario x concurrency, stop it. Always stops it."""
    info: dict[str, Any] = {"round": rnd, "server": spec.name}
    say(f"round {rnd}: starting {spec.name}")
    srv = start_server(spec, args.notebook, args.pool_size, args.start_timeout, f"r{rnd}")
    samples: list[Sample] = []
    try:
        info["launch_s"] = srv.launch_s
        info["ready_s"] = srv.ready_s
        info["kernels"] = [k.cmdline for k in srv.kernels()]
        ready = f", ready {srv.ready_s:.2f}s" if srv.ready_s is not None else ""
        say(
            f"round {rnd}: {spec.name} first correct response after {srv.launch_s:.2f}s{ready}; "
            f"{len(info['kernels'])} kernels"
        )
        for sc_name in args.scenarios:
            sc = SCENARIOS[sc_name]
            if args.warmup > 0:
                w = load(srv.base, sc, min(8, max(args.concurrency)), args.warmup, args.timeout)
                if w.errors:
                    say(f"round {rnd}: {spec.name} {sc_name} warm-up had {w.errors} errors")
            for c in args.concurrency:
                cpu0 = tree_cpu_seconds(srv.proc.pid)
                res = load(srv.base, sc, c, args.duration, args.timeout)
                cpu1 = tree_cpu_seconds(srv.proc.pid)
                if res.requests:
                    res.cpu_ms_per_req = (cpu1 - cpu0) * 1000.0 / res.requests
                samples.append(Sample(rnd, spec.name, sc_name, c, res))
                say(
                    f"round {rnd}: {spec.name:<9} {sc_name:<8} c={c:<3} {res.rps:8.1f} req/s "
                    f"p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:7.2f} ms errors {res.errors}"
                )
        srv.kernels()
    finally:
        stop = stop_server(srv, args.stop_timeout)
        info.update(stop)
        info["log"] = str(srv.log_path)
        if stop["orphaned"]:
            say(
                f"round {rnd}: NOTE {spec.name} exited with {len(stop['orphaned'])} kernels still running "
                "(not shut down by the server)"
            )
        if stop["leaked"]:
            say(
                f"round {rnd}: WARNING {spec.name} left {len(stop['leaked'])} processes after stop "
                f"(killed by harness): {stop['leaked']}"
            )
        say(
            f"round {rnd}: {spec.name} stopped in {stop['stop_s']:.2f}s"
            f"{' (needed SIGKILL)' if stop['forced_kill'] else ''}"
        )
    return samples, info


def aggregate(samples: list[Sample]) -> list[dict[str, Any]]:
    """Median over rounds per (scenario, concurrency, server); errors summed over rounds."""
    keys: dict[tuple[str, int, str], list[LoadResult]] = {}
    for s in samples:
        keys.setdefault((s.scenario, s.concurrency, s.server), []).append(s.result)
    rows = []
    for (sc, c, server), rs in keys.items():
        rows.append(
            {
                "scenario": sc,
                "concurrency": c,
                "server": server,
                "rounds": len(rs),
                "rps": median([r.rps for r in rs]),
                "p50_ms": median([r.p50_ms for r in rs]),
                "p99_ms": median([r.p99_ms for r in rs]),
                "errors": sum(r.errors for r in rs),
                "cpu_ms_per_req": median([r.cpu_ms_per_req for r in rs]),
                "tool": rs[0].tool,
            }
        )
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def format_report(
    rows: list[dict[str, Any]],
    launches: list[dict[str, Any]],
    floor_rows: list[Any],
    args: argparse.Namespace,
) -> str:
    """The tables a person reads: floor, launch, load (with ratio rows), floor ratios."""
    out: list[str] = []
    if floor_rows:
        from floor import format_table

        out += ["", format_table(floor_rows)]

    servers = [
        s
        for s in ("nb2svc", "baseline", "reference")
        if any(r["server"] == s for r in rows) or any(i["server"] == s for i in launches)
    ]
    if launches:
        head = (
            f"{'server':<10} {'launch->first correct s (median [min-max])':<44} "
            f"{'ready s':>8} {'stop s':>7} {'SIGKILL':>7} {'orphans':>7} {'leaked':>6}"
        )
        out += ["", head, "-" * len(head)]
        for s in servers:
            ls = [i for i in launches if i["server"] == s and "launch_s" in i]
            if not ls:
                out.append(f"{s:<10} {'failed to start':<44}")
                continue
            lv = [i["launch_s"] for i in ls]
            rv = [i["ready_s"] for i in ls if i.get("ready_s") is not None]
            sv = [i["stop_s"] for i in ls if "stop_s" in i]
            span = f"{median(lv):.2f} [{min(lv):.2f}-{max(lv):.2f}]"
            ready = f"{median(rv):.2f}" if rv else "-"
            leaked = sum(len(i.get("leaked", [])) for i in ls)
            orphans = sum(len(i.get("orphaned", [])) for i in ls)
            killed = sum(1 for i in ls if i.get("forced_kill"))
            out.append(
                f"{s:<10} {span:<44} {ready:>8} {median(sv):>7.2f} {killed:>7} {orphans:>7} {leaked:>6}"
            )
        kern = {i["server"]: i.get("kernels", []) for i in launches if i.get("kernels")}
        for s, ks in kern.items():
            exe = sorted({k.split()[0] for k in ks})
            out.append(f"  {s} kernel interpreter: {', '.join(exe)}")

    tool = rows[0]["tool"] if rows else "wrk"
    tool = "wrk -t1 --latency" if tool == "wrk" else "Python http.client threads (wrk absent or not chosen)"
    head = (
        f"{'scenario':<9} {'conc':>4} {'server':<16} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'errors':>7} {'cpu ms/req':>10}"
    )
    out += [
        "",
        f"# load: {tool}, {args.duration:g}s per run, median of {args.rounds} round(s), "
        f"pool size {args.pool_size}",
        head,
        "-" * len(head),
    ]
    idx = {(r["scenario"], r["concurrency"], r["server"]): r for r in rows}
    for sc in args.scenarios:
        for c in args.concurrency:
            for s in servers:
                r = idx.get((sc, c, s))
                if r:
                    out.append(
                        f"{sc:<9} {c:>4} {s:<16} {r['rps']:>9.1f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} "
                        f"{r['errors']:>7} {r['cpu_ms_per_req']:>10.2f}"
                    )
            for other in ("baseline", "reference"):
                a, b = idx.get((sc, c, "nb2svc")), idx.get((sc, c, other))
                if a and b:
                    label = f"nb2svc/{other}"
                    p50, p99 = _ratio(a["p50_ms"], b["p50_ms"]), _ratio(a["p99_ms"], b["p99_ms"])
                    out.append(
                        f"{sc:<9} {c:>4} {label:<16} {_ratio(a['rps'], b['rps']):>8.2f}x "
                        f"{p50:>8.2f}x {p99:>8.2f}x "
                        f"{'':>7} {_ratio(a['cpu_ms_per_req'], b['cpu_ms_per_req']):>9.2f}x"
                    )

    if floor_rows and rows:
        nan = float("nan")

        def pick(kernels_gt1: bool, hist: bool, attr: str) -> float:
            for f in floor_rows:
                if (f.kernels > 1) == kernels_gt1 and f.store_history == hist:
                    return getattr(f, attr)
            return nan

        c1 = min(args.concurrency)
        head = (
            f"{'server':<10} {'p50@c=' + str(c1) + ' / floor p50':>20} {'(no hist)':>10} "
            f"{'best req/s / floor 2-kernel exec/s':>36} {'(no hist)':>10}"
        )
        out += [
            "",
            "# vs jupyter_client floor, scenario hello (floor rows: store_history=True, then False)",
            head,
            "-" * len(head),
        ]
        for s in servers:
            r = idx.get(("hello", c1, s))
            if not r:
                continue
            best = max((x["rps"] for x in rows if x["server"] == s and x["scenario"] == "hello"), default=nan)
            out.append(
                f"{s:<10} {_ratio(r['p50_ms'], pick(False, True, 'p50_ms')):>19.2f}x "
                f"{_ratio(r['p50_ms'], pick(False, False, 'p50_ms')):>9.2f}x "
                f"{_ratio(best, pick(True, True, 'executes_per_s')):>35.2f}x "
                f"{_ratio(best, pick(True, False, 'executes_per_s')):>9.2f}x"
            )
    return "\n".join(out)


def resolve_nb2svc_cmd(user: str | None) -> str:
    """Prefer an explicit command; else the installed console script; else run the working tree.

    The working tree is run as ``python -m nb2svc`` when it has ``__main__.py``, else through the
    console script's target ``nb2svc.cli:main``, so an uninstalled checkout can be benchmarked too.
    """
    if user:
        return user
    if shutil.which("nb2svc"):
        return "nb2svc " + DEFAULT_NB2SVC_ARGS
    if (REPO / "nb2svc" / "__main__.py").exists():
        return "{python} -m nb2svc " + DEFAULT_NB2SVC_ARGS
    return "{python} -c 'import sys; from nb2svc.cli import main; sys.exit(main())' " + DEFAULT_NB2SVC_ARGS


def machine_info() -> dict[str, Any]:
    """Context that makes numbers comparable later (this machine is shared and noisy)."""
    wrk = shutil.which("wrk")
    wrk_ver = ""
    if wrk:
        p = subprocess.run([wrk, "-v"], capture_output=True, text=True)
        first = (p.stdout or p.stderr).splitlines()
        wrk_ver = first[0].split(" Copyright")[0].strip() if first else ""
    kg_ver = ""
    kg_py = KG_VENV / "bin" / "python"
    if kg_py.exists():
        p = subprocess.run(
            [
                str(kg_py),
                "-c",
                "import kernel_gateway, ipykernel; print(kernel_gateway.__version__, ipykernel.__version__)",
            ],
            capture_output=True,
            text=True,
        )
        kg_ver = p.stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_ver,
        "kernel_gateway+ipykernel (venv)": kg_ver,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark nb2svc against Jupyter Kernel Gateway 3 (notebook-http) with wrk; "
        "prints floor, launch and load tables. Setup: bash bench/setup_reference.sh",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--only", choices=["reference", "nb2svc"], help="benchmark a single server (and --baseline-cmd's)"
    )
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated wrk connection counts")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; server order alternates per round")
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds per scenario per start (0: none)"
    )
    ap.add_argument("--scenarios", default="hello", help=f"comma-separated, from {','.join(SCENARIOS)}")
    ap.add_argument("--pool-size", type=int, default=2, help="kernels per server")
    ap.add_argument("--notebook", type=Path, default=DEFAULT_NOTEBOOK)
    ap.add_argument(
        "--nb2svc-cmd",
        default=None,
        help="nb2svc command template; placeholders {notebook} {port} {pool} {python} "
        f"(default: 'nb2svc {DEFAULT_NB2SVC_ARGS}' or '{{python}} -m nb2svc ...')",
    )
    ap.add_argument(
        "--baseline-cmd",
        default=None,
        help="A/B of two nb2svc trees in one run: a 'baseline' nb2svc command template (e.g. another "
        "tree's venv: '/path/.venv/bin/nb2svc serve ...'), run beside nb2svc with its own environment; "
        "placeholders {notebook} {port} {pool} {python}",
    )
    ap.add_argument(
        "--reference-cmd",
        default=DEFAULT_REFERENCE_CMD,
        help="reference command template; placeholders {notebook} {port} {pool} {kg_venv}",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the jupyter_client floor")
    ap.add_argument("--floor-n", type=int, default=1000, help="timed executes per floor variant")
    ap.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto = wrk if installed, else the Python generator",
    )
    ap.add_argument(
        "--timeout", type=float, default=10.0, help="per-request timeout (s) in the load generator"
    )
    ap.add_argument(
        "--start-timeout", type=float, default=90.0, help="seconds to wait for a correct response"
    )
    ap.add_argument("--stop-timeout", type=float, default=10.0, help="seconds after SIGTERM before SIGKILL")
    ap.add_argument("--json", metavar="PATH", help="save raw samples, medians and machine info")
    args = ap.parse_args(argv)
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    args.scenarios = [x.strip() for x in str(args.scenarios).split(",") if x.strip()]
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    args.notebook = args.notebook.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    """Run floor, then alternating rounds; print tables; always leave no process behind."""
    args = parse_args(argv)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # SIGTERM/SIGHUP to the harness must still run the finally blocks that stop servers.
    def _raise(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)

    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        print("wrk not found; run bash bench/setup_reference.sh", file=sys.stderr)
        return 2
    load = run_wrk if use_wrk else run_pyload
    if not use_wrk:
        why = "requested" if args.loadgen == "python" else "wrk not found"
        say(
            f"NOTE: {why}: using the Python http.client load generator "
            "(slower, shares the CPUs with the server)"
        )

    specs: list[ServerSpec] = []
    if args.only in (None, "nb2svc"):
        nb_env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
        specs.append(ServerSpec("nb2svc", resolve_nb2svc_cmd(args.nb2svc_cmd), nb_env, "/_api/health/ready"))
        if args.baseline_cmd:  # its own tree: nothing of this repository on its path
            base_env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
            specs.append(ServerSpec("baseline", args.baseline_cmd, base_env, "/_api/health/ready"))
    if args.only in (None, "reference"):
        if not (KG_VENV / "bin" / "jupyter").exists() and args.reference_cmd == DEFAULT_REFERENCE_CMD:
            print("reference venv missing; run: bash bench/setup_reference.sh", file=sys.stderr)
            return 2
        # Drop the caller's virtualenv/JUPYTER_PATH hints so kernelspec python3 resolves to the KG venv.
        ref_env = {
            "JUPYTER_PATH": "",
            "VIRTUAL_ENV": str(KG_VENV),
            "PATH": f"{KG_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        specs.append(ServerSpec("reference", args.reference_cmd, ref_env, None))

    info = machine_info()
    say(
        f"machine: {info['cpus']} cpus, loadavg {info['loadavg'][0]:.2f}; wrk: {info['wrk'] or 'absent'}; "
        f"KG venv: {info['kernel_gateway+ipykernel (venv)'] or 'absent'}"
    )
    if info["loadavg"][0] > 1.0:
        say("NOTE: load average > 1 before starting: other work is running, expect noisy numbers")

    floor_rows: list[Any] = []
    if not args.no_floor:
        import floor

        floor_rows = floor.run_floor(n=args.floor_n, warmup=200, concurrent_kernels=args.pool_size, log=say)

    samples: list[Sample] = []
    launches: list[dict[str, Any]] = []
    failed: set[str] = set()
    try:
        for rnd in range(1, args.rounds + 1):
            order = specs if rnd % 2 == 1 else list(reversed(specs))
            for spec in order:
                if spec.name in failed:
                    continue
                try:
                    got, linfo = bench_server(spec, args, rnd, load, say)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - a broken server must not stop the other's run
                    say(f"round {rnd}: {spec.name} FAILED: {exc}")
                    failed.add(spec.name)
                    launches.append({"round": rnd, "server": spec.name, "error": str(exc)})
                    continue
                samples.extend(got)
                launches.append(linfo)
    except KeyboardInterrupt:
        say("interrupted; servers were stopped; printing what was measured")

    rows = aggregate(samples)
    print(
        f"# nb2svc api_bench  {info['time']}  cpus={info['cpus']}  loadavg(start)={info['loadavg'][0]:.2f}  "
        f"python={info['python']}  {info['wrk']}"
    )
    for spec in specs:
        print(f"# {spec.name}: {spec.cmd_template}")
    print(format_report(rows, launches, floor_rows, args))
    for name in sorted(failed):
        print(
            f"\n{name} FAILED: " + next(i["error"] for i in launches if i["server"] == name and "error" in i)
        )

    if args.json:
        payload = {
            "machine": info,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "commands": {s.name: s.cmd_template for s in specs},
            "floor": [asdict(f) for f in floor_rows],
            "launches": launches,
            "samples": [{**asdict(s), "result": asdict(s.result)} for s in samples],
            "medians": rows,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2, default=str)
        say(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
