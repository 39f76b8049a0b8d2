//! `apps::compose::Cli` against a real engine: a private dockerd per test (its own data
//! root, socket and containerd namespace, no bridge or iptables changes), an image loaded
//! from a docker-save tar built here (no registry), and a compose file that pins the image
//! by a digest no registry can resolve, as Foundries apps do.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use usb_update::apps::compose::{override_yaml, Cli, OVERRIDE_FILE};
use usb_update::gen::oci::deterministic_tar;
use usb_update::gen::LayerEntry;

const DOCKERD: &str = "/usr/sbin/dockerd";
const TAG: &str = "usb-update-test/app:loaded";
const PINNED: &str =
    "hub.foundries.io/f/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A private dockerd in a temporary directory; stopped, unmounted and removed on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    /// `None` (after saying so) where a private engine cannot run: not root, no dockerd.
    fn start() -> Option<Dockerd> {
        if !nix::unistd::Uid::effective().is_root() || !Path::new(DOCKERD).exists() {
            eprintln!("!!! SKIPPED: needs root and {DOCKERD}: compose CLI test not run");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("compose-cli-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("log")).unwrap();
        // Its own containerd namespace: where a system containerd runs (Debian's docker.io),
        // dockerd uses it, and must not share the system engine's "moby" namespace.
        let ns = format!("usb-update-test-{}", std::process::id());
        let child = Command::new(DOCKERD)
            .arg(format!("--data-root={}/data", d.display()))
            .arg(format!("--exec-root={}/exec", d.display()))
            .arg(format!("--pidfile={}/pid", d.display()))
            .arg(format!("--host=unix://{}/sock", d.display()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .arg(format!("--containerd-namespace={ns}"))
            .arg(format!("--containerd-plugins-namespace={ns}-plugins"))
            .arg("--shutdown-timeout=2")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut engine = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = engine.try_http("GET", "/_ping", b"") {
                return Some(engine);
            }
            if let Ok(Some(status)) = engine.child.try_wait() {
                panic!("dockerd exited ({status}): {}", engine.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not up in 60 s: {}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// One HTTP/1.0 request on the engine socket (the server closes after the response,
    /// which is therefore neither chunked nor kept alive): status and body.
    fn try_http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(self.sock())?;
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

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM (a clean shutdown that unmounts what it can); std only offers SIGKILL.
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { nix::libc::kill(self.child.id() as nix::libc::pid_t, nix::libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Whatever dockerd left mounted under the directory (overlay, shm, netns), deepest
        // first, so that the temporary directory can go.
        let root = self.dir.path().to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|m| m.replace("\\040", " "))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
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
    let Some(engine) = Dockerd::start() else {
        return;
    };
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
    let Some(engine) = Dockerd::start() else {
        return;
    };
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
