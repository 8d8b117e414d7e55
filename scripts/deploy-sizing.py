"""Sizing numbers for a deployment (docs/deploy.md): memory of the server and of its worker per model, throughput,
latency and queue depth (the HPA's metric) per number of client connections, and how long SIGTERM takes to drain
a loaded server. Standard library only; prints Markdown tables.

usage: python3 scripts/deploy-sizing.py [--binary PATH] [--model [NAME=]PATH]... [--connections 1,8,32,64]
                                        [--seconds 10] [--max-batch-tokens N]
Default: target/release/bulkhead serving the default model (all-MiniLM-L6-v2). The load generator runs on the
same machine (a Python thread per connection, one ~15-token sentence per request, keep-alive), so throughput is
the server's under that extra load; run it under `flock /tmp/bulkhead-bench.lock` on a shared machine.
"""

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank today."


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def get(addr: str, path: str) -> tuple:
    c = http.client.HTTPConnection(*addr.split(":"), timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def worker_pids(addr: str) -> dict:
    _, body = get(addr, "/units")
    pids = {}
    for name, m in json.loads(body)["models"].items():
        for u in m["units"]:
            if u.get("pid") and u["state"] == "serving":
                pids[name] = (u["unit"], u["pid"])
    return pids


def queue_depth(addr: str) -> int:
    _, body = get(addr, "/metrics")
    return sum(int(float(v)) for v in re.findall(r"^bulkhead_queue_depth\{[^}]*\} (\S+)$", body, re.M))


# The longest batch the default settings form: 64 rows (--max-batch-size) of 256 tokens (all-MiniLM-L6-v2's
# max_seq_length), 16,384 padded tokens (--max-batch-tokens): ONNX Runtime's activations peak here.
LONG_TEXT = " ".join(["bulkhead keeps every worker of a model in its own supervised process"] * 40)
LONG_BATCH = 64


class Load:
    """`n` keep-alive connections sending one sentence per request (or `LONG_BATCH` long texts) until stopped."""

    def __init__(self, addr: str, model: str, n: int, long: bool = False):
        self.addr, self.model, self.long, self.stop = addr, model, long, threading.Event()
        self.latencies, self.statuses, self.errors = [], {}, 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(n)]

    def client(self):
        host, port = self.addr.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        if self.long:
            # TEI's route (truncation); the first model of the server.
            path, body = "/embed", json.dumps({"inputs": [LONG_TEXT] * LONG_BATCH, "truncate": True})
        else:
            path, body = "/v1/embeddings", json.dumps({"input": SENTENCE, "model": self.model})
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                conn.request("POST", path, body, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                with self.lock:
                    self.latencies.append(time.perf_counter() - t)
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                conn.close()
                if self.stop.wait(0.05):
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=70)


def start_server(binary: str, models: list, state: str, max_batch_tokens: int) -> tuple:
    args = [binary, "serve", "--port", "0"]
    if max_batch_tokens:
        args += ["--max-batch-tokens", str(max_batch_tokens)]
    for m in models:
        args += ["--model", m]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
    env["BULKHEAD_STATE_DIR"] = state
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    for line in proc.stdout:
        if line.startswith("listening on http://"):
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.strip().removeprefix("listening on http://")
    sys.exit(f"the server did not start (exit {proc.wait()})")


def main():
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=str(root / "target/release/bulkhead"))
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--connections", default="1,8,32,64")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--max-batch-tokens", type=int, default=0, help="passed to serve (default: serve's, 16384)")
    a = p.parse_args()
    levels = [int(c) for c in a.connections.split(",")]

    with tempfile.TemporaryDirectory() as state:
        proc, addr = start_server(a.binary, a.model, state, a.max_batch_tokens)
        try:
            report(proc, addr, levels, a.seconds)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def report(proc, addr: str, levels: list, seconds: float):
    pids = worker_pids(addr)
    model = next(iter(pids))
    print(f"bulkhead serve {' '.join(proc.args[2:])}, {len(pids)} model(s); {os.cpu_count()} CPUs; "
          f"load average before: {os.getloadavg()[0]:.2f}\n")
    print("| process | resident after start | peak resident (VmHWM) |")
    print("|---|---:|---:|")
    print(f"| server (HTTP, tokenizers, supervisor) | {mib(status_kib(proc.pid, 'VmRSS'))} | "
          f"{mib(status_kib(proc.pid, 'VmHWM'))} |")
    for name, (unit, pid) in pids.items():
        print(f"| worker of {name} on {unit} | {mib(status_kib(pid, 'VmRSS'))} | {mib(status_kib(pid, 'VmHWM'))} |")

    print("\n| connections | requests/s | p50 | p99 | queue depth mean / max | non-200 | worker resident "
          "after | worker peak |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in levels:
        load = Load(addr, model, n)
        depths, t0 = [], time.perf_counter()
        load.start()
        while time.perf_counter() - t0 < seconds:
            time.sleep(0.1)
            depths.append(queue_depth(addr))
        load.finish()
        elapsed = time.perf_counter() - t0
        lat = sorted(load.latencies)
        ok = load.statuses.get(200, 0)
        bad = sum(v for k, v in load.statuses.items() if k != 200) + load.errors
        _, wpid = pids[model]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
        print(f"| {n} | {ok / elapsed:.0f} | {statistics.median(lat) * 1e3:.1f} ms | {p99 * 1e3:.1f} ms | "
              f"{statistics.mean(depths):.1f} / {max(depths)} | {bad} | {mib(status_kib(wpid, 'VmRSS'))} | "
              f"{mib(status_kib(wpid, 'VmHWM'))} |")

    # The largest batches: long texts, two connections (so one batch waits while the other runs).
    load = Load(addr, model, 2, long=True)
    load.start()
    time.sleep(seconds)
    load.finish()
    _, wpid = pids[model]
    done = load.statuses.get(200, 0)
    if done == 0:
        sys.exit(f"no long request succeeded: {load.statuses}, {load.errors} connection errors")
    lat = statistics.median(load.latencies) * 1e3 if load.latencies else 0
    print(f"\nlongest batches ({LONG_BATCH} texts truncated to the model's 256 tokens per request, 2 connections, "
          f"{seconds:.0f} s): {done} requests, p50 {lat:.0f} ms; worker resident {mib(status_kib(wpid, 'VmRSS'))}, "
          f"peak {mib(status_kib(wpid, 'VmHWM'))}; server peak {mib(status_kib(proc.pid, 'VmHWM'))}")

    # Drain: SIGTERM under the heaviest load; every request the server accepted must still be answered.
    n = max(levels)
    load = Load(addr, model, n)
    load.start()
    time.sleep(2)
    before = len(load.latencies)
    t = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    drain = time.perf_counter() - t
    load.finish()
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items()))
    print(f"\nSIGTERM with {n} connections sending: exit {code} after {drain:.2f} s; "
          f"{len(load.latencies) - before} answers after the signal; statuses {statuses}; "
          f"{load.errors} connection errors (new requests after the listener closed)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
