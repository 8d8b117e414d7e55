#!/usr/bin/env bash
# Long texts against short ones: `bulkhead serve` (all-MiniLM-L6-v2 on ort:cpu) answers a client sending short
# requests one after another, first alone ("quiet"), then while 4 other clients send 7 MB texts (`truncate: true`)
# in a loop ("loaded"). Each server configuration runs both, in one run: one worker; two workers with the short
# lane off (`--long-row-tokens off`: first come, first served); two workers with the short lane (the default).
# Prints the short requests' p50/p99 in both runs and their ratio, and the CPU time the server and its worker spend
# per 7 MB request (measured alone, from /proc). Python's standard library drives the HTTP; the 7 MB clients run in
# processes of their own, so that the short client's timings never wait for their interpreter.
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
export CPU_OUT="$(mktemp)"
state="$(mktemp -d)"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$log" "$state" "$CPU_OUT"' EXIT
echo "# long texts vs short ones, $(date -u +%FT%TZ), $profile build, $(nproc) cores," \
  "load average before $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| server | quiet p50 / p99 ms | loaded p50 / p99 ms | loaded p99 / quiet p99 | short requests quiet / loaded | 7 MB requests answered |"
echo "|---|---:|---:|---:|---:|---:|"
first=1
for config in "1 worker|--workers 1" "2 workers, short lane off|--workers 2 --long-row-tokens off" \
  "2 workers, short lane|--workers 2"; do
  label="${config%%|*}"
  read -r -a args <<<"${config#*|}"
  "$bin" serve --port 0 --compute-units ort:cpu --state-dir "$state" "${args[@]}" >"$log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do grep -q "listening on" "$log" && break; sleep 0.5; done
  addr="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|listening on http://||')"
  [ -n "$addr" ] || { cat "$log" >&2; exit 1; }
  flock /tmp/bulkhead-bench.lock python3 - "$addr" "$server" "$seconds" "$label" "$first" <<'PY'
import http.client, json, multiprocessing as mp, os, sys, threading, time

addr, server, seconds, label, first = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
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


def long_client(stop, count):
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    while not stop.is_set():
        post(conn, LONG)
        with count.get_lock():
            count.value += 1


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def run(long_clients):
    stop, count = mp.Event(), mp.Value("i", 0)
    procs = [mp.Process(target=long_client, args=(stop, count)) for _ in range(long_clients)]
    for p in procs:
        p.start()
    if procs:
        time.sleep(2)  # the long clients are sending
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    lat, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        post(conn, SHORT)
        lat.append((time.perf_counter() - t0) * 1e3)
    stop.set()
    for p in procs:
        p.join()
    return lat, count.value


conn = http.client.HTTPConnection(host, int(port), timeout=120)
for _ in range(20):
    post(conn, SHORT)
post(conn, LONG)
if first:
    # CPU per 7 MB request, alone (one worker).
    ws = workers()
    n = 10
    s0, w0, t0 = cpu_ms(server), sum(cpu_ms(w) for w in ws), time.perf_counter()
    for _ in range(n):
        post(conn, LONG)
    s1, w1, t1 = cpu_ms(server), sum(cpu_ms(w) for w in ws), time.perf_counter()
    with open(os.environ["CPU_OUT"], "w") as f:
        f.write(f"| per 7 MB request (alone, mean of {n}) | wall {(t1 - t0) * 1e3 / n:.1f} ms | server CPU (HTTP, JSON, "
                f"bounded tokenization) {(s1 - s0) / n:.1f} ms | worker CPU (256-token forward pass) "
                f"{(w1 - w0) / n:.1f} ms |\n")
quiet, _ = run(0)
loaded, longs = run(4)
qp, lp = pct(quiet, 0.99), pct(loaded, 0.99)
print(f"| {label} | {pct(quiet, 0.5):.1f} / {qp:.1f} | {pct(loaded, 0.5):.1f} / {lp:.1f} | {lp / qp:.2f}x "
      f"| {len(quiet)} / {len(loaded)} | {longs} |")
PY
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server="" first=0
done
echo
echo "text: 6.8 MB of prose (\`truncate: true\`); $seconds s per run; 7 MB clients start 2 s before the short one"
cat "$CPU_OUT" 2>/dev/null || true
echo "# load average after $(cut -d' ' -f1-3 /proc/loadavg)"
