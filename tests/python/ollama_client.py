"""Calls a running bulkhead server's Ollama routes with the official `ollama` Python client, unchanged (only `host`
points at the server), and prints what each call returned as one JSON object for the Rust test to check.

usage: ollama_client.py HOST MODEL < texts.json   (a JSON array of texts)
"""

import json
import sys

import ollama

host, model = sys.argv[1:3]
texts = json.load(sys.stdin)
client = ollama.Client(host=host)

embed = client.embed(model=f"{model}:latest", input=texts)
one = client.embed(model=model, input=texts[0], dimensions=8, truncate=True, keep_alive="5m")
legacy = client.embeddings(model=model, prompt=texts[0])
empty = client.embed(model=model, input=[])
tags = client.list()
show = client.show(model)
ps = client.ps()
try:
    client.embed(model="no-such-model", input="x")
    unknown = None
except ollama.ResponseError as e:
    unknown = {"status": e.status_code, "error": e.error}

out = {
    "embed": {
        "model": embed.model,
        "embeddings": [list(v) for v in embed.embeddings],
        "total_duration": embed.total_duration,
        "load_duration": embed.load_duration,
        "prompt_eval_count": embed.prompt_eval_count,
    },
    "one": [list(v) for v in one.embeddings],
    "legacy": list(legacy.embedding),
    "empty": [list(v) for v in empty.embeddings],
    "tags": [
        {
            "model": m.model,
            "size": int(m.size),
            "digest": m.digest,
            "modified_at": m.modified_at.isoformat(),
            "details": m.details.model_dump(),
        }
        for m in tags.models
    ],
    "show": {
        "capabilities": show.capabilities,
        "model_info": dict(show.modelinfo),
        "details": show.details.model_dump(),
    },
    "ps": [
        {
            "model": m.model,
            "size": int(m.size),
            "size_vram": int(m.size_vram),
            "context_length": m.context_length,
            "expires_at": m.expires_at.isoformat(),
        }
        for m in ps.models
    ],
    "unknown": unknown,
}
print(json.dumps(out))
