//! The command line: `usb-update <command>`; each command prints one human line per step on
//! stdout (or one JSON object with `--json`), logs on stderr, and exits with a code of
//! docs/exit-codes.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::check;
use crate::core::evaluate;

#[derive(Debug, Parser)]
#[command(
    name = "usb-update",
    version,
    about = "Offline (USB) update agent for OSTree + Docker Compose devices"
)]
pub struct Cli {
    /// aklite-offline's log level (0 trace .. 5 fatal; logs on stdout); usb-update: accepted
    /// and ignored (USB_UPDATE_LOG sets its log levels, logs on stderr).
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

impl From<BundleArgs> for evaluate::Request {
    fn from(b: BundleArgs) -> Self {
        evaluate::Request {
            sources: (&b.sources).into(),
            loaded: None,
            records: None,
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
    /// After a site visit: the report each device's agent wrote on the stick, as a table.
    Report {
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
        /// The stick's root (where the agent writes usb-update-report-*.json).
        dir: PathBuf,
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

/// The command line's definition, for what is generated from it (man pages, completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USB_UPDATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal: under systemd stderr goes to the journal,
    // which would keep the escape codes as text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// aklite-offline's logging: on stdout, at `--log-level` (0 trace, 1 debug, 2 info, the
/// default, 3 warning, 4 and up error), the bare message unless stdout is a terminal.
fn init_aklite_logging(level: Option<u8>) {
    use std::io::IsTerminal as _;
    let level = match level.unwrap_or(2) {
        0 => "trace",
        1 => "debug",
        2 => "info",
        3 => "warn",
        _ => "error",
    };
    let tty = std::io::stdout().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stdout)
        .without_time()
        .with_target(false)
        .with_level(tty)
        .with_ansi(tty)
        .try_init();
}

/// Installed or linked as `aklite-offline`: its commands, flags and log output, and its
/// exit code 1 for usage errors (help is 0).
fn aklite_offline_cli() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let parsed = Cli::command()
        .name("aklite-offline")
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    }
}

/// The `usb-update` binary (and `aklite-offline`, by the name it is called with).
pub fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aklite = name == "aklite-offline";
    let cli = if aklite {
        let cli = aklite_offline_cli();
        init_aklite_logging(cli.log_level);
        cli
    } else {
        init_logging();
        Cli::parse()
    };
    let code = match cli.command {
        Command::Check { bundle, json } => run_check(&bundle.into(), json),
        Command::Install { bundle, json } => run_install(&bundle.into(), json),
        Command::Run { sources, json } => run_run(&sources, json),
        Command::Current { sources, json } => run_current(&sources, json, aklite),
        Command::Status { sources, json } => run_status(&sources, json),
        Command::Report { json, dir } => run_report(&dir, json),
        Command::Agent { command } => run_agent(command),
        Command::Bundle {
            command: BundleCommand::Sign { key, dir },
        } => match crate::core::signature::sign(&key, &dir) {
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

fn run_check(req: &evaluate::Request, json: bool) -> u8 {
    let (report, _) = evaluate::evaluate(req);
    print_report(&report, &req.src_dir, json, "install would return");
    report.exit_code
}

fn print_report(report: &evaluate::Report, src: &std::path::Path, json: bool, last: &str) {
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

fn run_install(req: &evaluate::Request, json: bool) -> u8 {
    let (report, _) = crate::commands::install::install(req);
    print_report(&report, &req.src_dir, json, "install returned");
    report.exit_code
}

fn run_run(sources: &Sources, json: bool) -> u8 {
    let (code, message, notes) = match crate::commands::run::run(&sources.into()) {
        Ok(o) => (o.code.as_u8(), o.message, o.notes),
        Err(e) => (
            e.code().as_u8(),
            format!("error: {}", e.one_line()),
            Vec::new(),
        ),
    };
    let text = if json {
        serde_json::json!({"exit_code": code, "message": message, "notes": notes}).to_string()
            + "\n"
    } else {
        let notes: String = notes.iter().map(|n| format!("note: {n}\n")).collect();
        format!("{message}\n{notes}run returned {code}\n")
    };
    print_out(&text);
    code
}

impl From<&Sources> for crate::core::context::Sources {
    fn from(s: &Sources) -> Self {
        crate::core::context::Sources {
            config: s.config.clone(),
            policy: s.policy.clone(),
        }
    }
}

fn run_agent(command: AgentCommand) -> u8 {
    let result = match &command {
        AgentCommand::Handle { sources, devnode } => crate::agent::handle(&sources.into(), devnode),
        AgentCommand::Finalize { sources } => crate::agent::finalize(&sources.into()),
        AgentCommand::Watch { sources } => {
            crate::agent::watch(&sources.into()).map(|()| crate::Code::Ok)
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

fn run_report(dir: &std::path::Path, json: bool) -> u8 {
    let rows = match crate::commands::report::read(dir) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {}", e.one_line());
            return e.code().as_u8();
        }
    };
    let text = if json {
        serde_json::to_string(&rows)
            .map(|s| s + "\n")
            .unwrap_or_default()
    } else {
        crate::commands::report::human_lines(&rows, &crate::clock::now_utc())
            .into_iter()
            .map(|l| l + "\n")
            .collect()
    };
    print_out(&text);
    crate::commands::report::code(&rows).as_u8()
}

fn run_current(sources: &Sources, json: bool, aklite: bool) -> u8 {
    let lines = if aklite {
        crate::commands::current::aklite_lines
    } else {
        crate::commands::current::human_lines
    };
    print_view(
        crate::commands::current::current(&sources.config),
        json,
        lines,
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
