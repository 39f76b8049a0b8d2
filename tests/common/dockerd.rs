//! A private dockerd per test, in a temporary directory: its own data root, exec root
//! (with its own containerd) and socket, no bridge and no iptables rules, so tests never
//! touch the machine's engine or network and can run in parallel.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Guards against a hang, generous for a loaded machine: nothing is measured against it.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

pub struct Dockerd {
    dir: Option<TempDir>,
    root: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Start a dockerd and wait until it answers `GET /_ping`.
    pub fn start() -> Dockerd {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "a private dockerd needs root: run the tests as root (scripts/test)"
        );
        // Under /tmp whatever TMPDIR says: unix socket paths (ours, containerd's) are limited
        // to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("dockerd-")
            .tempdir_in("/tmp")
            .expect("a temporary directory for dockerd");
        let root = dir.path().to_path_buf();
        let mut d = Dockerd {
            dir: Some(dir),
            root,
            child: None,
        };
        d.spawn();
        d
    }

    /// "unix:///tmp/dockerd-.../sock".
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The temporary directory holding everything of this dockerd.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// SIGTERM (dockerd stops its containers and its containerd), SIGKILL after 20 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = child.id().to_string();
        if let Err(e) = Command::new("kill").args(["-TERM", &pid]).status() {
            eprintln!("kill -TERM {pid}: {e}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                _ => break,
            }
        }
        eprintln!("dockerd {pid} did not stop within {STOP_TIMEOUT:?}: killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, as a crash: containerd's shims and the containers outlive it (Drop ends them).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop, then start again on the same directories: containers with a restart policy
    /// come back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        // Child::try_wait needs &mut: read the state instead (Z: exited, not yet reaped).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
        stat.is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
    }

    /// The tail of dockerd's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.root.join("log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn namespace(&self) -> String {
        let name = self.root.file_name().unwrap_or_default().to_string_lossy();
        let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        format!("usbu-{}", clean.to_lowercase())
    }

    fn spawn(&mut self) {
        let r = |p: &str| self.root.join(p).display().to_string();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("log"))
            .expect("dockerd log");
        let child = Command::new("dockerd")
            .args(["--data-root", &r("data"), "--exec-root", &r("exec")])
            .args(["--pidfile", &r("pid"), "-H", &self.host()])
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .arg("--ip6tables=false")
            // A system containerd (Debian runs one beside docker.io) would otherwise be
            // shared: each engine of ours gets namespaces of its own there.
            .args(["--containerd-namespace", &self.namespace()])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", self.namespace()),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("spawning dockerd: not installed? (scripts/setup installs docker.io)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !ping(&self.socket()) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "dockerd exited ({status}) before answering:\n{}",
                    self.log_tail(40)
                );
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "dockerd {pid} did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Bridge interfaces of compose networks outlive the engine and would exhaust the
        // address pools of later engines: named `br-<network id prefix>`, removed by hand.
        let bridges = if self.is_running() {
            bridge_networks(&self.socket())
        } else {
            Vec::new()
        };
        self.stop();
        for id in bridges {
            let _ = Command::new("ip")
                .args(["link", "delete", &format!("br-{}", &id[..12.min(id.len())])])
                .stderr(Stdio::null())
                .status();
        }
        // After a SIGKILL, containerd, shims and containers may survive dockerd.
        let strays = processes_under(&self.root);
        for pid in &strays {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if !strays.is_empty() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !processes_under(&self.root).is_empty() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        unmount_under(&self.root);
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("removing {}: {e}", self.root.display());
            }
        }
    }
}

/// Ids of the user-defined bridge networks of the engine at `socket`.
fn bridge_networks(socket: &Path) -> Vec<String> {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = String::new();
    if s.write_all(b"GET /networks HTTP/1.0\r\nHost: dockerd\r\n\r\n")
        .is_err()
        || s.read_to_string(&mut answer).is_err()
    {
        return Vec::new();
    }
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let nets: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
    nets.iter()
        .filter(|n| n["Driver"] == "bridge" && n["Name"] != "bridge")
        .filter_map(|n| n["Id"].as_str().map(str::to_string))
        .collect()
}

/// `GET /_ping` answered `OK`.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: dockerd\r\n\r\n")
        .is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.")
        && answer.contains(" 200 ")
        && answer.ends_with("\r\n\r\nOK")
}

/// Processes whose command line names `dir` (containerd, its shims) and their descendants
/// (the containers).
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let mut parents: Vec<(u32, u32)> = Vec::new();
    let mut found: Vec<u32> = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid) in &parents {
            if found.contains(ppid) && !found.contains(pid) {
                found.push(*pid);
                grew = true;
            }
        }
    }
    found
}

/// Mount points at or under `dir` (overlay2's layers, netns files, dockerd's private bind of
/// its data root), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn unmount_under(dir: &Path) {
    // A mount point can carry several stacked mounts: repeat while that makes progress.
    let mut left = mounts_under(dir);
    while !left.is_empty() {
        for m in &left {
            if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("umount {}: {e}", m.display());
            }
        }
        let now = mounts_under(dir);
        if now.len() >= left.len() {
            return;
        }
        left = now;
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                );
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
