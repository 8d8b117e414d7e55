"""Calls a running bulkhead server's speech routes with the official `openai` Python client (only `base_url`
changed) in every response format, and prints what it got as one JSON object for the Rust test to compare with
the in-process transcription.

usage: openai_audio.py BASE_URL MODEL AUDIO_FILE
"""

import json
import sys

from openai import OpenAI

base_url, model, path = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
out = {}


def create(**kwargs):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model=model, file=f, **kwargs)


out["json"] = create().text
for fmt in ["text", "srt", "vtt"]:
    out[fmt] = create(response_format=fmt)
verbose = create(response_format="verbose_json", timestamp_granularities=["segment"])
out["verbose_json"] = {
    "text": verbose.text,
    "language": verbose.language,
    "duration": verbose.duration,
    "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in verbose.segments],
}
with open(path, "rb") as f:
    out["translation"] = client.audio.translations.create(model=model, file=f).text
print(json.dumps(out))
