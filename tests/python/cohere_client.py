"""Calls a running bulkhead server's /v1/rerank with the official `cohere` Python client, unchanged (only
`base_url` points at the server), and checks the ranking against the CrossEncoder reference of a fixture.

usage: cohere_client.py BASE_URL API_KEY MODEL REFERENCE_JSON
Exits 0 when every check passes; prints what it got.
"""

import json
import pathlib
import sys

import cohere

base_url, api_key, model, reference = sys.argv[1:5]
ref = json.loads(pathlib.Path(reference).read_text())
query, documents = ref["query"], ref["documents"]
scores = [s[0] for s in ref["scores"]]
best = sorted(range(len(scores)), key=lambda i: -scores[i])

co = cohere.Client(api_key=api_key, base_url=base_url)
resp = co.rerank(model=model, query=query, documents=documents, top_n=3, return_documents=True)
got = [r.index for r in resp.results]
print("cohere.Client.rerank:", [(r.index, round(r.relevance_score, 6)) for r in resp.results])
assert got == best[:3], (got, best[:3])
for r in resp.results:
    assert abs(r.relevance_score - scores[r.index]) <= 1e-4, (r.index, r.relevance_score, scores[r.index])
    assert r.document.text == documents[r.index], r.document
assert resp.meta.billed_units.search_units == 1, resp.meta

# top_n above the number of documents is clamped, as Cohere does, and said in meta.warnings.
resp = co.rerank(model=model, query=query, documents=documents[:2], top_n=10)
assert len(resp.results) == 2 and resp.meta.warnings, resp
print("clamped top_n:", resp.meta.warnings)

# A wrong key is refused with the client's own error.
try:
    cohere.Client(api_key="wrong", base_url=base_url).rerank(model=model, query=query, documents=documents)
    raise SystemExit("a wrong API key was accepted")
except cohere.core.api_error.ApiError as e:
    assert e.status_code == 401, e
print("ok")
