//! The deployment files of `deploy/` as a cluster would see them, and the server they describe:
//! `scripts/check-deploy.py` (kubernetes-validate --strict, the custom resources against their CRD schemas, the
//! probes and the drain, checkov) passes on the committed files and fails on broken copies of them, and every probe
//! path the manifests name answers 200 on a running server whose `/metrics` has the metric the HPA scales on.
//!
//! The tools live in `.venv-deploy` (`scripts/setup.sh --test`); without it these tests print `skipping:`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{need, repo, Server};

/// The Python of the deployment tools' environment.
fn deploy_python() -> Option<PathBuf> {
    let p = repo().join(".venv-deploy/bin/python");
    p.is_file().then_some(p)
}

fn check_deploy(python: &Path, args: &[&str]) -> Output {
    Command::new(python).arg(repo().join("scripts/check-deploy.py")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_deploy_files_pass_every_check() {
    let Some(python) = need(deploy_python(), ".venv-deploy (kubernetes-validate, checkov)") else { return };
    let out = check_deploy(&python, &[]);
    let report = text(&out);
    eprintln!("{report}");
    assert!(out.status.success(), "{report}");
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"] {
        assert!(
            report.contains(&format!(": {kind}/bulkhead (kubernetes-validate --strict, 1.27)")),
            "{kind}: {report}"
        );
    }
    for kind in ["ServiceMonitor/bulkhead", "ClusterServingRuntime/bulkhead", "InferenceService/minilm"] {
        assert!(report.contains(&format!("{kind} (CRD schema, strict)")), "{kind}: {report}");
    }
    for scan in ["checkov kubernetes over deploy/", "checkov dockerfile over deploy/Containerfile"] {
        assert!(report.contains(&format!("ok    {scan}")), "{scan}: {report}");
    }
}

/// Copies `deploy/` and applies `(file, from, to)` replacements, each of which must apply.
fn broken_copy(edits: &[(&str, &str, &str)]) -> tempfile::TempDir {
    // Not a hidden folder (tempfile's default `.tmp` prefix): checkov skips those.
    let dir = tempfile::Builder::new().prefix("bulkhead-deploy-").tempdir().unwrap();
    let src = repo().join("deploy");
    for sub in ["kubernetes", "kserve"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap().flatten() {
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(src.join("Containerfile"), dir.path().join("Containerfile")).unwrap();
    for (file, from, to) in edits {
        let path = dir.path().join(file);
        let before = std::fs::read_to_string(&path).unwrap();
        assert!(before.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, before.replacen(from, to, 1)).unwrap();
    }
    dir
}

#[test]
fn broken_deploy_files_fail_the_checks() {
    let Some(python) = need(deploy_python(), ".venv-deploy (kubernetes-validate, checkov)") else { return };
    let dir = broken_copy(&[
        // A misspelt field: the API server would drop it silently, and the container would run writable.
        ("kubernetes/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"),
        ("kserve/clusterservingruntime.yaml", "readinessProbe:", "readynessProbe:"),
        ("kubernetes/servicemonitor.yaml", "scrapeTimeout: 5s", "scrapeTimout: 5s"),
        ("kubernetes/hpa.yaml", "name: bulkhead_queue_depth", "name: bulkhead_queue_length"),
        ("kubernetes/kustomization.yaml", "  - pdb.yaml\n", ""),
        ("kubernetes/deployment.yaml", "path: /health", "path: /v1/models"),
        ("kubernetes/deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 5"),
    ]);
    let out = check_deploy(&python, &[dir.path().to_str().unwrap()]);
    let report = text(&out);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    for finding in [
        "Deployment/bulkhead: Kubernetes 1.27: spec.template.spec.containers.0.securityContext",
        "'readOnlyRootFileSystem' was unexpected",
        "ClusterServingRuntime/bulkhead: spec.containers.0: Additional properties are not allowed ('readynessProbe'",
        "kserve/clusterservingruntime.yaml: kserve-container: no readinessProbe",
        "ServiceMonitor/bulkhead: spec.endpoints.0: Additional properties are not allowed ('scrapeTimout'",
        "HPA metric bulkhead_queue_length has no prometheus-adapter rule",
        "kubernetes/pdb.yaml: not in kustomization.yaml resources",
        "readinessProbe is GET /v1/models, want GET /health",
        "terminationGracePeriodSeconds leaves no time to drain after preStop",
        "checkov kubernetes: CKV_K8S_22",
    ] {
        assert!(report.contains(finding), "missing `{finding}` in:\n{report}");
    }
}

#[test]
fn every_probe_path_answers_200_and_metrics_have_the_hpa_metric() {
    let Some(python) = need(deploy_python(), ".venv-deploy (kubernetes-validate, checkov)") else { return };
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let out = check_deploy(&python, &["--facts"]);
    assert!(out.status.success(), "{}", text(&out));
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probes = facts["probes"].as_array().unwrap();
    // Three probes on the Deployment and three on the serving runtime.
    assert_eq!(probes.len(), 6, "{facts}");

    let server = Server::start(&["--compute-units", "ort:cpu"], &[]);
    for p in probes {
        let path = p["path"].as_str().unwrap();
        let resp = server.request("GET", path, &[], None);
        assert_eq!(resp.status, 200, "{} {} -> {}: {}", p["where"], p["probe"], resp.status, resp.body);
    }
    let metrics = server.request("GET", "/metrics", &[], None);
    assert_eq!(metrics.status, 200);
    let hpa = facts["hpa_pod_metrics"].as_array().unwrap();
    assert!(!hpa.is_empty(), "{facts}");
    let series: Vec<&str> =
        facts["adapter_rules"].as_array().unwrap().iter().filter_map(|r| r["series"].as_str()).collect();
    for name in hpa.iter().filter_map(|m| m.as_str()).chain(series) {
        // The gauge of the default model, sampled at scrape time.
        let line = format!("{name}{{model=\"all-MiniLM-L6-v2\"}} 0");
        assert!(metrics.body.lines().any(|l| l == line), "no `{line}` in /metrics:\n{}", metrics.body);
    }
}
