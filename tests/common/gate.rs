//! A gate in front of a private dockerd, for faults that must happen in the middle of one
//! request: a unix socket that passes every byte both ways until the first request whose
//! request line the test names (`POST .../containers/<id>/start`), lets `pass` bytes of it
//! through, and then passes nothing more from that connection to the engine. The engine
//! can then never finish that request, whatever the timing, and the test, told so, stops
//! the engine. When the engine closes a connection the gate closes the client's end, as
//! the engine's own socket would have been. A test hook around the real engine, not a
//! stand-in: every answer the client gets is dockerd's.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which request to hold, and how much of it the engine gets.
pub struct Hold {
    pub method: &'static str,
    /// The request path (without the API version prefix) matches.
    pub path: fn(&str) -> bool,
    /// Bytes of the request, from its request line on, passed before the gate shuts.
    pub pass: u64,
}

pub struct Gate {
    socket: PathBuf,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

struct Shared {
    hold: Hold,
    /// The request was seen (it can be held once only) / it is held now.
    state: Mutex<(bool, bool)>,
    changed: Condvar,
    closing: AtomicBool,
    streams: Mutex<Vec<UnixStream>>,
}

impl Gate {
    /// A gate to the engine listening on `upstream`.
    pub fn new(upstream: &Path, hold: Hold) -> Gate {
        // Under /tmp: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("gate-")
            .tempdir_in("/tmp")
            .expect("gate dir");
        let socket = dir.path().join("sock");
        let listener = UnixListener::bind(&socket).expect("gate socket");
        let shared = Arc::new(Shared {
            hold,
            state: Mutex::new((false, false)),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let upstream = upstream.to_path_buf();
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let s = Arc::clone(&s);
                let upstream = upstream.clone();
                std::thread::spawn(move || connection(&s, client, &upstream));
            }
        });
        Gate {
            socket,
            shared,
            _dir: dir,
        }
    }

    /// `unix://<gate socket>`, for `DOCKER_HOST` or `Engine::connect_to`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Wait until the request is held; `gave_up` is asked between waits (the client exited
    /// without sending it, say) and ends the wait with its reason.
    #[track_caller]
    pub fn wait_held(&self, mut gave_up: impl FnMut() -> Option<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut state = self.shared.state.lock().unwrap();
        while !state.1 {
            if let Some(why) = gave_up() {
                panic!("the gate never held the request: {why}");
            }
            assert!(Instant::now() < deadline, "the gate never held the request");
            state = (self.shared.changed)
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for s in self.shared.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop, which then sees `closing`.
        let _ = UnixStream::connect(&self.socket);
    }
}

fn connection(s: &Arc<Shared>, client: UnixStream, upstream: &Path) {
    let Ok(engine) = UnixStream::connect(upstream) else {
        return; // the engine is gone: the client sees its connection closed
    };
    let (Ok(client_w), Ok(engine_r)) = (client.try_clone(), engine.try_clone()) else {
        return;
    };
    {
        let mut streams = s.streams.lock().unwrap();
        for st in [&client, &engine] {
            if let Ok(c) = st.try_clone() {
                streams.push(c);
            }
        }
    }
    // Engine to client, untouched; the engine closing ends the client's connection too.
    let down = std::thread::spawn(move || {
        let (mut from, mut to) = (engine_r, client_w);
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
    up(s, client, engine);
    let _ = down.join();
}

/// Client to engine: every byte until the held request's `pass` bytes, then nothing.
fn up(s: &Shared, mut client: UnixStream, mut engine: UnixStream) {
    let mut buf = vec![0u8; 64 << 10];
    // A line that may still become the held request line is kept back until it is known
    // not to be; anything else (other lines, bodies) passes at once.
    let mut line: Vec<u8> = Vec::new();
    let mut line_start = true;
    let mut left: Option<u64> = None;
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out: Vec<u8> = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            if let Some(l) = left.as_mut() {
                let take = (*l).min((n - i) as u64) as usize;
                out.extend_from_slice(&buf[i..i + take]);
                *l -= take as u64;
                i += take;
                if *l == 0 {
                    break;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            if !line_start {
                out.push(b);
                line_start = b == b'\n';
                continue;
            }
            line.push(b);
            if b == b'\n' {
                if is_held(s, &line) {
                    let pass = s.hold.pass;
                    let now = (pass as usize).min(line.len());
                    out.extend_from_slice(&line[..now]);
                    left = Some(pass - now as u64);
                    line.clear();
                    if left == Some(0) {
                        break;
                    }
                } else {
                    out.append(&mut line);
                }
            } else if !may_become(&line, s.hold.method) {
                out.append(&mut line);
                line_start = false;
            }
        }
        if engine.write_all(&out).is_err() {
            return;
        }
        if left == Some(0) {
            let mut state = s.state.lock().unwrap();
            state.1 = true;
            s.changed.notify_all();
            // Nothing more from this client reaches the engine.
            while !s.closing.load(Ordering::SeqCst) {
                state = s.changed.wait(state).unwrap();
            }
            return;
        }
    }
    let _ = engine.shutdown(Shutdown::Write);
}

/// `line` (not yet ended) can still be a request line of `method`.
fn may_become(line: &[u8], method: &str) -> bool {
    let m = format!("{method} ");
    match line.len() <= m.len() {
        true => m.as_bytes().starts_with(line),
        false => line.starts_with(m.as_bytes()) && line.len() <= 8192,
    }
}

/// The first request line that the rule names; later ones pass.
fn is_held(s: &Shared, line: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = text.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if method != s.hold.method || !version.starts_with("HTTP/1.") {
        return false;
    }
    let path = target.split('?').next().unwrap_or_default();
    // "/v1.41/containers/x/start" -> "/containers/x/start"
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |i| &rest[i..])
        }
        _ => path,
    };
    let mut state = s.state.lock().unwrap();
    if state.0 || !(s.hold.path)(path) {
        return false;
    }
    state.0 = true;
    true
}
