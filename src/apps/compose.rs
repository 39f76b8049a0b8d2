//! Compose files (which services, which images) and the compose CLI that runs them.
//!
//! We read compose files only for what the agent needs (each service's image and whether it
//! has a `build` section) and leave the rest to compose itself. Apps pin images by digest
//! (`hub.foundries.io/<factory>/<app>@sha256:...`); after an offline load a vanilla engine
//! knows the image by its tag only, so the agent writes [`OVERRIDE_FILE`] next to the
//! compose file to point each service at the image it loaded, and runs compose with
//! pulls and builds disabled: nothing may reach for a registry on a device without network.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, bail, Context};
use serde_yaml_ng::Value;

/// The compose file names compose itself looks for, in its order of preference.
pub(crate) const FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The override file the agent writes next to an app's compose file to map each service to
/// the image it loaded (compose files pin images by digest, which a vanilla engine cannot
/// resolve after a load).
pub const OVERRIDE_FILE: &str = ".usb-update-images.yml";

/// Compose files are a few KiB; the cap keeps a hostile one from costing much to parse.
const MAX_COMPOSE_FILE: usize = 1 << 20;

/// How many trailing stderr lines of a failed compose run go into the error.
const ERROR_LINES: usize = 4;

#[derive(Debug, Clone)]
pub struct Service {
    pub image: Option<String>,
    pub has_build: bool,
}

#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub services: BTreeMap<String, Service>,
}

impl ComposeFile {
    /// Parse a compose file; `what` names it in errors. Only `services.<name>.image` and the
    /// presence of `build` are read. Anchors, aliases and `<<` merge keys are resolved as
    /// compose resolves them, so an image given through a merge is seen.
    pub fn parse(bytes: &[u8], what: &str) -> anyhow::Result<ComposeFile> {
        if bytes.len() > MAX_COMPOSE_FILE {
            bail!(
                "{what}: {} bytes, over the {MAX_COMPOSE_FILE} byte limit of a compose file",
                bytes.len()
            );
        }
        let mut doc: Value =
            serde_yaml_ng::from_slice(bytes).with_context(|| format!("{what}: not valid YAML"))?;
        doc.apply_merge()
            .with_context(|| format!("{what}: bad `<<` merge key"))?;
        let Value::Mapping(top) = doc else {
            bail!("{what}: not a compose file (the document is not a mapping)");
        };
        let services = match top.get("services") {
            Some(Value::Mapping(services)) => services,
            None | Some(Value::Null) => bail!("{what}: no `services`"),
            Some(_) => bail!("{what}: `services` is not a mapping"),
        };
        let mut out = BTreeMap::new();
        for (name, body) in services {
            let Some(name) = name.as_str() else {
                bail!("{what}: service name {name:?} is not a string");
            };
            let Value::Mapping(body) = body else {
                bail!("{what}: service {name:?} is not a mapping");
            };
            let image = match body.get("image") {
                None | Some(Value::Null) => None,
                Some(Value::String(image)) => Some(image.clone()),
                Some(_) => bail!("{what}: service {name:?}: `image` is not a string"),
            };
            let has_build = body.contains_key("build");
            out.insert(name.to_string(), Service { image, has_build });
        }
        Ok(ComposeFile { services: out })
    }
}

/// `"<repo>@sha256:<64 lowercase hex>"` → `Some((repo, hex))`; anything else (tags, other
/// algorithms, bad hex) → `None`. A tag before the digest (`repo:tag@sha256:..`, which the
/// engine ignores) stays part of `repo`.
pub fn pinned(reference: &str) -> Option<(&str, &str)> {
    let (repo, digest) = reference.split_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    let hex_ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let repo_ok = !repo.is_empty() && !repo.contains(|c: char| c.is_whitespace() || c == '@');
    (hex_ok && repo_ok).then_some((repo, hex))
}

/// The compose file of a project directory, by [`FILE_NAMES`] order (regular files only:
/// a symlink could point anywhere).
pub(crate) fn find_file(project_dir: &Path) -> Option<PathBuf> {
    FILE_NAMES.iter().map(|n| project_dir.join(n)).find(|p| {
        std::fs::symlink_metadata(p)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false)
    })
}

/// The override file's YAML: `services:` then, for each service, `image: <reference>`.
/// Names and references are YAML double-quoted scalars, so no value can break the syntax.
pub fn override_yaml(images: &BTreeMap<String, String>) -> String {
    let mut out =
        String::from("# Written by usb-update: the images it loaded for this app's services.\n");
    if images.is_empty() {
        out.push_str("services: {}\n");
    } else {
        out.push_str("services:\n");
    }
    for (service, image) in images {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "  {}:\n    image: {}", quote(service), quote(image));
    }
    out
}

/// A YAML double-quoted scalar (escapes as in JSON, which YAML's double quotes accept).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Whether `program` (a path, or a name looked up in PATH) is a Python script.
fn python_script(program: &Path) -> bool {
    let path = if program.components().count() > 1 {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
    };
    let mut head = [0u8; 128];
    let n = path
        .and_then(|p| std::fs::File::open(p).ok())
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head).ok())
        .unwrap_or(0);
    let first = head[..n].split(|&b| b == b'\n').next().unwrap_or_default();
    first.starts_with(b"#!") && first.windows(6).any(|w| w == b"python")
}

const HTTP_TIMEOUT_VAR: &str = "COMPOSE_HTTP_TIMEOUT";
const HTTP_TIMEOUT_SECS: &str = "600";

/// How to run compose: `docker compose` (the v2 plugin) or a standalone `docker-compose`.
#[derive(Debug, Clone)]
pub struct Cli {
    program: PathBuf,
    /// `docker compose ...` rather than `docker-compose ...`.
    plugin: bool,
    /// `version --short` output, e.g. "1.29.2" or "2.24.6".
    version: String,
    /// Compose 2 and later: `up --pull never` exists (v1 has no way to forbid a pull).
    v2: bool,
    docker_host: String,
}

impl Cli {
    /// `configured` is `[pacman] docker_compose_bin` (None or empty: not set). A path whose
    /// file name is `docker` means the v2 plugin; anything else is a standalone
    /// `docker-compose`. Not set: `docker compose` if `docker compose version` works, else
    /// `docker-compose` from PATH. `docker_host` is exported as DOCKER_HOST to every run.
    pub fn find(configured: Option<&Path>, docker_host: &str) -> anyhow::Result<Cli> {
        let probe = |program: &Path, plugin: bool| -> anyhow::Result<Cli> {
            let mut cli = Cli {
                program: program.to_path_buf(),
                plugin,
                version: String::new(),
                v2: plugin,
                docker_host: docker_host.to_string(),
            };
            // Compose v1 packaged as a Python script (Debian's) takes 1 to 3 s to start, at
            // every run; v2 is a Go binary, so a Python script is v1 without asking it.
            if !plugin && python_script(program) {
                cli.version = "1.x, a Python script".into();
                return Ok(cli);
            }
            let out = cli.run(None, &["version", "--short"])?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            cli.version = stdout.lines().next().unwrap_or("").trim().to_string();
            // A standalone binary may be compose v2 too (the plugin also ships as one).
            let major = cli.version.trim_start_matches('v').split('.').next();
            if let Some(major) = major.and_then(|m| m.parse::<u32>().ok()) {
                cli.v2 = major >= 2;
            }
            Ok(cli)
        };
        let cli = match configured.filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => {
                let plugin = path.file_name().is_some_and(|n| n == "docker");
                probe(path, plugin).context("[pacman] docker_compose_bin")?
            }
            None => match probe(Path::new("docker"), true) {
                Ok(cli) => cli,
                Err(v2) => probe(Path::new("docker-compose"), false)
                    .map_err(|v1| anyhow!("no Docker Compose found: tried {v2:#}; tried {v1:#}"))?,
            },
        };
        // Which compose runs the apps decides how `up` behaves (v1 cannot forbid a pull).
        tracing::debug!("compose: {}", cli.describe());
        Ok(cli)
    }

    /// Start the project in `project_dir` with its compose file and [`OVERRIDE_FILE`] if
    /// present: `up -d --remove-orphans --no-build`, and `--pull never` for v2. Compose v1
    /// has no way to forbid a pull: a missing image makes it try the registry (and fail on
    /// an offline device), which is why every image is loaded and mapped by the override
    /// before `up`. A failure carries compose's last stderr lines.
    pub fn up(&self, project_dir: &Path, project: &str) -> anyhow::Result<()> {
        let mut args = self.project_args(project_dir, project)?;
        args.extend(["up", "-d", "--remove-orphans", "--no-build"].map(OsString::from));
        if self.v2 {
            args.extend(["--pull", "never"].map(OsString::from));
        }
        self.run(Some(project_dir), &args)
            .map(drop)
            .with_context(|| format!("starting app {project} in {}", project_dir.display()))
    }

    /// Stop and remove the project's containers and networks: `down --remove-orphans`
    /// (volumes are kept: they hold the app's data). A missing project directory is Ok:
    /// there is nothing of ours to stop; a directory without a compose file is an error
    /// (compose v1 cannot name a project's containers without one).
    pub fn down(&self, project_dir: &Path, project: &str) -> anyhow::Result<()> {
        if !project_dir.exists() {
            return Ok(());
        }
        let mut args = self.project_args(project_dir, project)?;
        args.extend(["down", "--remove-orphans"].map(OsString::from));
        self.run(Some(project_dir), &args)
            .map(drop)
            .with_context(|| format!("stopping app {project} in {}", project_dir.display()))
    }

    /// For logs, e.g. "docker-compose 1.29.2 (v1)".
    pub fn describe(&self) -> String {
        let name = if self.plugin {
            format!("{} compose", self.program.display())
        } else {
            self.program.display().to_string()
        };
        let generation = if self.v2 { "v2" } else { "v1" };
        format!("{name} {} ({generation})", self.version)
    }

    /// `-p <project> -f <compose file> [-f OVERRIDE_FILE]`.
    fn project_args(&self, project_dir: &Path, project: &str) -> anyhow::Result<Vec<OsString>> {
        let file = find_file(project_dir).ok_or_else(|| {
            anyhow!(
                "no compose file in {} (looked for {})",
                project_dir.display(),
                FILE_NAMES.join(", ")
            )
        })?;
        let mut args: Vec<OsString> = vec!["-p".into(), project.into(), "-f".into(), file.into()];
        let over = project_dir.join(OVERRIDE_FILE);
        if std::fs::symlink_metadata(&over).is_ok_and(|m| m.is_file()) {
            args.extend(["-f".into(), over.into()]);
        }
        Ok(args)
    }

    /// Run compose with `args`; a failure carries the command and compose's last words.
    fn run<S: AsRef<OsStr>>(&self, dir: Option<&Path>, args: &[S]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.program);
        if self.plugin {
            cmd.arg("compose");
        }
        cmd.args(args)
            .env("DOCKER_HOST", &self.docker_host)
            // Nothing may wait for a terminal or prompt (v1 asks before some removals).
            .stdin(Stdio::null());
        // Compose v1 gives up on an engine call after COMPOSE_HTTP_TIMEOUT (60 s unless set):
        // a slow device creating containers exceeded it in the system test, and a good update
        // was then rolled back as an app failure. v2 ignores it; a value the device sets wins.
        if std::env::var_os(HTTP_TIMEOUT_VAR).is_none() {
            cmd.env(HTTP_TIMEOUT_VAR, HTTP_TIMEOUT_SECS);
        }
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let shown = format!(
            "`{}{} {}`",
            self.program.display(),
            if self.plugin { " compose" } else { "" },
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {shown}"))?;
        if out.status.success() {
            return Ok(out);
        }
        Err(anyhow!(
            "{shown} failed ({}): {}",
            out.status,
            last_lines(&out.stderr, &out.stdout)
        ))
    }
}

/// The last few non-empty lines of stderr (stdout if stderr is empty), joined into one line
/// and bounded, since the error ends up in a one-line report.
fn last_lines(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.iter().all(u8::is_ascii_whitespace) {
        stdout
    } else {
        stderr
    });
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(ERROR_LINES)..].join(" | ");
    let chars: Vec<char> = joined.chars().collect();
    match chars.len() {
        0 => "no output".to_string(),
        n if n > 1000 => format!("...{}", chars[n - 1000..].iter().collect::<String>()),
        _ => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_version_3_file() {
        let yaml = format!(
            "version: '3.8'\n\
             services:\n  \
               web:\n    image: hub.foundries.io/f/web@sha256:{HEX}\n    ports: ['80:80']\n  \
               builder:\n    build: ./src\n    image: local/builder:dev\n  \
               nothing:\n    command: sleep 1\n\
             volumes:\n  data: {{}}\n"
        );
        let f = ComposeFile::parse(yaml.as_bytes(), "docker-compose.yml").unwrap();
        assert_eq!(f.services.len(), 3);
        let web = &f.services["web"];
        assert_eq!(
            web.image.as_deref(),
            Some(&*format!("hub.foundries.io/f/web@sha256:{HEX}"))
        );
        assert!(!web.has_build);
        assert!(f.services["builder"].has_build);
        assert_eq!(
            f.services["builder"].image.as_deref(),
            Some("local/builder:dev")
        );
        assert!(f.services["nothing"].image.is_none());
    }

    #[test]
    fn parse_compose_spec_with_extensions_and_anchors() {
        let yaml = format!(
            "x-common: &common\n  image: hub.foundries.io/f/base@sha256:{HEX}\n  restart: always\n\
             x-labels: {{a: b}}\n\
             name: ignored\n\
             services:\n  \
               one:\n    <<: *common\n    environment: [A=1]\n  \
               two:\n    <<: *common\n    image: hub.foundries.io/f/two:tag\n  \
               three: &three\n    image: busybox\n    build:\n      context: .\n  \
               four: *three\n"
        );
        let f = ComposeFile::parse(yaml.as_bytes(), "compose.yaml").unwrap();
        let image = |s: &str| f.services[s].image.clone();
        assert_eq!(
            image("one"),
            Some(format!("hub.foundries.io/f/base@sha256:{HEX}"))
        );
        assert_eq!(image("two").as_deref(), Some("hub.foundries.io/f/two:tag"));
        assert_eq!(image("four").as_deref(), Some("busybox"));
        assert!(f.services["four"].has_build);
        assert_eq!(f.services.len(), 4);
    }

    #[test]
    fn parse_errors_name_the_file() {
        let cases: &[(&[u8], &str)] = &[
            (b"- a\n- b\n", "not a mapping"),
            (b"version: '3'\n", "no `services`"),
            (b"services:\n", "no `services`"),
            (b"services: [a, b]\n", "`services` is not a mapping"),
            (
                b"services:\n  web: busybox\n",
                "service \"web\" is not a mapping",
            ),
            (
                b"services:\n  web:\n    image: [a]\n",
                "`image` is not a string",
            ),
            (b"services: {a: 1\n", "not valid YAML"),
            (b"a: 1\n---\nb: 2\n", "not valid YAML"),
        ];
        for (yaml, fragment) in cases {
            let err = format!(
                "{:#}",
                ComposeFile::parse(yaml, "apps/x/compose.yml").unwrap_err()
            );
            assert!(err.starts_with("apps/x/compose.yml: "), "{err}");
            assert!(err.contains(fragment), "{fragment:?} not in {err:?}");
        }
        let big = format!("services: {{}}\n#{}\n", "x".repeat(MAX_COMPOSE_FILE));
        let err = ComposeFile::parse(big.as_bytes(), "big.yml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the 1048576 byte limit"), "{err}");
    }

    #[test]
    fn pinned_references() {
        let good = format!("hub.foundries.io/f/app@sha256:{HEX}");
        assert_eq!(pinned(&good), Some(("hub.foundries.io/f/app", HEX)));
        let tagged = format!("busybox:1.36@sha256:{HEX}");
        assert_eq!(pinned(&tagged), Some(("busybox:1.36", HEX)));
        let upper = format!("a@sha256:{}", HEX.to_uppercase());
        let bad = [
            "busybox".to_string(),
            "busybox:latest".to_string(),
            format!("a@sha512:{HEX}"),
            format!("a@sha256:{}", &HEX[1..]),
            format!("a@sha256:{HEX}0"),
            format!("a@sha256:{}g", &HEX[1..]),
            upper,
            format!("@sha256:{HEX}"),
            format!("a@b@sha256:{HEX}"),
            format!("a b@sha256:{HEX}"),
        ];
        for r in &bad {
            assert_eq!(pinned(r), None, "{r}");
        }
    }

    #[test]
    fn override_yaml_round_trips() {
        let images = BTreeMap::from([
            ("web".to_string(), "usb-update/web:loaded".to_string()),
            (
                "odd: \"name\"\n#".to_string(),
                "x/y:1 # not a comment\\".to_string(),
            ),
            ("yes".to_string(), "null".to_string()),
        ]);
        let yaml = override_yaml(&images);
        let f = ComposeFile::parse(yaml.as_bytes(), OVERRIDE_FILE).unwrap();
        let got: BTreeMap<String, String> = f
            .services
            .into_iter()
            .map(|(k, v)| (k, v.image.unwrap()))
            .collect();
        assert_eq!(got, images);
        let empty = override_yaml(&BTreeMap::new());
        assert!(ComposeFile::parse(empty.as_bytes(), "e")
            .unwrap()
            .services
            .is_empty());
    }

    #[test]
    fn find_file_prefers_compose_order_and_skips_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(find_file(d), None);
        std::fs::write(d.join("docker-compose.yml"), "services: {}\n").unwrap();
        assert_eq!(find_file(d), Some(d.join("docker-compose.yml")));
        std::fs::write(d.join("docker-compose.yaml"), "services: {}\n").unwrap();
        assert_eq!(find_file(d), Some(d.join("docker-compose.yaml")));
        std::fs::create_dir(d.join("compose.yml")).unwrap();
        assert_eq!(
            find_file(d),
            Some(d.join("docker-compose.yaml")),
            "a directory"
        );
        std::os::unix::fs::symlink("docker-compose.yml", d.join("compose.yaml")).unwrap();
        assert_eq!(
            find_file(d),
            Some(d.join("docker-compose.yaml")),
            "a symlink"
        );
        std::fs::remove_dir(d.join("compose.yml")).unwrap();
        std::fs::write(d.join("compose.yml"), "services: {}\n").unwrap();
        assert_eq!(find_file(d), Some(d.join("compose.yml")));
    }

    #[test]
    fn find_with_a_configured_missing_binary_fails() {
        for p in ["/nonexistent/docker-compose", "/nonexistent/docker"] {
            let err = format!(
                "{:#}",
                Cli::find(Some(Path::new(p)), "unix:///x").unwrap_err()
            );
            assert!(
                err.contains("docker_compose_bin") && err.contains(p),
                "{err}"
            );
        }
    }

    /// A fake compose: answers `version --short` with `version`, logs every other call
    /// (DOCKER_HOST, cwd, args) to `log`, and fails with three stderr lines if `fail` exists.
    fn fake(dir: &Path, file_name: &str, version: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (bin, log, fail) = (dir.join(file_name), dir.join("log"), dir.join("fail"));
        let skip = if file_name == "docker" { "shift\n" } else { "" };
        let script = format!(
            "#!/bin/sh\n{skip}if [ \"$1 $2\" = 'version --short' ]; then echo {version}; exit 0; fi\n\
             echo \"$DOCKER_HOST|$PWD|$*\" >> {log}\n\
             if [ -e {fail} ]; then echo 'Creating app_web_1 ...' >&2; echo 'ERROR: pull access denied' >&2; echo >&2; echo 'for hub.foundries.io/f/app' >&2; exit 1; fi\n",
            log = log.display(),
            fail = fail.display()
        );
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        (bin, log, fail)
    }

    #[test]
    fn python_v1_is_not_started_to_tell_its_version() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("docker-compose");
        let ran = tmp.path().join("ran");
        let script = format!("#!/usr/bin/env python3\nopen('{}', 'w')\n", ran.display());
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = Cli::find(Some(&bin), "unix:///run/d.sock").unwrap();
        assert_eq!(
            cli.describe(),
            format!("{} 1.x, a Python script (v1)", bin.display())
        );
        assert!(!ran.exists(), "the script was run");
        // A shell script (or a binary) is asked: it may be v2.
        let (sh, _, _) = fake(tmp.path(), "compose-sh", "2.24.6");
        let cli = Cli::find(Some(&sh), "unix:///run/d.sock").unwrap();
        assert_eq!(cli.describe(), format!("{} 2.24.6 (v2)", sh.display()));
    }

    #[test]
    fn v1_up_and_down_arguments() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin, log, fail) = fake(tmp.path(), "docker-compose", "1.29.2");
        let cli = Cli::find(Some(&bin), "unix:///run/d.sock").unwrap();
        assert_eq!(cli.describe(), format!("{} 1.29.2 (v1)", bin.display()));
        let proj = tmp.path().join("app");
        std::fs::create_dir(&proj).unwrap();
        let err = format!("{:#}", cli.up(&proj, "app").unwrap_err());
        assert!(
            err.contains("no compose file in") && err.contains("compose.yaml"),
            "{err}"
        );
        std::fs::write(proj.join("docker-compose.yml"), "services: {}\n").unwrap();
        cli.up(&proj, "app").unwrap();
        std::fs::write(proj.join(OVERRIDE_FILE), override_yaml(&BTreeMap::new())).unwrap();
        cli.up(&proj, "app").unwrap();
        cli.down(&proj, "app").unwrap();
        cli.down(&tmp.path().join("gone"), "gone").unwrap();
        let (p, f) = (proj.display(), proj.join("docker-compose.yml"));
        let o = proj.join(OVERRIDE_FILE);
        let (f, o) = (f.display(), o.display());
        let want = format!(
            "unix:///run/d.sock|{p}|-p app -f {f} up -d --remove-orphans --no-build\n\
             unix:///run/d.sock|{p}|-p app -f {f} -f {o} up -d --remove-orphans --no-build\n\
             unix:///run/d.sock|{p}|-p app -f {f} -f {o} down --remove-orphans\n"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), want);

        std::fs::write(&fail, "").unwrap();
        let err = format!("{:#}", cli.up(&proj, "app").unwrap_err());
        assert!(
            err.starts_with(&format!("starting app app in {p}: `{}", bin.display())),
            "{err}"
        );
        assert!(
            err.ends_with(
                "Creating app_web_1 ... | ERROR: pull access denied | for hub.foundries.io/f/app"
            ),
            "{err}"
        );
    }

    #[test]
    fn v1_gets_a_long_engine_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin, log) = (tmp.path().join("docker-compose"), tmp.path().join("log"));
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then echo 1.29.2; exit 0; fi\n\
             echo \"$COMPOSE_HTTP_TIMEOUT\" > {}\n",
            log.display()
        );
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(tmp.path().join("compose.yaml"), "services: {}\n").unwrap();
        let cli = Cli::find(Some(&bin), "unix:///d").unwrap();
        cli.up(tmp.path(), "p").unwrap();
        let want = std::env::var(HTTP_TIMEOUT_VAR).unwrap_or(HTTP_TIMEOUT_SECS.into());
        assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), want);
    }

    #[test]
    fn v2_plugin_never_pulls() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin, log, _) = fake(tmp.path(), "docker", "v2.24.6");
        let cli = Cli::find(Some(&bin), "unix:///d").unwrap();
        assert_eq!(
            cli.describe(),
            format!("{} compose v2.24.6 (v2)", bin.display())
        );
        std::fs::write(tmp.path().join("compose.yaml"), "services: {}\n").unwrap();
        cli.up(tmp.path(), "p").unwrap();
        let f = tmp.path().join("compose.yaml");
        let want = format!(
            "unix:///d|{}|-p p -f {} up -d --remove-orphans --no-build --pull never\n",
            tmp.path().display(),
            f.display()
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), want);
        // A standalone binary that is compose v2 gets `--pull never` too.
        let (bin, _, _) = fake(tmp.path(), "docker-compose", "2.24.6");
        let cli = Cli::find(Some(&bin), "unix:///d").unwrap();
        assert_eq!(cli.describe(), format!("{} 2.24.6 (v2)", bin.display()));
    }
}
