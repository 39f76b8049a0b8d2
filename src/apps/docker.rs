//! The Docker engine API behind a blocking facade: images loaded from the app store's blobs,
//! tags, image removal, and the state of a compose project's containers.
//!
//! The library is synchronous and bollard is async: each [`Engine`] owns a current-thread
//! runtime and blocks on one request at a time, so no thread pool runs behind the updater.

use std::collections::HashMap;

use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use bollard::query_parameters::{
    ImportImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::copy::Blobs;
use crate::error::{Code, Error, Result};
use crate::overlap::Cancel;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// bollard's default; inspect, list and tag answer at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// bollard's timeout runs until the engine starts answering, and dockerd answers a load only
/// once it has received and unpacked the whole tar: GBs written to slow flash.
const LOAD_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// Request body chunks; with the channel depth this bounds the memory a load holds.
const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 4;

pub struct Engine {
    docker: Docker,
    rt: tokio::runtime::Runtime,
    host: String,
    socket: String,
}

/// One image to load: its blobs in the app store. `config_digest` is lowercase hex without
/// "sha256:" (the image id the engine will report); `layers` are in order, gzip-compressed
/// or plain tars.
#[derive(Debug, Clone)]
pub struct ImageToLoad {
    /// "repo:tag" to give it, e.g. "hub.foundries.io/f/app:abc1234".
    pub tag: String,
    pub config_digest: String,
    pub config: PathBuf,
    pub layers: Vec<PathBuf>,
}

/// `service` is the label com.docker.compose.service; `image_id` is "sha256:<hex>"; `status`
/// is created|running|restarting|exited|dead|paused|removing; `exit_code` is only set once
/// the container has exited (exited, dead, restarting); `health` is None without a
/// healthcheck, else "starting"|"healthy"|"unhealthy".
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub service: Option<String>,
    pub image_id: String,
    pub status: String,
    pub running: bool,
    pub restarting: bool,
    pub restart_count: i64,
    pub exit_code: Option<i64>,
    pub health: Option<String>,
}

/// `id` is "sha256:<hex>"; `repo_tags` is empty for an untagged image.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub id: String,
    pub repo_tags: Vec<String>,
}

impl Engine {
    /// The engine at `$DOCKER_HOST`, else at /var/run/docker.sock.
    pub fn connect() -> Result<Engine> {
        Engine::connect_to(&Engine::host_from(std::env::var("DOCKER_HOST").ok()))
    }

    /// The engine address for a `$DOCKER_HOST` value (unset or empty: the default socket);
    /// the value is passed in so that tests need not change their process's environment.
    pub fn host_from(docker_host: Option<String>) -> String {
        let host = docker_host.filter(|h| !h.is_empty());
        host.unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"))
    }

    /// The engine at `host` (`unix://PATH`), pinged and with the API version negotiated.
    pub fn connect_to(host: &str) -> Result<Engine> {
        let Some(socket) = host.strip_prefix("unix://") else {
            return Err(Error::docker_unavailable(format!(
                "the Docker host {host} is not supported: only unix:// sockets are"
            )));
        };
        let unreachable = |why: String| {
            Error::docker_unavailable(format!(
                "the Docker engine at {socket} is not reachable: {why}"
            ))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime of the Docker client")?;
        let timeout = REQUEST_TIMEOUT.as_secs();
        let docker = Docker::connect_with_unix(socket, timeout, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unreachable(reason(&e)))?;
        // bollard speaks its newest API; an older engine (20.10: 1.41) refuses that version.
        let ping = async move {
            docker.ping().await?;
            docker.negotiate_version().await
        };
        let docker = rt
            .block_on(async { tokio::time::timeout(PING_TIMEOUT, ping).await })
            .map_err(|_| unreachable(format!("no answer within {PING_TIMEOUT:?}")))?
            .map_err(|e| unreachable(reason(&e)))?;
        let version = docker.client_version();
        tracing::debug!("Docker engine at {socket}: API 1.{}", version.minor_version);
        let (host, socket) = (host.to_string(), socket.to_string());
        Ok(Engine {
            docker,
            rt,
            host,
            socket,
        })
    }

    /// The `unix://...` host string in use (for the compose CLI's DOCKER_HOST).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Is there an image with this id ("sha256:<hex>") or reference?
    pub fn has_image(&self, id_or_ref: &str) -> Result<bool> {
        let what = format!("inspecting image {id_or_ref}");
        Ok(self
            .lookup(&what, self.docker.inspect_image(id_or_ref))?
            .is_some())
    }

    /// Load one image from its blobs, streamed to the engine as a `docker save` tar.
    #[cfg(any(test, feature = "internals"))]
    pub fn load(&self, image: &ImageToLoad) -> Result<()> {
        self.load_beside(image, Cancel::never(), &super::copy::StoreFiles)
    }

    /// [`Engine::load`] with the blobs read through `blobs`, cut short (the engine sees a
    /// broken request and keeps nothing) once `cancel` is set or a blob fails.
    pub(crate) fn load_beside(
        &self,
        image: &ImageToLoad,
        cancel: &Cancel,
        blobs: &dyn Blobs,
    ) -> Result<()> {
        let tag = &image.tag;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
        let stream = crate::failpoint::current();
        std::thread::scope(|s| {
            let producer = std::thread::Builder::new()
                .name("image-tar".into())
                .spawn_scoped(s, move || {
                    let _worker = crate::failpoint::join(stream);
                    produce(image, tx, cancel, blobs)
                })
                .with_context(|| format!("starting the tar writer of image {tag}"))?;
            // Shared so that it can be dropped below even if the engine answered early: the
            // connection task that owns the body is not polled once block_on returns, and
            // the producer would wait on a full channel forever.
            let rx = Arc::new(Mutex::new(Some(rx)));
            let body = futures_util::stream::poll_fn({
                let rx = Arc::clone(&rx);
                move |cx| match rx.lock().ok().as_deref_mut().and_then(Option::as_mut) {
                    Some(rx) => rx.poll_recv(cx),
                    // An error, not the end: a cut tar must not look complete to the engine.
                    None => Poll::Ready(Some(Err(io::Error::other("image load abandoned")))),
                }
            });
            let mut docker = self.docker.clone();
            docker.set_timeout(LOAD_TIMEOUT);
            let options = ImportImageOptionsBuilder::new().quiet(true).build();
            let answer = self.rt.block_on(async {
                let body = bollard::body_try_stream(body);
                let mut messages = docker.import_image(options, body, None);
                while let Some(message) = messages.next().await {
                    let message = message?;
                    if let Some(error) = message.error_detail.and_then(|d| d.message) {
                        return Err(ApiError::DockerStreamError { error });
                    }
                    if let Some(line) = message.stream {
                        tracing::debug!("engine, loading {tag}: {}", line.trim_end());
                    }
                }
                Ok(())
            });
            if let Ok(mut rx) = rx.lock() {
                rx.take();
            }
            let produced = producer
                .join()
                .map_err(|_| anyhow::anyhow!("the tar writer of image {tag} panicked"))?;
            // A file that cannot be read is the cause; the engine only saw a cut stream.
            // Ours (a blob that failed its copy, a cancel) as it is.
            if let Some(e) = produced {
                return Err(match e.downcast::<crate::Error>() {
                    Ok(ours) => ours,
                    Err(e) => e.context(format!("loading image {tag}")).into(),
                });
            }
            answer.map_err(|e| self.load_failed(tag, e))?;
            self.check_loaded(image)
        })
    }

    /// Tag an image: `tag` is "repo:tag".
    pub fn tag(&self, image_id: &str, tag: &str) -> Result<()> {
        let (repo, name) = match tag.rsplit_once(':') {
            Some((repo, name)) if !name.contains('/') => (repo, name),
            _ => (tag, "latest"),
        };
        let options = TagImageOptionsBuilder::new().repo(repo).tag(name).build();
        let what = format!("tagging image {image_id} as {tag}");
        self.call(&what, self.docker.tag_image(image_id, Some(options)))
    }

    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        let options = ListImagesOptionsBuilder::new().all(false).build();
        let list = self.call("listing images", self.docker.list_images(Some(options)))?;
        let summary = |i: bollard::models::ImageSummary| ImageSummary {
            repo_tags: (i.repo_tags.into_iter())
                .filter(|t| t != "<none>:<none>")
                .collect(),
            id: i.id,
        };
        Ok(list.into_iter().map(summary).collect())
    }

    /// Remove an image. Ok(false) when the engine refuses (409: in use by a container, or
    /// an id that several tags reference) or it is absent (404).
    pub fn remove_image(&self, id_or_ref: &str) -> Result<bool> {
        let options = RemoveImageOptionsBuilder::new().force(false).noprune(false);
        let remove = self
            .docker
            .remove_image(id_or_ref, Some(options.build()), None);
        match self.rt.block_on(remove) {
            Ok(_) => Ok(true),
            Err(e) if matches!(status(&e), Some(404 | 409)) => {
                tracing::debug!("image {id_or_ref} not removed: {e}");
                Ok(false)
            }
            Err(e) => Err(self.failed(&format!("removing image {id_or_ref}"), e)),
        }
    }

    /// All containers of compose project `project`, running or not, sorted by name.
    pub fn project_containers(&self, project: &str) -> Result<Vec<ContainerState>> {
        let filters = HashMap::from([("label", vec![format!("{PROJECT_LABEL}={project}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters);
        let what = format!("listing the containers of project {project}");
        let list = self.call(&what, self.docker.list_containers(Some(options.build())))?;
        let mut out = Vec::new();
        for id in list.into_iter().filter_map(|c| c.id) {
            let what = format!("inspecting container {id} of project {project}");
            let inspect = self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>);
            // None: removed between the list and the inspection.
            if let Some(c) = self.lookup(&what, inspect)? {
                out.push(container_state(id, c));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The engine must now hold the image under the id its config hashes to, with the tag.
    fn check_loaded(&self, image: &ImageToLoad) -> Result<()> {
        let (id, tag) = (format!("sha256:{}", image.config_digest), &image.tag);
        let what = format!("inspecting image {id} ({tag})");
        let Some(found) = self.lookup(&what, self.docker.inspect_image(&id))? else {
            return Err(Error::copy(format!(
                "the Docker engine loaded image {tag} but holds no image {id}: \
                 its config does not match that digest"
            )));
        };
        if !found.repo_tags.unwrap_or_default().contains(tag) {
            self.tag(&id, tag)?;
        }
        tracing::info!("loaded image {tag} ({id})");
        Ok(())
    }

    fn load_failed(&self, tag: &str, e: ApiError) -> Error {
        let refused = match &e {
            ApiError::DockerStreamError { error } => error,
            ApiError::DockerResponseServerError { message, .. } => message,
            _ => return self.failed(&format!("loading image {tag}"), e),
        };
        let msg = format!("the Docker engine refused image {tag}: {refused}");
        if refused.contains("no space left on device") {
            Error::new(Code::NoSpace, msg)
        } else {
            Error::copy(msg)
        }
    }

    fn call<T>(&self, what: &str, request: impl Future<Output = Result<T, ApiError>>) -> Result<T> {
        self.rt.block_on(request).map_err(|e| self.failed(what, e))
    }

    /// [`Engine::call`], with "no such object" (404) as None.
    fn lookup<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Option<T>> {
        match self.rt.block_on(request) {
            Ok(found) => Ok(Some(found)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.failed(what, e)),
        }
    }

    /// A lost connection means the engine went away (52); anything else is unexpected.
    fn failed(&self, what: &str, e: ApiError) -> Error {
        match e {
            ApiError::HyperLegacyError { .. }
            | ApiError::HyperResponseError { .. }
            | ApiError::IOError { .. }
            | ApiError::RequestTimeoutError
            | ApiError::SocketNotFoundError(_) => Error::docker_unavailable(format!(
                "lost the Docker engine at {} while {what}: {}",
                self.socket,
                reason(&e)
            ))
            .with_source(e),
            e => anyhow::Error::new(e).context(what.to_string()).into(),
        }
    }
}

fn status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Why a request failed: hyper's own words ("client error (Connect)") say nothing, the OS
/// error at the end of the chain does.
fn reason(e: &ApiError) -> String {
    if let ApiError::SocketNotFoundError(_) = e {
        return "no socket there".into();
    }
    let mut last: &dyn std::error::Error = e;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

fn container_state(id: String, c: ContainerInspectResponse) -> ContainerState {
    let state = c.state.unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let exited = matches!(status.as_str(), "exited" | "dead" | "restarting");
    let health = (state.health.and_then(|h| h.status))
        .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE));
    let name = c.name.map(|n| n.trim_start_matches('/').to_string());
    ContainerState {
        name: name.unwrap_or_else(|| id.clone()),
        id,
        service: (c.config.and_then(|c| c.labels)).and_then(|mut l| l.remove(SERVICE_LABEL)),
        image_id: c.image.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        restarting: state.restarting.unwrap_or(false),
        restart_count: c.restart_count.unwrap_or(0),
        exit_code: state.exit_code.filter(|_| exited),
        health: health.map(|s| s.to_string()),
        status,
    }
}

/// Write the `docker save` tar of `image` into `tx`. A blob that cannot be read ends the
/// body with an error, so that the engine sees a broken request rather than a short tar, and
/// is returned; a body dropped by the engine is for the engine's answer to explain.
fn produce(
    image: &ImageToLoad,
    tx: mpsc::Sender<io::Result<Bytes>>,
    cancel: &Cancel,
    blobs: &dyn Blobs,
) -> Option<anyhow::Error> {
    let unreadable = write_save_tar(image, &tx, cancel, blobs).err()??;
    let _ = tx.blocking_send(Err(io::Error::other(format!("{unreadable:#}"))));
    Some(unreadable)
}

/// Err(None): the body was dropped.
type Written = std::result::Result<(), Option<anyhow::Error>>;

fn write_save_tar(
    image: &ImageToLoad,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    cancel: &Cancel,
    blobs: &dyn Blobs,
) -> Written {
    let config_name = format!("{}.json", image.config_digest);
    let layer_names: Vec<String> = (0..image.layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [image.tag],
        "Layers": layer_names,
    }])
    .to_string();
    let mut tar = tar::Builder::new(ChunkWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        closed: false,
        cancel,
        cancelled: None,
        poisoned: false,
    });
    let size = manifest.len() as u64;
    append(&mut tar, "manifest.json", size, manifest.as_bytes()).map_err(|_| None)?;
    append_file(&mut tar, &config_name, &image.config, blobs)?;
    for (name, path) in layer_names.iter().zip(&image.layers) {
        append_file(&mut tar, name, path, blobs)?;
    }
    let mut writer = tar.into_inner().map_err(|_| None)?;
    writer.flush().map_err(|_| None)
}

type TarOut<'a> = tar::Builder<ChunkWriter<'a>>;

fn append(tar: &mut TarOut, name: &str, size: u64, data: impl Read) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data)
}

/// Stream the blob at `path` into the tar, a read buffer at a time.
fn append_file(tar: &mut TarOut, name: &str, path: &Path, blobs: &dyn Blobs) -> Written {
    let written = append_blob(tar, name, path, blobs);
    if written.is_err() {
        // Nothing more goes to the engine, not even the tar's end that dropping the builder
        // writes: the body must end with an error, never look complete.
        tar.get_mut().poisoned = true;
    }
    written
}

fn append_blob(tar: &mut TarOut, name: &str, path: &Path, blobs: &dyn Blobs) -> Written {
    let unreadable = |e: io::Error| {
        Some(match super::copy::from_io(e) {
            Ok(ours) => anyhow::Error::new(ours),
            Err(e) => anyhow::Error::new(e).context(format!("reading {}", path.display())),
        })
    };
    let mut blob = blobs.open(path).map_err(unreadable)?;
    let size = blob.size();
    let mut data = (&mut *blob).take(size);
    let appended = append(tar, name, size, &mut data);
    if tar.get_ref().closed {
        return Err(None);
    }
    if let Some(cancelled) = tar.get_mut().cancelled.take() {
        return Err(Some(anyhow::Error::new(cancelled)));
    }
    appended.map_err(unreadable)?;
    // The header promised `size` bytes: a file that shrank while read cut the entry short.
    if let short @ 1.. = data.limit() {
        return Err(unreadable(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ended {short} bytes short of its size"),
        )));
    }
    // Before the next entry or the tar's end: a blob copied on the way is verified here.
    blob.done().map_err(unreadable)
}

/// Sends the tar in `CHUNK`-sized pieces; blocks while the engine is behind.
struct ChunkWriter<'a> {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The body was dropped: errors from here on are not the files' fault.
    closed: bool,
    cancel: &'a Cancel,
    /// Set when the other half of the install failed: the reason the tar stopped.
    cancelled: Option<crate::Error>,
    /// A blob failed: nothing more is sent.
    poisoned: bool,
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("a blob of the image failed"));
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other("a blob of the image failed"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let _unit = crate::failpoint::unit();
        if let Err(e) = self.cancel.check("loading an image") {
            self.cancelled = Some(e);
            return Err(io::Error::other("cancelled"));
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            self.closed = true;
            io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading")
        })?;
        // The engine took a chunk: the load moves.
        crate::watchdog::beat();
        Ok(())
    }
}
