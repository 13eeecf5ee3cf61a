"""The search service under load: HTTP search next to in-process `streamvl.api.search`, same run.

On the clips table of bench/bench_queries.py (default 1M rows of 512-d embeddings, IVF_PQ
index, built or reused from its --cache), this starts `streamvl serve` in a child process and
measures, for the same query texts (each text through both paths in turn, alternating which first):
  in-process   streamvl.api.search(text, db, k=10) in this process (the baseline)
  HTTP         GET /api/v1/search?q=TEXT&k=10 over one keep-alive connection (the first page)
  concurrent   16 clients (threads, one connection each) sending a fixed number of queries:
               throughput and latency under load
and the server's memory (RSS now and peak) after the load. Each text is new to both processes in
the timed pass (text embedding included), then repeated (embedding cached). The goal the issue
sets: HTTP adds at most 20% to p50.

    python bench/bench_serve.py [--rows 1000000] [--queries 200] [--clients 16] [--cache DIR]

Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_queries as bq  # noqa: E402  (the table builder)

READY = re.compile(r"streamvl serving .* on http://([\d.]+):(\d+)")


def start_server(db: Path, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str, int]:
    argv = [sys.executable, "-c", "from streamvl.cli import main; main()", "serve", "--db", str(db), "--port", "0"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        found = READY.search(line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
            return proc, found.group(1), int(found.group(2))
    proc.kill()
    raise SystemExit("the server did not start")


RECONNECTS = [0]  # kept-alive connections the server had closed (uvicorn closes one idle for 5 s)


def get(conn: http.client.HTTPConnection, text: str, k: int) -> float:
    """One search over a kept-alive connection; milliseconds until the whole body is read. If the
    server closed the idle connection (an in-process query between two calls can outlast uvicorn's
    5 s keep-alive on a busy machine), the request is sent again on a new one and timed from there
    (connecting included); RECONNECTS counts them."""
    path = "/api/v1/search?" + urllib.parse.urlencode({"q": text, "k": k})
    t0 = time.perf_counter()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        RECONNECTS[0] += 1
        conn.close()
        t0 = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
    body = response.read()
    ms = (time.perf_counter() - t0) * 1000
    if response.status != 200:
        raise SystemExit(f"search failed: {response.status} {body[:200]!r}")
    json.loads(body)
    return ms


def in_process(db: Path, texts: list[str], k: int) -> list[float]:
    from streamvl import api

    out = []
    for text in texts:
        t0 = time.perf_counter()
        api.search(text, str(db), k=k, adapter=bq.ADAPTER)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def over_http(host: str, port: int, texts: list[str], k: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        return [get(conn, text, k) for text in texts]
    finally:
        conn.close()


def interleaved(db: Path, host: str, port: int, texts: list[str], k: int) -> tuple[list[float], list[float]]:
    """Each text through both paths, alternating which goes first: a busy machine slows both alike."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    local, remote = [], []
    try:
        for i, text in enumerate(texts):
            if i % 2:
                remote.append(get(conn, text, k))
                local += in_process(db, [text], k)
            else:
                local += in_process(db, [text], k)
                remote.append(get(conn, text, k))
    finally:
        conn.close()
    return local, remote


def concurrent(host: str, port: int, texts: list[str], k: int, clients: int, limit_s: float) -> dict:
    """clients threads share the texts (each sent once); bounded by count and by limit_s."""
    lock, queue, ms, errors = threading.Lock(), list(reversed(texts)), [], []
    deadline = time.monotonic() + limit_s

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if not queue:
                        return
                    text = queue.pop()
                try:
                    t = get(conn, text, k)
                except (OSError, http.client.HTTPException, SystemExit) as exc:
                    errors.append(str(exc))
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=120)
                    continue
                with lock:
                    ms.append(t)
        finally:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"ms": ms, "wall_s": wall, "qps": len(ms) / wall if wall else 0.0, "errors": errors}


def rss_mib(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def line(name: str, values: list[float], base: list[float] | None = None) -> str:
    text = f"  {name:28s} p50 {bq.pct(values, 50):7.1f} ms  p99 {bq.pct(values, 99):7.1f} ms  (n={len(values)})"
    if base:
        text += f"  x{bq.pct(values, 50) / bq.pct(base, 50):.2f} p50 of in-process"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default in (("--rows", int, 1_000_000), ("--streams", int, 2000), ("--dim", int, 512),
                                ("--clusters", int, 200), ("--stride", float, 4.0), ("--window", float, 8.0),
                                ("--seed", int, 0)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--cache", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "streamvl-bench-queries"))
    parser.add_argument("--reindex", action="store_true")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per path")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--load-queries", type=int, default=800, help="queries sent by the concurrent clients")
    parser.add_argument("--load-limit-s", type=float, default=300.0)
    parser.add_argument("--start-timeout-s", type=float, default=300.0, help="wait this long for the server (a loaded machine needs more)")
    args = parser.parse_args()

    db, info = bq.ensure_table(args)
    print(f"table: {info['params']['rows']} rows x {args.dim}-d in {info['params']['streams']} streams "
          f"({'cached' if info['cached'] else 'built'}), {info['bytes'] / 2**20:.0f} MiB on disk; model {bq.MODEL} (random weights)")
    texts = bq.texts(args.warmup + 2 * args.queries + args.load_queries, args.seed + 1)
    warm, timed = texts[:args.warmup], texts[args.warmup:args.warmup + args.queries]
    load = texts[args.warmup + 2 * args.queries:]

    proc, host, port = start_server(db, args.start_timeout_s)
    try:
        print(f"server pid {proc.pid} on {host}:{port}, RSS after start-up {rss_mib(proc.pid)['VmRSS']:.0f} MiB")
        in_process(db, warm, args.k)  # model load, caches
        over_http(host, port, warm, args.k)
        local, remote = interleaved(db, host, port, timed, args.k)
        local_again, remote_again = interleaved(db, host, port, timed, args.k)
        print(f"\nsequential, one client, k={args.k} (each text new to both processes, then the same texts again; "
              f"machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
        print(line("in-process api.search", local))
        print(line("HTTP GET /api/v1/search", remote, local))
        print(line("in-process, texts cached", local_again))
        print(line("HTTP, texts cached", remote_again, local_again))
        extra = bq.pct(remote, 50) / bq.pct(local, 50) - 1
        print(f"  HTTP adds {extra * 100:+.0f}% at p50 (goal: at most +20%), "
              f"{(bq.pct(remote_again, 50) / bq.pct(local_again, 50) - 1) * 100:+.0f}% with cached texts; "
              f"{RECONNECTS[0]} requests resent on a new connection (the server had closed the idle one)")
        loaded = concurrent(host, port, load, args.k, args.clients, args.load_limit_s)
        print(f"\n{args.clients} concurrent clients, {len(loaded['ms'])} queries in {loaded['wall_s']:.1f} s "
              f"({len(loaded['errors'])} errors): {loaded['qps']:.1f} queries/s")
        print(line("latency under load", loaded["ms"]))
        single_qps = 1000 / bq.pct(remote, 50)
        print(f"  throughput x{loaded['qps'] / single_qps:.2f} of one sequential client ({single_qps:.1f} queries/s)")
        mem = rss_mib(proc.pid)
        print(f"\nserver memory (load {os.getloadavg()[0]:.1f}): RSS {mem['VmRSS']:.0f} MiB now, peak {mem['VmHWM']:.0f} MiB; "
              f"this process (in-process path) peak {bq.peak_rss_mib():.0f} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        print(f"server stopped on SIGTERM: exit code {code}")


if __name__ == "__main__":
    main()
