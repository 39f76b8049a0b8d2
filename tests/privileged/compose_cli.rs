//! `apps::compose::Cli` against a real engine: a private dockerd per test (its own data
//! root, socket and containerd namespace, no bridge or iptables changes), an image loaded
//! from a docker-save tar built here (no registry), and a compose file that pins the image
//! by a digest no registry can resolve, as Foundries apps do.

use crate::common::dockerd;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dockerd::Dockerd;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_kit::gen::oci::deterministic_tar;
use test_kit::gen::LayerEntry;
use usb_update::apps::compose::{override_yaml, Cli, OVERRIDE_FILE};

const TAG: &str = "usb-update-test/app:loaded";
const PINNED: &str =
    "hub.foundries.io/f/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The suite's private dockerd (tests/common/dockerd.rs: it fails, naming what is missing,
/// where none can start), with a plain HTTP client for what the test checks.
struct Engine(Dockerd);

impl Engine {
    fn start() -> Engine {
        Engine(Dockerd::start())
    }

    fn host(&self) -> String {
        self.0.host()
    }

    /// One HTTP/1.0 request on the engine socket (the server closes after the response,
    /// which is therefore neither chunked nor kept alive): status and body.
    fn try_http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(self.0.socket())?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n");
        let bad =
            || std::io::Error::other(format!("bad response {:?}", String::from_utf8_lossy(&resp)));
        let split = split.ok_or_else(bad)?;
        let status = std::str::from_utf8(&resp[..split])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(bad)?;
        Ok((status, resp[split + 4..].to_vec()))
    }

    fn http(&self, method: &str, path: &str, body: &[u8]) -> Value {
        let (status, body) = self.try_http(method, path, body).unwrap();
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_slice(&body).unwrap_or(Value::String(text.into_owned()))
    }

    /// The containers of compose project `project`: (state, image) of each.
    fn containers(&self, project: &str) -> Vec<(String, String)> {
        let all = self.http("GET", "/containers/json?all=1", b"");
        let label = |c: &Value| {
            c["Labels"]["com.docker.compose.project"]
                .as_str()
                .map(String::from)
        };
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        all.as_array()
            .unwrap()
            .iter()
            .filter(|c| label(c).as_deref() == Some(project))
            .map(|c| (str_of(&c["State"]), str_of(&c["Image"])))
            .collect()
    }
}

/// A `docker save` style tar: manifest.json, the config, one layer with a static busybox.
fn image_tar(tag: &str) -> Vec<u8> {
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let layer =
        deterministic_tar(&[LayerEntry::host("bin/busybox", "/bin/busybox", 0o755)]).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        // PID 1 ignores SIGTERM unless it traps it: without the trap every stop (down)
        // would wait out compose's 10 s timeout.
        "config": { "Cmd": ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; /bin/busybox sleep 1000 & wait"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!([{
        "Config": format!("{}.json", sha(&config)),
        "RepoTags": [tag],
        "Layers": [format!("{}/layer.tar", sha(&layer))],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let files = [
        ("manifest.json".to_string(), manifest),
        (format!("{}.json", sha(&config)), config),
        (format!("{}/layer.tar", sha(&layer)), layer),
    ];
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// An app's project directory as the agent lays it out: `<tmp>/app/docker-compose.yml`.
fn project(tmp: &Path) -> PathBuf {
    let dir = tmp.join("app");
    std::fs::create_dir(&dir).unwrap();
    let yaml = format!("version: '3.8'\nservices:\n  app:\n    image: {PINNED}\n");
    std::fs::write(dir.join("docker-compose.yml"), yaml).unwrap();
    dir
}

#[test]
fn up_runs_the_loaded_image_and_down_removes_it() {
    let engine = Engine::start();
    let loaded = engine.http("POST", "/images/load?quiet=1", &image_tar(TAG));
    assert!(loaded.to_string().contains(TAG), "{loaded}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let images = [("app".to_string(), TAG.to_string())].into();
    std::fs::write(dir.join(OVERRIDE_FILE), override_yaml(&images)).unwrap();

    let cli = Cli::find(None, &engine.host()).unwrap();
    eprintln!("compose: {}", cli.describe());
    cli.up(&dir, "app").unwrap();
    assert_eq!(
        engine.containers("app"),
        [("running".to_string(), TAG.to_string())]
    );
    // Up again with nothing changed is a no-op, not an error.
    cli.up(&dir, "app").unwrap();
    assert_eq!(engine.containers("app").len(), 1);

    cli.down(&dir, "app").unwrap();
    assert_eq!(engine.containers("app"), []);
    let images = engine.http("GET", "/images/json", b"");
    assert!(images.to_string().contains(TAG), "down keeps the image");
    // Nothing to stop for an app that is not there.
    cli.down(&tmp.path().join("gone"), "gone").unwrap();
}

#[test]
fn up_without_the_override_fails_with_composes_reason() {
    let engine = Engine::start();
    engine.http("POST", "/images/load?quiet=1", &image_tar(TAG));
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let cli = Cli::find(None, &engine.host()).unwrap();
    let started = Instant::now();
    let err = format!("{:#}", cli.up(&dir, "app").unwrap_err());
    eprintln!("up without override, {:?}: {err}", started.elapsed());
    assert!(
        err.starts_with(&format!("starting app app in {}: `", dir.display())),
        "{err}"
    );
    assert!(err.contains("up -d --remove-orphans --no-build"), "{err}");
    assert!(
        err.contains("hub.foundries.io"),
        "compose's reason names the image: {err}"
    );
    assert_eq!(engine.containers("app"), []);
    cli.down(&dir, "app").unwrap();
}
