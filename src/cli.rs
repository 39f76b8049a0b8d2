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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a bundle and say what `install` would do; changes nothing.
    Check {
        #[command(flatten)]
        sources: Sources,
        /// The bundle: the directory holding tuf/, ostree_repo/, apps/.
        #[arg(short = 's', long, value_name = "DIR")]
        src_dir: PathBuf,
        /// Install this target (a TUF target name) instead of the highest version.
        #[arg(short = 't', long, value_name = "NAME")]
        target: Option<String>,
        /// Allow a downgrade.
        #[arg(short = 'f', long)]
        force: bool,
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
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check {
            sources,
            src_dir,
            target,
            force,
            json,
        } => {
            let req = check::Request {
                config: sources.config,
                policy: sources.policy,
                src_dir,
                target,
                force,
            };
            run_check(&req, json)
        }
        Command::Current { sources, json } => run_current(&sources, json),
    };
    ExitCode::from(code)
}

fn run_check(req: &check::Request, json: bool) -> u8 {
    let (report, _) = check::evaluate(req);
    let text = if json {
        match serde_json::to_string(&report) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("error: cannot serialise the report: {e}");
                return 1;
            }
        }
    } else {
        check::human_lines(&report, &req.src_dir)
            .into_iter()
            .map(|l| l + "\n")
            .collect()
    };
    print_out(&text);
    report.exit_code
}

fn run_current(sources: &Sources, json: bool) -> u8 {
    match crate::current::current(&sources.config) {
        Ok(c) => {
            let text = if json {
                serde_json::to_string(&c)
                    .map(|s| s + "\n")
                    .unwrap_or_default()
            } else {
                crate::current::human_lines(&c)
                    .into_iter()
                    .map(|l| l + "\n")
                    .collect()
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
