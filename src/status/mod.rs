//! placeholder (issue 5): what the operator sees: LEDs, console lines, status.json, sd_notify, the report on the stick, `usb-update status`.
#![allow(dead_code, unused_variables)]
use crate::policy::Policy;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Idle,
    Working,
    SafeToRemove,
    Success,
    Error,
    Busy,
}
pub struct Feedback;
impl Feedback {
    pub fn new(policy: &Policy) -> Feedback {
        todo!()
    }
    pub fn pattern(&mut self, p: Pattern) {
        todo!()
    }
    pub fn step(&mut self, msg: &str) {
        todo!()
    }
    pub fn progress(&mut self, what: &str, done: u64, total: u64) {
        todo!()
    }
    pub fn lines(&self) -> Vec<String> {
        todo!()
    }
}
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub device: String,
    pub stick: String,
    pub bundle: String,
    pub exit_code: u8,
    pub result: String,
    pub error: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub durations: std::collections::BTreeMap<String, f64>,
}
pub fn write_report(dir: &Path, report: &Report, log: &[String]) -> anyhow::Result<PathBuf> {
    todo!()
}
#[derive(Debug, serde::Serialize)]
pub struct StatusView;
pub fn status(config: &[PathBuf], policy: &[PathBuf]) -> crate::Result<StatusView> {
    todo!()
}
pub fn human_lines(v: &StatusView) -> Vec<String> {
    todo!()
}
