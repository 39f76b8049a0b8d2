//! Are started apps up? Every service of every app must have a container that runs, is
//! healthy where it has a healthcheck, and does not restart, and stay so for the policy's
//! `settle` time; an app that cannot get there within `health_timeout` failed.
//!
//! A container that exited with a non-zero code, turned unhealthy or restarted fails at once:
//! waiting out the timeout would only keep the operator standing there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::docker::{ContainerState, Engine};
use super::Verdict;
use crate::error::Result;
use crate::policy::AppsPolicy;

const POLL: Duration = Duration::from_millis(250);

/// One app to watch: its compose project and the services it must run.
#[derive(Debug, Clone)]
pub struct Expected {
    pub app: String,
    pub project: String,
    pub services: Vec<String>,
}

/// A service's state in one look: up, not yet, or failed for good.
enum Look {
    Up,
    Waiting(String),
    Failed(String),
}

fn look(c: &ContainerState, baseline_restarts: i64) -> Look {
    let who = format!(
        "service {} ({})",
        c.service.as_deref().unwrap_or("?"),
        c.name
    );
    // The most telling reason first: an exit code says more than the health that follows.
    let stopped = matches!(c.status.as_str(), "exited" | "dead" | "restarting");
    if let Some(code) = c.exit_code.filter(|&code| stopped && code != 0) {
        return Look::Failed(format!("{who} exited with code {code}"));
    }
    if c.restart_count > baseline_restarts || c.restarting {
        return Look::Failed(format!("{who} keeps restarting"));
    }
    if c.health.as_deref() == Some("unhealthy") {
        return Look::Failed(format!("{who} is unhealthy"));
    }
    match c.status.as_str() {
        // A one-shot service that finished its job is fine.
        "exited" => Look::Up,
        "dead" => Look::Failed(format!("{who} is dead")),
        "running" => match c.health.as_deref() {
            None | Some("healthy") => Look::Up,
            Some(h) => Look::Waiting(format!("{who} is {h}")),
        },
        other => Look::Waiting(format!("{who} is {other}")),
    }
}

/// Wait until every expected service is up and stays so for `settle`.
pub fn wait(engine: &Engine, expected: &[Expected], policy: &AppsPolicy) -> Result<Verdict> {
    let deadline = Instant::now() + policy.health_timeout;
    let mut up_since: Option<Instant> = None;
    // Restart counts when first seen: a container kept from before may have restarted then.
    let mut baseline: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        let mut waiting = None;
        for e in expected {
            let containers = engine.project_containers(&e.project)?;
            for svc in &e.services {
                let Some(c) = containers
                    .iter()
                    .find(|c| c.service.as_deref() == Some(svc))
                else {
                    waiting.get_or_insert(format!("app {}: service {svc} has no container", e.app));
                    continue;
                };
                let base = *baseline.entry(c.id.clone()).or_insert(c.restart_count);
                match look(c, base) {
                    Look::Up => {}
                    Look::Waiting(w) => {
                        waiting.get_or_insert(format!("app {}: {w}", e.app));
                    }
                    Look::Failed(f) => return Ok(Err(format!("app {}: {f}", e.app))),
                }
            }
        }
        let now = Instant::now();
        match waiting {
            None => {
                let since = *up_since.get_or_insert(now);
                if now.duration_since(since) >= policy.settle {
                    return Ok(Ok(()));
                }
            }
            Some(w) => {
                up_since = None;
                if now >= deadline {
                    return Ok(Err(format!(
                        "{w} after {} s",
                        policy.health_timeout.as_secs()
                    )));
                }
            }
        }
        std::thread::sleep(POLL);
    }
}
