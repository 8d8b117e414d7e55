"""Checks the container file and the Kubernetes / KServe manifests of deploy/, as the tests (and so CI) do.

usage (with the tools' environment made by `scripts/setup.sh --test`):
  .venv-deploy/bin/python scripts/check-deploy.py [DEPLOY_DIR]          every check; exit 1 on any finding
  .venv-deploy/bin/python scripts/check-deploy.py --facts [DEPLOY_DIR]  the probes, drain and HPA metrics as JSON

The checks:
  1. every manifest of a Kubernetes kind passes kubernetes-validate --strict (unknown fields are errors) against the
     oldest and the newest Kubernetes versions in K8S_VERSIONS;
  2. every custom resource (ServiceMonitor, ClusterServingRuntime, InferenceService) passes its CRD's schema from
     deploy/schemas, just as strictly, and its metadata passes Kubernetes' ObjectMeta;
  3. kustomization.yaml lists files that exist, and every manifest is either listed or in NOT_KUSTOMIZED;
  4. the probes mean what they should (readiness GET /health, liveness GET /v2/health/live, a startup probe, on a
     declared port) and the drain fits: terminationGracePeriodSeconds > preStop sleep;
  5. checkov over deploy/ (the Containerfile checked as a Dockerfile, which checkov does not recognise by that
     name): no failed check, and every skipped check says why.
"""

import argparse
import copy
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes whose schema accepts every field used (PodDisruptionBudget.unhealthyPodEvictionPolicy is
# 1.27) and the newest kubernetes-validate ships.
K8S_VERSIONS = ["1.27", kubernetes_validate.utils.latest_version()]
CUSTOM = {
    ("monitoring.coreos.com", "ServiceMonitor"): "servicemonitor-monitoring-v1.json.gz",
    ("serving.kserve.io", "ClusterServingRuntime"): "clusterservingruntime-serving-v1alpha1.json.gz",
    ("serving.kserve.io", "InferenceService"): "inferenceservice-serving-v1beta1.json.gz",
}
# Applied where they belong, not with `kubectl apply -k` (each file says why).
NOT_KUSTOMIZED = {"prometheus-adapter.yaml"}
MANIFEST_DIRS = ["kubernetes", "kserve"]


def manifests(deploy: Path):
    """(path relative to deploy/, document) for every YAML document of the manifest folders."""
    for sub in MANIFEST_DIRS:
        for path in sorted((deploy / sub).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    yield path.relative_to(deploy), doc


def group_of(doc) -> str:
    api = doc.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def strict(schema):
    """A CRD schema where an object with declared properties rejects unknown ones (the API server would silently
    prune them: a misspelt field is lost, not an error), as kubectl's --validate=strict does."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def object_meta_validator():
    """A validator of ObjectMeta from kubernetes-validate's strict definitions."""
    version = kubernetes_validate.utils.latest_version()
    defs = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    meta = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "$defs": defs["$defs"]}
    return jsonschema.Draft202012Validator(meta)


def check_schemas(deploy: Path, schemas: Path) -> list:
    findings = []
    meta = object_meta_validator()
    for rel, doc in manifests(deploy):
        what = f"{rel}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (group_of(doc), doc.get("kind"))
        if key == ("kustomize.config.k8s.io", "Kustomization"):
            continue
        if key in CUSTOM:
            crd = json.loads(gzip.decompress((schemas / CUSTOM[key]).read_bytes()))
            if doc.get("apiVersion") != f"{crd['group']}/{crd['version']}":
                findings.append(f"{what}: apiVersion {doc.get('apiVersion')}, schema is {crd['group']}/{crd['version']}")
                continue
            errors = list(jsonschema.Draft7Validator(strict(crd["openAPIV3Schema"])).iter_errors(doc))
            errors += list(meta.iter_errors(doc.get("metadata", {})))
            for e in errors:
                findings.append(f"{what}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
            if not errors:
                print(f"ok    {what} (CRD schema, strict)")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                print(f"ok    {what} (kubernetes-validate --strict, {version})")
            except kubernetes_validate.utils.ValidationError as e:
                path = ".".join(map(str, e.path)) or "(top)"
                findings.append(f"{what}: Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.utils.SchemaNotFoundError as e:
                findings.append(f"{what}: {e.message} (add its CRD schema to deploy/schemas)")
    return findings


def check_kustomization(deploy: Path) -> list:
    findings = []
    folder = deploy / "kubernetes"
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = set(kust.get("resources", []))
    for r in sorted(listed):
        if not (folder / r).is_file():
            findings.append(f"kubernetes/kustomization.yaml: resource {r} does not exist")
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(present - listed - NOT_KUSTOMIZED):
        findings.append(f"kubernetes/{name}: not in kustomization.yaml resources (list it, or in NOT_KUSTOMIZED)")
    if not findings:
        print(f"ok    kubernetes/kustomization.yaml ({len(listed)} resources, all present)")
    return findings


def containers(deploy: Path):
    """(what, pod spec or None, container) for the Deployment's and the serving runtime's containers."""
    for rel, doc in manifests(deploy):
        if doc.get("kind") == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            for c in pod.get("containers", []):
                yield f"{rel}: {c['name']}", pod, c
        elif doc.get("kind") == "ClusterServingRuntime":
            for c in doc["spec"].get("containers", []):
                yield f"{rel}: {c['name']}", None, c


def facts(deploy: Path) -> dict:
    probes, drains, metrics, adapter = [], [], [], []
    for what, pod, c in containers(deploy):
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = (c.get(kind) or {}).get("httpGet")
            if get:
                probes.append({"where": what, "probe": kind, "path": get["path"], "port": get["port"]})
        pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
        sleep = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
        # Kubernetes' default grace period is 30 s; a serving runtime cannot set it.
        grace = (pod or {}).get("terminationGracePeriodSeconds", 30)
        drains.append({"where": what, "pre_stop_sleep_s": sleep, "termination_grace_period_s": grace})
    for rel, doc in manifests(deploy):
        if doc.get("kind") == "HorizontalPodAutoscaler":
            for m in doc["spec"].get("metrics", []):
                if m["type"] == "Pods":
                    metrics.append(m["pods"]["metric"]["name"])
        if doc.get("kind") == "ConfigMap" and "config.yaml" in doc.get("data", {}):
            for rule in yaml.safe_load(doc["data"]["config.yaml"]).get("rules", []):
                adapter.append({"series": rule["seriesQuery"].split("{")[0], "as": rule["name"]["as"]})
    return {"probes": probes, "drains": drains, "hpa_pod_metrics": metrics, "adapter_rules": adapter}


def check_semantics(deploy: Path) -> list:
    findings = []
    want = {"readinessProbe": "/health", "livenessProbe": "/v2/health/live", "startupProbe": "/v2/health/live"}
    for what, _, c in containers(deploy):
        ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
        for kind, path in want.items():
            get = (c.get(kind) or {}).get("httpGet")
            if not get:
                findings.append(f"{what}: no {kind} with httpGet (want GET {path})")
            elif get["path"] != path:
                findings.append(f"{what}: {kind} is GET {get['path']}, want GET {path}")
            elif get["port"] not in ports:
                findings.append(f"{what}: {kind} port {get['port']} is not a declared container port")
    f = facts(deploy)
    for d in f["drains"]:
        if d["pre_stop_sleep_s"] <= 0:
            findings.append(f"{d['where']}: no preStop sleep (the load balancers need time to stop sending)")
        if d["termination_grace_period_s"] <= d["pre_stop_sleep_s"]:
            findings.append(f"{d['where']}: terminationGracePeriodSeconds leaves no time to drain after preStop")
    served = {r["as"] for r in f["adapter_rules"]}
    for m in f["hpa_pod_metrics"]:
        if m not in served:
            findings.append(f"HPA metric {m} has no prometheus-adapter rule exposing it")
    if not findings:
        print(f"ok    probes, drain and HPA metric ({len(f['probes'])} probes, {len(f['drains'])} containers)")
    return findings


def check_checkov(deploy: Path) -> list:
    checkov = Path(sys.executable).parent / "checkov"
    if not checkov.exists():
        return [f"checkov not found beside {sys.executable}: run scripts/setup.sh --test"]
    findings = []
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(deploy / "Containerfile", Path(tmp) / "Dockerfile")
        runs = [
            ("deploy/", ["-d", str(deploy), "--framework", "kubernetes", "kustomize", "dockerfile"]),
            ("deploy/Containerfile", ["-f", str(Path(tmp) / "Dockerfile"), "--framework", "dockerfile"]),
        ]
        for label, args in runs:
            # --skip-download: no network (guidelines and severities come from a web service).
            cmd = [str(checkov), *args, "--skip-download", "--compact", "-o", "json"]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LOG_LEVEL": "ERROR"})
            try:
                reports = json.loads(out.stdout)
            except json.JSONDecodeError:
                findings.append(f"checkov {label}: no JSON report (exit {out.returncode}): {out.stderr.strip()[-500:]}")
                continue
            for report in reports if isinstance(reports, list) else [reports]:
                findings += checkov_findings(label, report)
    return findings


def checkov_findings(label: str, report: dict) -> list:
    findings = []
    kind = report.get("check_type", "?")
    results = report.get("results", {})
    failed, skipped = results.get("failed_checks", []), results.get("skipped_checks", [])
    passed = report.get("summary", {}).get("passed", 0)
    for c in failed:
        findings.append(f"checkov {kind}: {c['check_id']} {c['check_name']}: {c['file_path']} ({c['resource']})")
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment", "").strip(" :")
        if not reason or reason == "No comment provided":
            findings.append(f"checkov {kind}: {c['check_id']} skipped without a reason in {c['file_path']}")
    if not passed:
        findings.append(f"checkov {kind}: no check passed over {label}: nothing was scanned")
    skips = ", ".join(sorted({c["check_id"] for c in skipped})) or "none"
    mark = "ok   " if not findings else "--   "
    print(f"{mark} checkov {kind} over {label}: {passed} passed, {len(failed)} failed, skipped: {skips}")
    return findings


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("deploy", nargs="?", type=Path, default=root / "deploy")
    p.add_argument("--facts", action="store_true", help="print the probes, drain and HPA metrics as JSON")
    p.add_argument("--no-checkov", action="store_true", help="skip check 5 (the slowest, ~10 s)")
    a = p.parse_args()
    deploy = a.deploy.resolve()
    if a.facts:
        print(json.dumps(facts(deploy), indent=2))
        return 0
    findings = check_schemas(deploy, root / "deploy" / "schemas")
    findings += check_kustomization(deploy)
    findings += check_semantics(deploy)
    if not a.no_checkov:
        findings += check_checkov(deploy)
    for f in findings:
        print(f"FAIL  {f}")
    print(f"{len(findings)} findings" if findings else "deploy/: every check passed")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
