#!/usr/bin/env bash
# Long texts against short ones: `bulkhead serve` (all-MiniLM-L6-v2 on ort:cpu) answers a client sending short
# requests one after another, first alone ("quiet"), then while 4 other clients send 7 MB texts (`truncate: true`)
# in a loop ("loaded"). Prints the short requests' p50/p99 latency in both runs, and the CPU time the server and its
# worker spend per 7 MB request (measured alone, from /proc). Python's standard library drives the HTTP.
#   scripts/bench_long_texts.sh                  # release build, 20 s per run
#   scripts/bench_long_texts.sh --seconds 10     # another length
#   scripts/bench_long_texts.sh --debug          # the dev build (dependencies optimised, workspace crates not)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds=20 profile=release build=(--release)
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug build=() ;;
    --seconds) seconds="$2"; shift ;;
    *) echo "usage: $0 [--debug] [--seconds N]" >&2; exit 2 ;;
  esac
  shift
done
cargo build "${build[@]}" -p bulkhead --bin bulkhead >&2
bin="target/$profile/bulkhead"
log="$(mktemp)"
state="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$log" "$state"' EXIT
"$bin" serve --port 0 --compute-units ort:cpu --state-dir "$state" >"$log" 2>&1 &
server=$!
for _ in $(seq 1 300); do grep -q "listening on" "$log" && break; sleep 0.5; done
addr="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|listening on http://||')"
[ -n "$addr" ] || { cat "$log" >&2; exit 1; }
echo "# long texts vs short ones, $(date -u +%FT%TZ), $profile build, $(nproc) cores," \
  "load average before $(cut -d' ' -f1-3 /proc/loadavg)"
flock /tmp/bulkhead-bench.lock python3 - "$addr" "$server" "$seconds" <<'EOF'
import http.client, json, os, sys, threading, time

addr, server, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
host, port = addr.rsplit(":", 1)
tick = os.sysconf("SC_CLK_TCK")
words = ["harbour", "lantern", "quietly", "seventeen", "orbit", "maple", "granite", "velvet"]
prose = " ".join(words[(i * 7 + i // 3) % len(words)] for i in range(900_000))
LONG = json.dumps({"inputs": prose, "truncate": True}).encode()
SHORT = json.dumps({"inputs": "a short query about the weather"}).encode()


def post(conn, body):
    conn.request("POST", "/embed", body, {"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise SystemExit(f"HTTP {r.status}")


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / tick


def workers():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == server:
                        out.append(int(p))
            except OSError:
                pass
    return out


def short_client(stop, lat):
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    while not stop.is_set():
        t0 = time.perf_counter()
        post(conn, SHORT)
        lat.append((time.perf_counter() - t0) * 1e3)


def long_client(stop, count):
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    while not stop.is_set():
        post(conn, LONG)
        count.append(1)


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def run(long_clients):
    stop, lat, count = threading.Event(), [], []
    threads = [threading.Thread(target=long_client, args=(stop, count)) for _ in range(long_clients)]
    threads.append(threading.Thread(target=short_client, args=(stop, lat)))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return lat, len(count)


conn = http.client.HTTPConnection(host, int(port), timeout=120)
for _ in range(20):
    post(conn, SHORT)
post(conn, LONG)
# CPU per 7 MB request, alone.
ws = workers()
n = 10
s0, w0, t0 = cpu_ms(server), sum(cpu_ms(w) for w in ws), time.perf_counter()
for _ in range(n):
    post(conn, LONG)
s1, w1, t1 = cpu_ms(server), sum(cpu_ms(w) for w in ws), time.perf_counter()
quiet, _ = run(0)
loaded, longs = run(4)
print(f"text: {len(prose) / 1e6:.1f} MB of prose, {len(LONG) / 1e6:.1f} MB request body; {seconds:.0f} s per run")
print()
print("| run | short requests | p50 ms | p99 ms | 7 MB requests answered |")
print("|---|---|---|---|---|")
print(f"| quiet (1 client, short texts) | {len(quiet)} | {pct(quiet, 0.5):.1f} | {pct(quiet, 0.99):.1f} | - |")
print(f"| loaded (+4 clients, 7 MB texts) | {len(loaded)} | {pct(loaded, 0.5):.1f} | {pct(loaded, 0.99):.1f} | {longs} |")
print()
print("| per 7 MB request (alone, mean of 10) | ms |")
print("|---|---|")
print(f"| wall time | {(t1 - t0) * 1e3 / n:.1f} |")
print(f"| server CPU (HTTP, JSON, bounded tokenization) | {(s1 - s0) / n:.1f} |")
print(f"| worker CPU (256-token forward pass) | {(w1 - w0) / n:.1f} |")
EOF
echo "# load average after $(cut -d' ' -f1-3 /proc/loadavg)"
