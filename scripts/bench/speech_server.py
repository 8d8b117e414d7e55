"""Times speech to text through `bulkhead serve` (real worker processes) on a Whisper folder: per clip, the median
of N transcriptions' end-to-end latency and of each Server-Timing stage, and the real-time factor (worker time /
audio duration; below 1 is faster than real time). Prints a Markdown table.

usage: speech_server.py [--bulkhead PATH] [--model FOLDER] [--rounds N] [--isolation process|none] CLIP...
(defaults: target/debug/bulkhead, tests/fixtures/speech/whisper-tiny-random, 5 rounds, process, the fixture's
speech.wav, tone-440.wav and long-45s.mp3)
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import time
import urllib.request
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
CLIPS = REPO / "tests" / "fixtures" / "speech" / "clips"


def post(url, path, fields, file):
    boundary = uuid.uuid4().hex
    body = b""
    for k, v in fields.items():
        body += f'--{boundary}\r\ncontent-disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    body += (f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="{file.name}"\r\n'
             f"content-type: application/octet-stream\r\n\r\n").encode() + file.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + path, data=body, method="POST",
                                 headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        text = r.read()
        timing = r.headers.get("server-timing", "")
        unit = r.headers.get("x-bulkhead-unit", "")
    ms = (time.perf_counter() - t) * 1e3
    stages = {p.split(";")[0].strip(): float(p.split("dur=")[1]) for p in timing.split(",") if "dur=" in p}
    return ms, stages, unit, json.loads(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulkhead", default=str(REPO / "target" / "debug" / "bulkhead"))
    ap.add_argument("--model", default=str(REPO / "tests" / "fixtures" / "speech" / "whisper-tiny-random"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--isolation", default="process")
    ap.add_argument("clips", nargs="*")
    a = ap.parse_args()
    clips = [pathlib.Path(c) for c in a.clips] or [CLIPS / "speech.wav", CLIPS / "tone-440.wav",
                                                    CLIPS / "long-45s.mp3"]
    server = subprocess.Popen([a.bulkhead, "serve", "--port", "0", "--model", f"whisper={a.model}",
                               "--compute-units", "ort:cpu", "--isolation", a.isolation],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in server.stdout:
            if line.startswith("listening on "):
                url = line.split()[-1]
                break
        if url is None:
            raise SystemExit("the server did not start")
        print(f"model {pathlib.Path(a.model).name}, isolation {a.isolation}, {a.rounds} rounds, medians in ms\n")
        print("| clip | audio s | unit | end to end | decode | queue | infer | features | encode | generate | RTF |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for clip in clips:
            post(url, "/v1/audio/transcriptions", {"response_format": "verbose_json"}, clip)  # warm this shape
            runs = [post(url, "/v1/audio/transcriptions", {"response_format": "verbose_json"}, clip)
                    for _ in range(a.rounds)]
            duration = runs[0][3]["duration"]
            med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
            cols = [med(lambda r: r[0])] + [med(lambda r, s=s: r[1].get(s, 0.0)) for s in
                                            ["decode", "queue", "infer", "features", "encode", "generate"]]
            rtf = cols[3] / 1e3 / duration
            print(f"| {clip.name} | {duration:.2f} | {runs[0][2]} | " + " | ".join(f"{c:.1f}" for c in cols)
                  + f" | {rtf:.3f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
