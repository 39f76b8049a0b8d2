//! The command line: `usb-update <command>`; each command prints one human line per step on
//! stdout (or one JSON object with `--json`), logs on stderr, and exits with the code of the
//! README's table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::check;

#[derive(Debug, Parser)]
#[command(
    name = "usb-update",
    version,
    about = "Offline (USB) update agent for OSTree + Docker Compose devices"
)]
pub struct Cli {
    /// Accepted for aklite-offline scripts; use USB_UPDATE_LOG for log levels.
    #[arg(long = "log-level", global = true, hide = true, value_name = "N")]
    pub log_level: Option<u8>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the device's configuration and policy come from.
#[derive(Debug, Clone, Args)]
pub struct Sources {
    /// aktualizr-lite config: a *.toml file or a directory of them (repeatable; replaces the defaults).
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Policy: a *.toml file or a directory of them (repeatable; replaces the defaults).
    #[arg(short = 'p', long = "policy", value_name = "PATH")]
    pub policy: Vec<PathBuf>,
}

/// What `check` and `install` take besides the sources.
#[derive(Debug, Clone, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// The bundle: the directory holding tuf/, ostree_repo/, apps/.
    #[arg(short = 's', long, value_name = "DIR")]
    pub src_dir: PathBuf,
    /// Install this target (a TUF target name) instead of the highest version.
    #[arg(short = 't', long, value_name = "NAME")]
    pub target: Option<String>,
    /// Allow a downgrade.
    #[arg(short = 'f', long)]
    pub force: bool,
}

impl From<BundleArgs> for check::Request {
    fn from(b: BundleArgs) -> Self {
        check::Request {
            config: b.sources.config,
            policy: b.sources.policy,
            src_dir: b.src_dir,
            target: b.target,
            force: b.force,
            progress: None,
            metadata: None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a bundle and say what `install` would do; changes nothing.
    Check {
        #[command(flatten)]
        bundle: BundleArgs,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle and install its target: 100 reboot then run, 0 nothing to do.
    Install {
        #[command(flatten)]
        bundle: BundleArgs,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Finalize a pending installation after its reboot.
    Run {
        #[command(flatten)]
        sources: Sources,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// What the device runs now; changes nothing.
    Current {
        #[command(flatten)]
        sources: Sources,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The agent's phase, pending work and last results; changes nothing.
    Status {
        #[command(flatten)]
        sources: Sources,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The automatic flow (udev rule, systemd units, or `watch` without systemd).
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Tools for whoever prepares sticks.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// One stick: check, mount, verify, install, then reboot or restart Docker.
    Handle {
        #[command(flatten)]
        sources: Sources,
        /// The block device, e.g. /dev/sda1.
        devnode: PathBuf,
    },
    /// At boot: finish what the reboot was for.
    Finalize {
        #[command(flatten)]
        sources: Sources,
    },
    /// Listen to udev (and watch automount directories) and handle each new stick.
    Watch {
        #[command(flatten)]
        sources: Sources,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Sign a bundle's tuf/ with an operator's Ed25519 key (PKCS#8 PEM): writes usb-update.sig.
    Sign {
        /// The private key.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The bundle directory.
        dir: PathBuf,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USB_UPDATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn main() -> ExitCode {
    init_logging();
    // Installed or linked as `aklite-offline`, the same commands, flags and codes.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cli = if name == "aklite-offline" {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Cli::command().name("aklite-offline").get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    } else {
        Cli::parse()
    };
    let code = match cli.command {
        Command::Check { bundle, json } => run_check(&bundle.into(), json),
        Command::Install { bundle, json } => run_install(&bundle.into(), json),
        Command::Run { sources, json } => run_run(&sources, json),
        Command::Current { sources, json } => run_current(&sources, json),
        Command::Status { sources, json } => run_status(&sources, json),
        Command::Agent { command } => run_agent(command),
        Command::Bundle {
            command: BundleCommand::Sign { key, dir },
        } => match crate::signature::sign(&key, &dir) {
            Ok(p) => {
                print_out(&format!("signed: {}\n", p.display()));
                0
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
    };
    ExitCode::from(code)
}

fn run_check(req: &check::Request, json: bool) -> u8 {
    let (report, _) = check::evaluate(req);
    print_report(&report, &req.src_dir, json, "install would return");
    report.exit_code
}

fn print_report(report: &check::Report, src: &std::path::Path, json: bool, last: &str) {
    let text = if json {
        serde_json::to_string(report)
            .map(|s| s + "\n")
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise the report: {e}\"}}\n"))
    } else {
        let mut lines = check::human_lines(report, src);
        if let Some(l) = lines.last_mut() {
            *l = format!("{last} {}", report.exit_code);
        }
        lines.into_iter().map(|l| l + "\n").collect()
    };
    print_out(&text);
}

fn run_install(req: &check::Request, json: bool) -> u8 {
    let (report, _) = crate::install::install(req);
    print_report(&report, &req.src_dir, json, "install returned");
    report.exit_code
}

fn run_run(sources: &Sources, json: bool) -> u8 {
    let (code, message) = match crate::finalize::run(&sources.config, &sources.policy) {
        Ok(o) => (o.code.as_u8(), o.message),
        Err(e) => (e.code().as_u8(), format!("error: {}", e.one_line())),
    };
    let text = if json {
        serde_json::json!({"exit_code": code, "message": message}).to_string() + "\n"
    } else {
        format!("{message}\nrun returned {code}\n")
    };
    print_out(&text);
    code
}

fn agent_sources(s: &Sources) -> crate::agent::Sources {
    crate::agent::Sources {
        config: s.config.clone(),
        policy: s.policy.clone(),
    }
}

fn run_agent(command: AgentCommand) -> u8 {
    let result = match &command {
        AgentCommand::Handle { sources, devnode } => {
            crate::agent::handle(&agent_sources(sources), devnode)
        }
        AgentCommand::Finalize { sources } => crate::agent::finalize(&agent_sources(sources)),
        AgentCommand::Watch { sources } => {
            crate::agent::watch(&agent_sources(sources)).map(|()| crate::Code::Ok)
        }
    };
    match result {
        Ok(code) => code.as_u8(),
        Err(e) => {
            eprintln!("error: {}", e.one_line());
            e.code().as_u8()
        }
    }
}

fn run_current(sources: &Sources, json: bool) -> u8 {
    print_view(
        crate::current::current(&sources.config),
        json,
        crate::current::human_lines,
    )
}

fn run_status(sources: &Sources, json: bool) -> u8 {
    print_view(
        crate::status::status(&sources.config, &sources.policy),
        json,
        crate::status::human_lines,
    )
}

/// A read-only command's answer: one JSON object or its human lines; an error on stderr.
fn print_view<T: serde::Serialize>(
    view: crate::Result<T>,
    json: bool,
    lines: fn(&T) -> Vec<String>,
) -> u8 {
    match view {
        Ok(v) => {
            let text = if json {
                serde_json::to_string(&v)
                    .map(|s| s + "\n")
                    .unwrap_or_default()
            } else {
                lines(&v).into_iter().map(|l| l + "\n").collect()
            };
            print_out(&text);
            0
        }
        Err(e) => {
            eprintln!("error: {}", e.one_line());
            e.code().as_u8()
        }
    }
}

/// Write to stdout; a reader that went away (`| head`) is not our failure: the exit code
/// still tells the result.
fn print_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
