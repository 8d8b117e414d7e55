//! The hub client against a local stand-in of the hub's HTTP API: what is downloaded, the cache layout, offline
//! mode, resumption after a dropped connection or a failed run, checksums, and every error the hub can answer.

use std::fs;
use std::path::{Path, PathBuf};

use bulkhead_hub::{ErrorKind, Formats, Hub, HubConfig, HubError, ModelRef, NoProgress, Snapshot, WeightsContext};
use bulkhead_hub_stand_in::{Access, Fault, Repo, StandIn};

const REPO: &str = "org/model";
const WEIGHTS: &str = "model.safetensors";
const MIB: u64 = 1 << 20;

/// Deterministic bytes that do not compress or repeat.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(dir: &Path, file: &str, bytes: &[u8]) {
    let p = dir.join(file);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// A sentence-transformers style repository with files a model does not need beside the ones it does.
fn repo_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(p, "config.json", br#"{"architectures": ["BertModel"], "model_type": "bert"}"#);
    write(p, "tokenizer.json", br#"{"version": "1.0", "model": {}}"#);
    write(p, "tokenizer_config.json", br#"{"do_lower_case": true}"#);
    write(p, "modules.json", br#"[{"path": ""}, {"path": "1_Pooling"}, {"path": "2_Normalize"}]"#);
    write(p, "1_Pooling/config.json", br#"{"pooling_mode_mean_tokens": true}"#);
    write(p, "sentence_bert_config.json", br#"{"max_seq_length": 256}"#);
    write(p, "README.md", b"# a model\n");
    write(p, WEIGHTS, &noise(3 * MIB as usize + 12_345, 1));
    write(p, "pytorch_model.bin", &noise(MIB as usize, 2));
    write(p, "onnx/model.onnx", &noise(MIB as usize, 3));
    write(p, "onnx/model_qint8_avx512.onnx", &noise(MIB as usize / 2, 4));
    d
}

struct Fixture {
    stand_in: StandIn,
    cache: tempfile::TempDir,
    _repo: tempfile::TempDir,
}

impl Fixture {
    fn new(access: Access) -> Fixture {
        let repo = repo_dir();
        let mut r = Repo::public(REPO, repo.path());
        r.access = access;
        r.revisions = vec!["v1".into()];
        let stand_in = StandIn::start(vec![r]).unwrap();
        Fixture { stand_in, cache: tempfile::tempdir().unwrap(), _repo: repo }
    }

    fn config(&self) -> HubConfig {
        HubConfig {
            cache_dir: self.cache.path().to_path_buf(),
            endpoint: self.stand_in.url().to_string(),
            token: None,
            offline: None,
        }
    }

    fn hub(&self) -> Hub {
        Hub::new(self.config())
    }

    fn root(&self) -> PathBuf {
        self.cache.path().join("models--org--model")
    }

    fn commit(&self) -> String {
        self.stand_in.commit(REPO).unwrap()
    }

    fn sha256(&self, file: &str) -> String {
        self.stand_in.files(REPO).into_iter().find(|f| f.path == file).unwrap().sha256
    }
}

fn safetensors(_: &WeightsContext<'_>) -> Formats {
    Formats { safetensors: true, onnx: false }
}

fn fetch(hub: &Hub, id: &str) -> Result<Snapshot, HubError> {
    hub.snapshot(&ModelRef::parse(id).unwrap(), &safetensors, &NoProgress)
}

fn blobs_named(root: &Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join("blobs")) else { return vec![] };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(suffix)).collect()
}

#[test]
fn downloads_only_what_the_model_needs_into_the_shared_layout() {
    let f = Fixture::new(Access::Public);
    let s = fetch(&f.hub(), REPO).unwrap();
    let commit = f.commit();
    assert_eq!(s.commit, commit);
    assert_eq!(s.dir, f.root().join("snapshots").join(&commit));
    let mut got = f.stand_in.downloaded_files();
    got.sort();
    let want = [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    assert_eq!(got, want, "downloaded files");
    let mut listed = s.files.clone();
    listed.sort();
    assert_eq!(listed, want);

    // huggingface_hub's layout: refs/main, relative links into blobs named by sha256 (LFS) or git sha1.
    assert_eq!(fs::read_to_string(f.root().join("refs/main")).unwrap(), commit);
    let link = fs::read_link(s.dir.join(WEIGHTS)).unwrap();
    assert_eq!(link, PathBuf::from("../../blobs").join(f.sha256(WEIGHTS)));
    let pooling = fs::read_link(s.dir.join("1_Pooling/config.json")).unwrap();
    assert!(pooling.starts_with("../../../blobs") && pooling.file_name().unwrap().len() == 40, "{pooling:?}");
    assert_eq!(fs::read(s.dir.join(WEIGHTS)).unwrap(), fs::read(f._repo.path().join(WEIGHTS)).unwrap());
    assert!(blobs_named(&f.root(), ".incomplete").is_empty());
    assert!(f.stand_in.requests().iter().all(|r| r.range.is_none()), "a fresh download asks no range");

    // Cached: one API call, nothing downloaded.
    f.stand_in.clear_log();
    let again = fetch(&f.hub(), REPO).unwrap();
    assert_eq!((again.downloaded, again.dir), (0, s.dir));
    let requests = f.stand_in.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].path.starts_with("/api/models/org/model/revision/main"));
}

#[test]
fn offline_reads_only_the_cache_and_names_what_to_do() {
    let f = Fixture::new(Access::Public);
    let offline = HubConfig { offline: Some("HF_HUB_OFFLINE"), ..f.config() };
    let e = fetch(&Hub::new(offline.clone()), REPO).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotCached { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("org/model: ") && msg.contains("bulkhead pull org/model") && msg.contains("HF_HUB_OFFLINE")
    );
    assert!(f.stand_in.requests().is_empty());

    let online = fetch(&f.hub(), REPO).unwrap();
    f.stand_in.clear_log();
    let s = fetch(&Hub::new(offline.clone()), REPO).unwrap();
    assert!(s.from_cache_only);
    assert_eq!(s.dir, online.dir);
    // A pinned commit that is cached needs no network either, even online.
    let pinned = fetch(&f.hub(), &format!("{REPO}@{}", f.commit())).unwrap();
    assert!(pinned.from_cache_only);
    assert!(f.stand_in.requests().is_empty(), "{:?}", f.stand_in.requests());

    let e = fetch(&Hub::new(offline), "org/model@v1").unwrap_err();
    assert!(e.to_string().contains("bulkhead pull org/model@v1"), "{e}");
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let f = Fixture::new(Access::Public);
    f.stand_in.set_fault(WEIGHTS, Some(Fault::DropAfter { bytes: MIB, times: 2 }));
    let s = fetch(&f.hub(), REPO).unwrap();
    let size = fs::metadata(s.dir.join(WEIGHTS)).unwrap().len();
    let ranges: Vec<String> = f.stand_in.requests().into_iter().filter_map(|r| r.range).collect();
    assert_eq!(ranges, [format!("bytes={MIB}-"), format!("bytes={}-", 2 * MIB)]);
    assert_eq!(f.stand_in.bytes_sent(WEIGHTS), size, "no byte is downloaded twice");
    assert!(s.downloaded > size && s.downloaded < size + 4096, "{}", s.downloaded);
}

#[test]
fn a_failed_run_leaves_a_partial_file_that_the_next_run_resumes() {
    let f = Fixture::new(Access::Public);
    f.stand_in.set_fault(WEIGHTS, Some(Fault::DropAfter { bytes: MIB, times: 1 }));
    let e = fetch(&f.hub().with_attempts(1), REPO).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("a partial download resumes"), "{e}");
    let sha = f.sha256(WEIGHTS);
    // Nothing partial under a final name: no blob, no link, no ref.
    assert!(!f.root().join("blobs").join(&sha).exists());
    assert!(!f.root().join("snapshots").join(f.commit()).join(WEIGHTS).exists());
    assert!(!f.root().join("refs/main").exists());
    assert_eq!(fs::metadata(f.root().join("blobs").join(format!("{sha}.incomplete"))).unwrap().len(), MIB);

    let s = fetch(&f.hub(), REPO).unwrap();
    let ranges: Vec<String> = f.stand_in.requests().into_iter().filter_map(|r| r.range).collect();
    assert_eq!(ranges, [format!("bytes={MIB}-")]);
    assert_eq!(f.stand_in.bytes_sent(WEIGHTS), fs::metadata(s.dir.join(WEIGHTS)).unwrap().len());
    assert!(blobs_named(&f.root(), ".incomplete").is_empty());
}

#[test]
fn corrupt_bytes_fail_the_checksum_and_are_deleted() {
    let f = Fixture::new(Access::Public);
    f.stand_in.set_fault(WEIGHTS, Some(Fault::FlipByte(777)));
    let e = fetch(&f.hub(), REPO).unwrap_err();
    let ErrorKind::Checksum { algorithm, expected, .. } = &e.kind else { panic!("{e}") };
    assert_eq!((*algorithm, expected.as_str()), ("sha256", f.sha256(WEIGHTS).as_str()));
    assert!(e.to_string().contains("run the command again"), "{e}");
    assert!(blobs_named(&f.root(), "").iter().all(|b| !b.starts_with(&f.sha256(WEIGHTS))), "nothing of it is kept");

    // A file stored in git is checked against its git blob id (the metadata of the first run was complete: start
    // from an empty cache).
    f.stand_in.set_fault(WEIGHTS, None);
    fs::remove_dir_all(f.root()).unwrap();
    f.stand_in.set_fault("modules.json", Some(Fault::FlipByte(3)));
    let e = fetch(&f.hub(), REPO).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Checksum { algorithm: "git-sha1", .. }), "{e}");

    // A partial file that is not a prefix of the blob is caught too, then the next run starts afresh.
    f.stand_in.set_fault("modules.json", None);
    let sha = f.sha256(WEIGHTS);
    write(&f.root().join("blobs"), &format!("{sha}.incomplete"), &noise(1000, 9));
    let e = fetch(&f.hub(), REPO).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Checksum { .. }), "{e}");
    fetch(&f.hub(), REPO).unwrap();
}

#[test]
fn a_server_that_ignores_ranges_gets_a_whole_new_download() {
    let f = Fixture::new(Access::Public);
    let sha = f.sha256(WEIGHTS);
    write(&f.root().join("blobs"), &format!("{sha}.incomplete"), &noise(1000, 9));
    f.stand_in.set_fault(WEIGHTS, Some(Fault::IgnoreRange));
    let s = fetch(&f.hub(), REPO).unwrap();
    assert_eq!(fs::read(s.dir.join(WEIGHTS)).unwrap(), fs::read(f._repo.path().join(WEIGHTS)).unwrap());
}

#[test]
fn hub_errors_name_the_repo_and_what_to_do() {
    let f = Fixture::new(Access::Public);
    let hub = f.hub();
    let e = fetch(&hub, "org/missing").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::RepoNotFound { status: 401, .. }), "{e}");
    assert!(e.to_string().starts_with("org/missing: repository not found") && e.to_string().contains("HF_TOKEN"));
    let e = fetch(&hub, "org/model@nope").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::RevisionNotFound { .. }) && e.to_string().contains("`nope`"), "{e}");
    f.stand_in.set_fault("tokenizer.json", Some(Fault::NotFound));
    let e = fetch(&hub, REPO).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::FileNotFound { .. }) && e.to_string().contains("tokenizer.json"), "{e}");
    f.stand_in.set_fault("tokenizer.json", None);
    f.stand_in.set_fault(WEIGHTS, Some(Fault::Status(503)));
    let e = fetch(&hub.clone().with_attempts(2), REPO).unwrap_err();
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    f.stand_in.set_fault(WEIGHTS, None);

    // A revision that exists is recorded under refs/ as huggingface_hub does.
    let s = fetch(&hub, "org/model@v1").unwrap();
    assert_eq!(fs::read_to_string(f.root().join("refs/v1")).unwrap(), s.commit);

    // Nothing listens: the network is "unreachable"; with a cached copy that copy serves.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = Hub::new(HubConfig { endpoint: url.clone(), ..f.config() });
    let e = fetch(&down, "org/other").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unreachable { .. }) && e.to_string().contains(&url), "{e}");
    assert!(fetch(&down, "org/model@v1").unwrap().from_cache_only);
}

#[test]
fn gated_and_private_repositories_need_the_right_token() {
    for access in [Access::Gated("hf_good".into()), Access::Private("hf_good".into())] {
        let f = Fixture::new(access.clone());
        let e = fetch(&f.hub(), REPO).unwrap_err();
        match access {
            Access::Gated(_) => {
                assert!(matches!(e.kind, ErrorKind::AccessDenied { status: 401, .. }), "{e}");
                assert!(e.to_string().contains("no token was sent") && e.to_string().contains("HF_TOKEN"), "{e}");
            }
            _ => assert!(matches!(e.kind, ErrorKind::RepoNotFound { status: 401, .. }), "{e}"),
        }
        let bad = Hub::new(HubConfig { token: Some("hf_bad".into()), ..f.config() });
        let e = fetch(&bad, REPO).unwrap_err();
        let status = if matches!(access, Access::Gated(_)) { 403 } else { 401 };
        assert!(matches!(e.kind, ErrorKind::AccessDenied { status: s, .. } if s == status), "{e}");
        assert!(e.to_string().contains("was refused"), "{e}");
        let good = Hub::new(HubConfig { token: Some("hf_good".into()), ..f.config() });
        f.stand_in.clear_log();
        fetch(&good, REPO).unwrap();
        // The token goes to the hub, never to the CDN that serves LFS files.
        let requests = f.stand_in.requests();
        assert!(requests.iter().any(|r| r.path.starts_with("/cdn/")));
        for r in &requests {
            assert_eq!(r.authorized, !r.path.starts_with("/cdn/"), "{r:?}");
        }
    }
}

#[test]
fn a_renamed_repository_is_followed() {
    let f = Fixture::new(Access::Public);
    f.stand_in.rename("org/old-name", REPO);
    let s = fetch(&f.hub(), "org/old-name").unwrap();
    assert!(s.dir.starts_with(f.cache.path().join("models--org--old-name")));
    assert!(s.dir.join(WEIGHTS).is_file());
}

#[test]
fn onnx_only_choice_takes_the_graph_not_its_variants() {
    let f = Fixture::new(Access::Public);
    let onnx = |_: &WeightsContext<'_>| Formats { safetensors: false, onnx: true };
    let s = f.hub().snapshot(&ModelRef::parse(REPO).unwrap(), &onnx, &NoProgress).unwrap();
    let got = f.stand_in.downloaded_files();
    assert!(got.contains(&"onnx/model.onnx".to_string()), "{got:?}");
    for never in [WEIGHTS, "pytorch_model.bin", "onnx/model_qint8_avx512.onnx", "README.md"] {
        assert!(!got.contains(&never.to_string()), "{never} was downloaded");
    }
    assert!(s.dir.join("onnx/model.onnx").is_file());
}

#[test]
fn sharded_weights_come_with_their_index_and_dense_modules() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(p, "config.json", br#"{"architectures": ["BertModel"]}"#);
    write(p, "tokenizer.json", b"{}");
    write(p, "modules.json", br#"[{"path": ""}, {"path": "1_Pooling"}, {"path": "2_Dense"}]"#);
    write(p, "1_Pooling/config.json", br#"{"pooling_mode_cls_token": true}"#);
    write(p, "2_Dense/config.json", br#"{"in_features": 4, "out_features": 2}"#);
    write(p, "2_Dense/model.safetensors", &noise(1000, 5));
    write(p, "2_Dense/pytorch_model.bin", &noise(1000, 6));
    let index = br#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    write(p, "model.safetensors.index.json", index);
    write(p, "model-00001-of-00002.safetensors", &noise(MIB as usize, 7));
    write(p, "model-00002-of-00002.safetensors", &noise(MIB as usize, 8));
    write(p, "pytorch_model-00001-of-00002.bin", &noise(1000, 9));
    let stand_in = StandIn::start(vec![Repo::public("org/sharded", p)]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        cache_dir: cache.path().to_path_buf(),
        endpoint: stand_in.url().into(),
        token: None,
        offline: None,
    });
    let s = fetch(&hub, "org/sharded").unwrap();
    let mut got = stand_in.downloaded_files();
    got.sort();
    assert_eq!(
        got,
        [
            "1_Pooling/config.json",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "modules.json",
            "tokenizer.json"
        ]
    );
    assert!(s.dir.join("model-00002-of-00002.safetensors").is_file());
}

#[test]
fn a_cached_snapshot_without_the_weights_asked_is_incomplete_offline() {
    let f = Fixture::new(Access::Public);
    fetch(&f.hub(), REPO).unwrap();
    let offline = Hub::new(HubConfig { offline: Some("BULKHEAD_OFFLINE"), ..f.config() });
    let onnx = |_: &WeightsContext<'_>| Formats { safetensors: false, onnx: true };
    let e = offline.snapshot(&ModelRef::parse(REPO).unwrap(), &onnx, &NoProgress).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Incomplete { .. }), "{e}");
    assert!(e.to_string().contains("bulkhead pull org/model") && e.to_string().contains("ONNX"), "{e}");
}
