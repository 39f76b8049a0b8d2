//! Compose apps (`[pacman] type = "ostree+compose_apps"`): the app store under
//! `reset_apps_root`, images loaded into the Docker engine, compose projects under
//! `compose_apps_root`, their health, and the restore of the previous apps.
//!
//! - [`content`]: an app's manifest chain, verified blob by blob;
//! - [`store`]: blobs copied from the bundle into the device's store, hashed while copied;
//! - [`copy`]: one blob's copy, driven by the store or read by an image load;
//! - [`docker`]: the engine API (image load from blobs, containers, health);
//! - [`compose`]: compose files (services and pinned images) and the compose CLI;
//! - [`archive`]: safe extraction of an app's compose archive into its project directory;
//! - [`previous`]: the record of the apps that ran before, for a rollback;
//! - [`health`]: waiting until started apps are up, or saying why they are not.
//!
//! `install` calls [`prepare`] (nothing runs differently yet: blobs copied, images loaded),
//! `run` calls [`start`], and on failure [`restore`]; [`prune`] only after success.

pub mod archive;
pub mod compose;
pub mod content;
mod copy;
pub mod docker;
pub mod health;
pub mod previous;
mod settle;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context as _;

use crate::config::{Config, Pacman};
use crate::core::bundle::{valid_name, Bundle};
use crate::error::{Code, Error, Result};
use crate::overlap::Cancel;
use crate::policy::AppsPolicy;
use compose::Cli;
use content::{App, Image};
use copy::{blobs_on_load, Blobs, StoreFiles, Tee};
use docker::{Engine, ImageToLoad};
use previous::Record;
use store::{FetchProgress, FetchStats, Store};

/// Why started apps are not up: the update failed (as opposed to an error that stopped us
/// from trying, such as an unreachable engine, which leaves the work pending).
pub(crate) type Verdict<T = ()> = std::result::Result<T, String>;

/// The compose project of an app: compose itself keeps only `[a-z0-9_-]` of a name.
pub(crate) fn project_name(app: &str) -> String {
    app.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// App project directories present under `compose_apps_root`.
pub(crate) fn project_dirs(pacman: &Pacman) -> Result<Vec<String>> {
    let root = &pacman.compose_apps_root;
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("listing {}: {e}", root.display()).into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if valid_name(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// What `install` did for the apps.
#[derive(Debug, Default)]
pub struct Prepared {
    pub apps: usize,
    pub fetch: FetchStats,
    pub images_loaded: usize,
    /// The ids of the images loaded (the engine had none of them): what [`undo`] removes.
    pub loaded: Vec<String>,
}

/// `install`'s share: verify the target's apps on the stick down to every blob, check their
/// compose archives, copy the blobs into the store, load the images, and record the apps
/// running now. Containers are not touched: that is `run`'s job.
pub fn prepare(
    cfg: &Config,
    policy: &AppsPolicy,
    bundle: &Bundle,
    target_apps: &BTreeMap<String, String>,
    running_apps: &BTreeMap<String, String>,
    progress: &(dyn Fn(FetchProgress) + Sync),
    cancel: &Cancel,
) -> Result<Prepared> {
    let prologue = crate::failpoint::unit();
    let engine = Engine::connect()?;
    let verify = crate::phase::start("verify");
    let apps = target_apps
        .iter()
        .map(|(name, uri)| content::resolve(bundle, name, uri))
        .collect::<Result<Vec<_>>>()?;
    let state_dir = cfg.state_dir();
    for app in &apps {
        check_archive(bundle, app, &std::env::temp_dir())?;
    }
    verify.done();
    drop(prologue);
    let copy = crate::phase::start("blob-copy");
    let store = Store::new(&cfg.pacman.reset_apps_root);
    // The blobs of the images the engine lacks are copied into the store by the load, as
    // it reads them: the stick is read once. The others are copied now.
    let on_load = blobs_on_load(&engine, &store, &apps)?;
    let skip = on_load.values().map(|b| b.digest.clone()).collect();
    let later: u64 = on_load.values().filter_map(|b| b.size).sum();
    let fetch_progress = |p: FetchProgress| {
        progress(FetchProgress {
            done: p.done,
            total: p.total + later,
        })
    };
    let fetch = store.fetch(
        bundle,
        &apps,
        &skip,
        policy.parallel_copies,
        &fetch_progress,
        cancel,
    )?;
    copy.done();
    let mut prepared = Prepared {
        apps: apps.len(),
        fetch,
        images_loaded: 0,
        loaded: Vec::new(),
    };
    let load = crate::phase::start("image-load");
    let before = prepared.fetch.bytes;
    let through = Tee::new(
        &store,
        bundle,
        on_load,
        cancel,
        progress,
        (before, before + later),
    )?;
    let loaded = load_images(
        &engine,
        &store,
        &apps,
        (cancel, policy.parallel_copies),
        &mut prepared.loaded,
        &through,
    )
    .and_then(|n| through.rest().map(|()| n));
    let (copied, settled) = through.finish();
    let loaded = loaded.and_then(|n| settled.map(|()| n));
    // What the load copied is the fetch's too (for the summary, and for undo).
    for (hex, bytes) in copied {
        prepared.fetch.added.push(hex);
        prepared.fetch.copied += 1;
        prepared.fetch.bytes += bytes;
    }
    let recorded = loaded.and_then(|n| {
        prepared.images_loaded = n;
        load.done();
        crate::failpoint::hit("install-images-loaded");
        cancel.check("recording the apps that run")?;
        let _unit = crate::failpoint::unit();
        store.record_versions(&apps, &mut prepared.fetch)?;
        // Every blob and app version is in the store now.
        crate::failpoint::hit("install-apps-fetched");
        // Copying and loading change no container: the record still says what runs now.
        previous::take(&cfg.pacman, &engine, running_apps, &state_dir)
    });
    if let Err(e) = recorded {
        undo_with(&engine, &store, &prepared);
        return Err(e);
    }
    crate::failpoint::hit("install-previous-apps-recorded");
    Ok(prepared)
}

/// Take back what [`prepare`] did (the other half of the install failed after it): the
/// images it loaded and the blobs and app versions it added. Best effort, logged.
pub fn undo(cfg: &Config, prepared: &Prepared) {
    let store = Store::new(&cfg.pacman.reset_apps_root);
    match Engine::connect() {
        Ok(engine) => undo_with(&engine, &store, prepared),
        Err(e) => {
            tracing::warn!("the images loaded stay: {}", e.one_line());
            store.undo(&prepared.fetch);
        }
    }
}

fn undo_with(engine: &Engine, store: &Store, prepared: &Prepared) {
    for id in &prepared.loaded {
        if let Err(e) = engine.remove_image(id) {
            tracing::warn!("removing image {id}: {}", e.one_line());
        }
    }
    store.undo(&prepared.fetch);
}

/// Unpack the archive once into a scratch directory, so a hostile one is refused by
/// `install` with nothing changed rather than by `run` after the reboot.
fn check_archive(bundle: &Bundle, app: &App, scratch_in: &Path) -> Result<()> {
    use content::BlobSource as _;
    fs::create_dir_all(scratch_in).with_context(|| format!("creating {}", scratch_in.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".archive-check-")
        .tempdir_in(scratch_in)
        .with_context(|| format!("creating a scratch directory in {}", scratch_in.display()))?;
    let Some((file, _)) = bundle.open_blob(&app.archive.digest)? else {
        return Err(Error::content_missing(format!(
            "app {}: compose archive {} is not in the bundle",
            app.name, app.archive.digest
        )));
    };
    archive::extract_tgz(file, &scratch.path().join("p"), &archive::LIMITS).map_err(|e| {
        Error::copy(format!(
            "app {}: compose archive {}: {e:#}",
            app.name, app.archive.digest
        ))
    })?;
    Ok(())
}

/// Images loaded at once from the store (no stick to spare): what the engine unpacks best
/// on two cores.
const STORE_LOADS_AT_ONCE: usize = 3;

/// Load every image of `apps` the engine lacks, `at_once` at a time, its blobs read
/// through `blobs`; tag the others. The ids of those loaded go into `ids`.
fn load_images(
    engine: &Engine,
    store: &Store,
    apps: &[App],
    (cancel, at_once): (&Cancel, usize),
    ids: &mut Vec<String>,
    blobs: &dyn Blobs,
) -> Result<usize> {
    let mut seen = BTreeSet::new();
    let (mut todo, mut also) = (Vec::new(), Vec::new());
    for image in apps.iter().flat_map(|a| &a.images) {
        cancel.check(&format!("loading image {}", image.tag()))?;
        // Two repos can hold the same image (same config): loaded once, tagged for each.
        if !seen.insert(image.tag()) {
            continue;
        }
        if engine.has_image(&image.id())? {
            engine.tag(&image.id(), &image.tag())?;
        } else if todo.iter().all(|i: &&Image| i.id() != image.id()) {
            todo.push(image);
        } else {
            also.push(image);
        }
    }
    // The engine unpacks one image while the next streams in: on two cores, three
    // `docker load`s at once take about 0.6x the time of one after another.
    let next = AtomicUsize::new(0);
    let loaded = Mutex::new(Vec::new());
    let failed = Mutex::new(None::<Error>);
    let work = || {
        while failed.lock().is_ok_and(|f| f.is_none()) {
            let Some(image) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                break;
            };
            let outcome = load_image(engine, store, image, cancel, blobs);
            // Should the engine have kept anything of a failed load, it goes on undo.
            if outcome.is_ok() || engine.has_image(&image.id()).unwrap_or(false) {
                if let Ok(mut loaded) = loaded.lock() {
                    loaded.push(image.id());
                }
            }
            if let (Err(e), Ok(mut failed)) = (outcome, failed.lock()) {
                failed.get_or_insert(e);
            }
        }
    };
    let stream = crate::failpoint::current();
    std::thread::scope(|s| {
        for n in 1..at_once.min(todo.len()) {
            let helper = std::thread::Builder::new()
                .name(format!("image-load-{n}"))
                .spawn_scoped(s, || {
                    let _worker = crate::failpoint::join(stream);
                    work()
                });
            if let Err(e) = helper {
                tracing::warn!("loading images on fewer threads: {e}");
                break;
            }
        }
        work();
    });
    let loaded = loaded.into_inner().unwrap_or_default();
    let count = loaded.len();
    ids.extend(loaded);
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    for image in also {
        engine.tag(&image.id(), &image.tag())?;
    }
    Ok(count)
}

/// One image into the engine, its blobs read through `blobs`.
fn load_image(
    engine: &Engine,
    store: &Store,
    image: &Image,
    cancel: &Cancel,
    blobs: &dyn Blobs,
) -> Result<()> {
    cancel.check(&format!("loading image {}", image.tag()))?;
    // Before the first byte of the image is read (from the stick, when the load copies).
    crate::failpoint::pause("load-image");
    engine.load_beside(
        &ImageToLoad {
            tag: image.tag(),
            config_digest: image.config.digest.clone(),
            config: store.blob_path(&image.config.digest),
            layers: image
                .layers
                .iter()
                .map(|l| store.blob_path(&l.digest))
                .collect(),
        },
        cancel,
        blobs,
    )
}

/// Put `app`'s project in place from the store: unpacked beside the live directory, with
/// the override mapping each service to its loaded image, then swapped in.
fn install_project(pacman: &Pacman, store: &Store, app: &App) -> anyhow::Result<PathBuf> {
    let root = &pacman.compose_apps_root;
    let staging = root.join(format!(".{}.new", app.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let archive = store.blob_path(&app.archive.digest);
    let file =
        fs::File::open(&archive).with_context(|| format!("opening {}", archive.display()))?;
    archive::extract_tgz(file, &staging, &archive::LIMITS)
        .with_context(|| format!("app {}: unpacking {}", app.name, archive.display()))?;
    write_override(&staging, &app.service_tags())?;
    swap_in(root, &app.name, &staging)
}

fn write_override(project: &Path, images: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let path = project.join(compose::OVERRIDE_FILE);
    crate::durable::replace(&path, compose::override_yaml(images).as_bytes())
}

/// Replace `root/<name>` by `staging`; the old one goes only once the new one is in place.
fn swap_in(root: &Path, name: &str, staging: &Path) -> anyhow::Result<PathBuf> {
    let live = root.join(name);
    let old = root.join(format!(".{name}.old"));
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    if live.exists() {
        fs::rename(&live, &old).with_context(|| format!("moving {} aside", live.display()))?;
    }
    fs::rename(staging, &live).with_context(|| format!("putting {} in place", live.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(live)
}

fn compose_cli(pacman: &Pacman, engine: &Engine) -> Result<Cli> {
    let configured = pacman
        .docker_compose_bin
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty());
    Ok(Cli::find(configured, engine.host())?)
}

/// Stop and remove the projects of apps not in `keep`.
fn stop_others(pacman: &Pacman, cli: &Cli, keep: &BTreeSet<&str>) -> Verdict {
    let dirs = project_dirs(pacman).map_err(|e| e.one_line())?;
    for name in dirs.iter().filter(|n| !keep.contains(n.as_str())) {
        let dir = pacman.compose_apps_root.join(name);
        cli.down(&dir, &project_name(name))
            .map_err(|e| format!("stopping app {name}: {e:#}"))?;
        fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        tracing::info!("app {name} is not in the target: stopped and removed");
    }
    Ok(())
}

/// Errors that stop `run` from trying (the work stays pending) as opposed to app failures.
fn infra(e: Error) -> Result<Verdict> {
    match e.code() {
        Code::DockerUnavailable => Err(e),
        _ => Ok(Err(e.one_line())),
    }
}

/// `run`'s share: the target's apps up from the store, the others stopped, then the wait
/// until every service is up. `Err`: the engine could not be used, nothing was decided.
pub fn start(
    cfg: &Config,
    policy: &AppsPolicy,
    target_apps: &BTreeMap<String, String>,
) -> Result<Verdict> {
    let engine = Engine::connect()?;
    let cli = compose_cli(&cfg.pacman, &engine)?;
    let store = Store::new(&cfg.pacman.reset_apps_root);
    let mut apps = Vec::new();
    for (name, uri) in target_apps {
        match content::resolve(&store, name, uri) {
            Ok(a) => apps.push(a),
            Err(e) => return Ok(Err(format!("app {name}: {}", e.one_line()))),
        }
    }
    let never = (Cancel::never(), STORE_LOADS_AT_ONCE);
    if let Err(e) = load_images(&engine, &store, &apps, never, &mut Vec::new(), &StoreFiles) {
        return infra(e);
    }
    let keep: BTreeSet<&str> = target_apps.keys().map(String::as_str).collect();
    if let Err(why) = stop_others(&cfg.pacman, &cli, &keep) {
        return Ok(Err(why));
    }
    // Each app's compose runs beside the others': compose v1 is a Python program whose
    // start alone takes most of a second of CPU, and the engine creates one app's network
    // and containers while another's compose starts.
    let stream = crate::failpoint::current();
    let ups: Vec<Result<Verdict<health::Expected>>> = std::thread::scope(|s| {
        let up = |app| {
            let _worker = crate::failpoint::join(stream);
            up_one(&cfg.pacman, &engine, &cli, &store, app)
        };
        let started: Vec<_> = (apps.iter())
            .map(|app| {
                std::thread::Builder::new()
                    .name(format!("up-{}", app.name))
                    .spawn_scoped(s, move || up(app))
                    .map_err(|_| app)
            })
            .collect();
        (started.into_iter())
            .map(|t| match t {
                Ok(t) => t.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("starting an app: its thread panicked").into())
                }),
                // No thread to spare: on this one.
                Err(app) => up(app),
            })
            .collect()
    });
    let mut expected = Vec::new();
    for up in ups {
        match up? {
            Ok(e) => expected.push(e),
            Err(why) => return Ok(Err(why)),
        }
    }
    crate::failpoint::hit("run-apps-up");
    health::wait(&engine, &expected, policy)
}

/// One app's project in place and `compose up`: what [`health::wait`] then waits for, or
/// why the app failed. `Err`: the engine went away.
fn up_one(
    pacman: &Pacman,
    engine: &Engine,
    cli: &Cli,
    store: &Store,
    app: &App,
) -> Result<Verdict<health::Expected>> {
    let dir = match install_project(pacman, store, app) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    crate::failpoint::pause("compose-up");
    if let Err(e) = cli.up(&dir, &project_name(&app.name)) {
        // The engine may have gone away under compose, and come back (systemd restarts
        // it): not the app's fault. Still away: 52, the work stays pending; back: `up`
        // once more (it is idempotent) before calling the app failed and rolling back.
        Engine::connect_to(engine.host())?;
        tracing::warn!(
            "app {}: {e:#}: the engine answers, trying once more",
            app.name
        );
        if let Err(e) = cli.up(&dir, &project_name(&app.name)) {
            return Ok(Err(format!("app {}: {e:#}", app.name)));
        }
    }
    Ok(Ok(health::Expected {
        app: app.name.clone(),
        project: project_name(&app.name),
        services: app.compose.services.keys().cloned().collect(),
    }))
}

/// Bring back the apps of `record`: from the store when their URI is known, else from the
/// copy of their project taken at install, with the images their containers ran.
pub(crate) fn restore(cfg: &Config, policy: &AppsPolicy, record: &Record) -> Result<Verdict> {
    let engine = Engine::connect()?;
    let cli = compose_cli(&cfg.pacman, &engine)?;
    let store = Store::new(&cfg.pacman.reset_apps_root);
    let keep: BTreeSet<&str> = record.apps.iter().map(|a| a.name.as_str()).collect();
    if let Err(why) = stop_others(&cfg.pacman, &cli, &keep) {
        return Ok(Err(why));
    }
    let state_dir = cfg.state_dir();
    let mut expected = Vec::new();
    for rec in &record.apps {
        let from_store = rec
            .uri
            .as_deref()
            .and_then(|uri| content::resolve(&store, &rec.name, uri).ok());
        let (dir, services) = match from_store {
            Some(app) => {
                let one = std::slice::from_ref(&app);
                let (never, ids) = ((Cancel::never(), STORE_LOADS_AT_ONCE), &mut Vec::new());
                if let Err(e) = load_images(&engine, &store, one, never, ids, &StoreFiles) {
                    return infra(e);
                }
                match install_project(&cfg.pacman, &store, &app) {
                    Ok(d) => (d, app.compose.services.keys().cloned().collect()),
                    Err(e) => return Ok(Err(format!("{e:#}"))),
                }
            }
            None if rec.backup => match restore_backup(&cfg.pacman, &state_dir, rec) {
                Ok(d) => (d, rec.images.keys().cloned().collect()),
                Err(e) => return Ok(Err(format!("app {}: {e:#}", rec.name))),
            },
            None => {
                return Ok(Err(format!(
                    "app {}: neither in the store nor kept at install",
                    rec.name
                )))
            }
        };
        if let Err(e) = cli.up(&dir, &project_name(&rec.name)) {
            return Ok(Err(format!("app {}: {e:#}", rec.name)));
        }
        expected.push(health::Expected {
            app: rec.name.clone(),
            project: project_name(&rec.name),
            services,
        });
    }
    health::wait(&engine, &expected, policy)
}

fn restore_backup(
    pacman: &Pacman,
    state_dir: &Path,
    rec: &previous::RecordedApp,
) -> anyhow::Result<PathBuf> {
    let root = &pacman.compose_apps_root;
    let staging = root.join(format!(".{}.new", rec.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    previous::copy_tree(&previous::backup_dir(state_dir, &rec.name), &staging)?;
    if !rec.images.is_empty() {
        write_override(&staging, &rec.images)?;
    }
    swap_in(root, &rec.name, &staging)
}

/// After a successful update: drop store versions and blobs the target does not use, and
/// the images of the apps that went (images still used by a container stay).
pub fn prune(
    cfg: &Config,
    target_apps: &BTreeMap<String, String>,
    record: Option<&Record>,
) -> Result<()> {
    let engine = Engine::connect()?;
    let store = Store::new(&cfg.pacman.reset_apps_root);
    let keep = target_apps
        .iter()
        .map(|(n, u)| content::resolve(&store, n, u))
        .collect::<Result<Vec<_>>>()?;
    let kept_ids: BTreeSet<String> = keep
        .iter()
        .flat_map(|a| &a.images)
        .map(|i| i.id())
        .collect();
    let mut drop_ids: BTreeSet<String> = record
        .iter()
        .flat_map(|r| &r.apps)
        .flat_map(|a| a.images.values().cloned())
        .collect();
    for (name, hex) in store.versions()? {
        if keep.iter().any(|a| a.name == name && a.digest == hex) {
            continue;
        }
        let uri_file = store.root().join("apps").join(&name).join(&hex).join("uri");
        let Ok(uri) = fs::read_to_string(&uri_file) else {
            continue;
        };
        if let Ok(old) = content::resolve(&store, &name, &uri) {
            drop_ids.extend(old.images.iter().map(|i| i.id()));
        }
    }
    let blobs = store.prune(&keep)?;
    let images = engine.images()?;
    let mut removed = 0;
    for id in drop_ids.difference(&kept_ids) {
        let tags = images
            .iter()
            .find(|i| &i.id == id)
            .map(|i| i.repo_tags.clone())
            .unwrap_or_default();
        for tag in &tags {
            engine.remove_image(tag)?;
        }
        if engine.remove_image(id)? {
            removed += 1;
        }
    }
    tracing::info!(
        blobs,
        images = removed,
        "pruned what the new target does not use"
    );
    Ok(())
}
