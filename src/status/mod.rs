//! What the operator sees while the agent works with nobody at a keyboard.
//!
//! One [`Feedback`] fans every event out to all channels at once, so no code path can forget
//! one: the LEDs ([`leds`]: a distinct pattern per phase, "safe to remove" unmistakable), one
//! line per step on each console ([`console`]), `tracing`, systemd's `STATUS=` (shown by
//! `systemctl status`), and `<run_dir>/status.json` for other programs and `usb-update
//! status` ([`view`]). Every line is also kept, timestamped, for the report written back onto
//! the stick ([`report`]). Feedback never fails the update: a dead LED or console is logged
//! and skipped.

mod console;
mod leds;
mod report;
mod view;

pub(crate) use leds::light;
pub use report::{digest_matches, report_file_stem, write_report, Report};
pub use view::{human_lines, status};

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// A phase as the operator sees it, shown on every configured LED (see [`light`] for the
/// pattern of each) and as `phase` in `status.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Nothing going on.
    Idle,
    /// Reading or installing: do not remove the stick, do not power off.
    Working,
    /// The stick is no longer used.
    SafeToRemove,
    /// The update is done.
    Success,
    /// It failed: the console, the status and the report on the stick say why.
    Error,
    /// Another update is running: this stick is not taken now.
    Busy,
}

impl Pattern {
    #[cfg(any(test, feature = "internals"))]
    pub const ALL: [Pattern; 6] = [
        Pattern::Idle,
        Pattern::Working,
        Pattern::SafeToRemove,
        Pattern::Success,
        Pattern::Error,
        Pattern::Busy,
    ];

    /// The name used in `status.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Idle => "idle",
            Pattern::Working => "working",
            Pattern::SafeToRemove => "safe_to_remove",
            Pattern::Success => "success",
            Pattern::Error => "error",
            Pattern::Busy => "busy",
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<run_dir>/status.json`: the live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    pub phase: Pattern,
    pub message: String,
    /// Set while a [`Feedback::progress`] runs, `null` otherwise.
    pub percent: Option<u8>,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

impl StatusFile {
    pub(crate) const NAME: &'static str = "status.json";

    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(Self::NAME)
    }
}

/// Console lines come at most this often during a progress, unless it moved by
/// [`PROGRESS_STEP`] percent: enough to see it move, not enough to flood a serial console.
pub(crate) const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);
pub(crate) const PROGRESS_STEP: u8 = 10;
/// `status.json` and `STATUS=` are rewritten at most this often during a progress.
pub(crate) const PROGRESS_PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Lines kept for the report: a bounded excerpt, so a stuck progress cannot grow memory.
pub(crate) const MAX_LINES: usize = 2000;

/// Prefix of every console line, so the agent stands out among kernel messages.
const CONSOLE_PREFIX: &str = "usb-update: ";

/// The operator's view of one agent run.
pub struct Feedback {
    leds: Vec<leds::Led>,
    consoles: Vec<PathBuf>,
    status_file: PathBuf,
    phase: Pattern,
    message: String,
    percent: Option<u8>,
    progress: Option<Progress>,
    lines: VecDeque<String>,
    dropped: usize,
    /// status.json could not be written before: say so once, not every second.
    publish_failed: bool,
}

/// The rate limiter of the progress that runs now.
struct Progress {
    what: String,
    /// What the last console line said, and when.
    line_done: u64,
    line_percent: Option<u8>,
    line_at: Instant,
    /// When status.json was last written.
    published_at: Instant,
}

impl Feedback {
    /// Resolves the LEDs once (a missing one is reported here, then skipped); touches nothing.
    pub fn new(policy: &Policy) -> Feedback {
        Feedback {
            leds: leds::resolve(&policy.feedback.leds_path, &policy.feedback.leds),
            consoles: policy.feedback.consoles.clone(),
            status_file: StatusFile::path(&policy.agent.run_dir),
            phase: Pattern::Idle,
            message: String::new(),
            percent: None,
            progress: None,
            lines: VecDeque::new(),
            dropped: 0,
            publish_failed: false,
        }
    }

    /// Shows `p` on every LED and in status.json.
    pub fn pattern(&mut self, p: Pattern) {
        tracing::debug!("feedback pattern {p}");
        self.phase = p;
        let light = light(p);
        for led in &self.leds {
            led.show(light);
        }
        self.publish();
    }

    /// One step: a line on every channel.
    pub fn step(&mut self, msg: &str) {
        let msg = one_line(msg);
        self.progress = None;
        self.percent = None;
        self.say(&msg);
        self.message = msg;
        self.publish();
        self.notify();
    }

    /// `done` of `total` (any unit; `total` 0: unknown) of `what`, rate-limited: a console
    /// line when it moved by [`PROGRESS_STEP`] % or after [`PROGRESS_LINE_EVERY`],
    /// status.json at most every [`PROGRESS_PUBLISH_EVERY`]; the first call of a progress
    /// and the one that reaches `total` always show.
    pub fn progress(&mut self, what: &str, done: u64, total: u64) {
        self.progress_at(what, done, total, Instant::now());
    }

    /// [`Feedback::progress`] with the clock passed in, for the tests.
    fn progress_at(&mut self, what: &str, done: u64, total: u64, now: Instant) {
        crate::watchdog::beat();
        let what = one_line(what);
        // u128: no overflow whatever the unit.
        let percent =
            (total > 0).then(|| (u128::from(done.min(total)) * 100 / u128::from(total)) as u8);
        let finished = total > 0 && done >= total;
        self.percent = percent;
        self.message = match percent {
            Some(p) => format!("{what}: {p}%"),
            None => format!("{what}: {done}"),
        };
        let (line, publish) = match self.progress.as_mut() {
            Some(p) if p.what == what => {
                let moved = match (percent, p.line_percent) {
                    (Some(a), Some(b)) => a.abs_diff(b) >= PROGRESS_STEP,
                    _ => false,
                };
                let due = now.saturating_duration_since(p.line_at) >= PROGRESS_LINE_EVERY;
                // A line only says something new: a stalled copy prints nothing more.
                let line = done != p.line_done && (moved || finished || due);
                let publish = finished
                    || now.saturating_duration_since(p.published_at) >= PROGRESS_PUBLISH_EVERY;
                if line {
                    (p.line_done, p.line_percent, p.line_at) = (done, percent, now);
                }
                if publish {
                    p.published_at = now;
                }
                (line, publish)
            }
            _ => {
                self.progress = Some(Progress {
                    what,
                    line_done: done,
                    line_percent: percent,
                    line_at: now,
                    published_at: now,
                });
                (true, true)
            }
        };
        if line {
            let msg = self.message.clone();
            self.say(&msg);
        }
        if publish {
            self.publish();
            self.notify();
        }
    }

    /// Every step and progress line so far, timestamped: the log excerpt for the report.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped > 0 {
            out.push(format!("({} earlier lines dropped)", self.dropped));
        }
        out.extend(self.lines.iter().cloned());
        out
    }

    /// The console, the log and the kept lines.
    fn say(&mut self, msg: &str) {
        crate::watchdog::beat();
        tracing::info!("{msg}");
        let line = format!("{CONSOLE_PREFIX}{msg}\n");
        for c in &self.consoles {
            console::write_line(c, &line);
        }
        if self.lines.len() >= MAX_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(format!("{} {msg}", now_rfc3339()));
    }

    /// status.json; a failure is logged (once as a warning): the update goes on without it.
    fn publish(&mut self) {
        let status = StatusFile {
            phase: self.phase,
            message: self.message.clone(),
            percent: self.percent,
            updated_at: now_rfc3339(),
        };
        let written = serde_json::to_vec_pretty(&status)
            .context("serialising the status")
            .and_then(|bytes| crate::durable::replace_volatile(&self.status_file, &bytes));
        match written {
            Err(e) if self.publish_failed => tracing::debug!("status not published: {e:#}"),
            Err(e) => {
                tracing::warn!("status not published: {e:#}");
                self.publish_failed = true;
            }
            Ok(()) => self.publish_failed = false,
        }
    }

    /// systemd's `STATUS=`: a no-op unless started by systemd with `NOTIFY_SOCKET`.
    fn notify(&self) {
        let state = [sd_notify::NotifyState::Status(&self.message)];
        if let Err(e) = sd_notify::notify(false, &state) {
            tracing::debug!("sd_notify STATUS: {e}");
        }
    }
}

/// Messages come from errors too: one line, no control characters, so a console, the
/// `STATUS=` protocol (newline separated) and the log excerpt stay line-based.
fn one_line(msg: &str) -> String {
    let s: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.trim().to_owned()
}

/// The device's clock (the report's times and the log lines agree with it).
fn now_rfc3339() -> String {
    crate::clock::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Rig {
        tmp: tempfile::TempDir,
        fb: Feedback,
    }

    impl Rig {
        fn new() -> Rig {
            let tmp = tempfile::tempdir().unwrap();
            let mut policy = Policy::default();
            policy.agent.run_dir = tmp.path().join("run");
            // A console is never created (no regular file in /dev): it must be there.
            fs::write(tmp.path().join("console"), "").unwrap();
            policy.feedback.consoles = vec![tmp.path().join("console")];
            let fb = Feedback::new(&policy);
            Rig { tmp, fb }
        }

        fn console(&self) -> Vec<String> {
            fs::read_to_string(self.tmp.path().join("console"))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        fn status(&self) -> StatusFile {
            let bytes = fs::read(self.tmp.path().join("run/status.json")).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    #[test]
    fn pattern_names_match_the_serde_names() {
        for p in Pattern::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }

    #[test]
    fn a_step_reaches_console_status_and_lines_as_one_line() {
        let mut r = Rig::new();
        r.fb.pattern(Pattern::Working);
        r.fb.step("error: bad\nthing\r");
        assert_eq!(r.console(), ["usb-update: error: bad thing"]);
        let s = r.status();
        assert_eq!(
            (s.phase, s.message.as_str(), s.percent),
            (Pattern::Working, "error: bad thing", None)
        );
        let lines = r.fb.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("Z error: bad thing"), "{lines:?}");
        // No temp file left next to status.json.
        let names: Vec<_> = fs::read_dir(r.tmp.path().join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.json"]);
    }

    #[test]
    fn progress_lines_every_ten_percent_or_five_seconds() {
        let mut r = Rig::new();
        let t0 = Instant::now();
        // 1000 calls within 0.1 s: the first, then every 10 %.
        for i in 0..=1000u64 {
            r.fb.progress_at("copying", i, 1000, t0 + Duration::from_micros(100 * i));
        }
        let expected: Vec<String> = (0..=10)
            .map(|d| format!("usb-update: copying: {}%", d * 10))
            .collect();
        assert_eq!(r.console(), expected);
        // A slow one: 1 % every 2 s gives a line every 5 s (every third call).
        let mut r = Rig::new();
        for i in 0..=6u64 {
            r.fb.progress_at("slow", i, 100, t0 + Duration::from_secs(2 * i));
        }
        assert_eq!(
            r.console(),
            [
                "usb-update: slow: 0%",
                "usb-update: slow: 3%",
                "usb-update: slow: 6%"
            ]
        );
        // Nothing moved: no line, however long it takes.
        r.fb.progress_at("slow", 6, 100, t0 + Duration::from_secs(60));
        assert_eq!(r.console().len(), 3);
        // Unknown total: the 5 s rule only.
        let mut r = Rig::new();
        for i in 0..10u64 {
            r.fb.progress_at("blobs", i * 1000, 0, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            r.console(),
            ["usb-update: blobs: 0", "usb-update: blobs: 5000"]
        );
        assert_eq!(r.status().percent, None);
    }

    #[test]
    fn status_json_is_rewritten_at_most_once_a_second_and_at_the_end() {
        let mut r = Rig::new();
        let t0 = Instant::now();
        r.fb.progress_at("copying", 0, 100, t0);
        assert_eq!(r.status().percent, Some(0));
        r.fb.progress_at("copying", 50, 100, t0 + Duration::from_millis(500));
        assert_eq!(r.status().percent, Some(0), "within the second");
        r.fb.progress_at("copying", 60, 100, t0 + Duration::from_millis(1000));
        assert_eq!(r.status().percent, Some(60));
        r.fb.progress_at("copying", 100, 100, t0 + Duration::from_millis(1100));
        let s = r.status();
        assert_eq!(
            (s.percent, s.message.as_str()),
            (Some(100), "copying: 100%"),
            "the end always shows"
        );
        // A step ends the progress: the percent goes back to null.
        r.fb.step("loading images");
        assert_eq!(r.status().percent, None);
        // A new progress (even of the same name) starts with a line.
        r.fb.progress_at("copying", 0, 10, t0 + Duration::from_millis(1200));
        assert_eq!(r.console().last().unwrap(), "usb-update: copying: 0%");
    }

    #[test]
    fn kept_lines_are_bounded() {
        let mut r = Rig::new();
        r.fb.consoles.clear();
        for i in 0..MAX_LINES + 3 {
            r.fb.say(&format!("line {i}"));
        }
        let lines = r.fb.lines();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[0], "(3 earlier lines dropped)");
        assert!(lines[1].ends_with(" line 3"));
    }

    #[test]
    fn an_unwritable_run_dir_is_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("file");
        fs::write(&blocker, "").unwrap();
        let mut policy = Policy::default();
        policy.agent.run_dir = blocker.join("run");
        policy.feedback.consoles = vec![tmp.path().join("no/such/console")];
        let mut fb = Feedback::new(&policy);
        fb.pattern(Pattern::Error);
        fb.step("still going");
        fb.progress("x", 1, 2);
        assert_eq!(fb.lines().len(), 2);
    }
}
