//! Real container images in an app store's shared blob directory (`apps/blobs/sha256/`).
//!
//! Layers are gzip'd tars built deterministically (sorted entries, parents added, owner 0:0,
//! fixed mtime, gzip header without time), so an image built twice has the same digests and
//! an app's URI only changes when its content does.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::ostree::COMMIT_TIME;

/// One entry of a layer. Parent directories are added (0755) when not listed.
#[derive(Clone, Debug)]
pub enum LayerEntry {
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    /// A file of this machine (e.g. `/bin/busybox` from Debian's busybox-static), read when
    /// the layer is built.
    Host {
        path: String,
        from: PathBuf,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl LayerEntry {
    pub fn file(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> LayerEntry {
        LayerEntry::File {
            path: path.into(),
            contents: contents.into(),
            mode,
        }
    }
    pub fn host(path: &str, from: impl Into<PathBuf>, mode: u32) -> LayerEntry {
        LayerEntry::Host {
            path: path.into(),
            from: from.into(),
            mode,
        }
    }
    pub fn dir(path: &str, mode: u32) -> LayerEntry {
        LayerEntry::Dir {
            path: path.into(),
            mode,
        }
    }
    pub fn symlink(path: &str, target: &str) -> LayerEntry {
        LayerEntry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    fn path(&self) -> &str {
        match self {
            LayerEntry::File { path, .. }
            | LayerEntry::Host { path, .. }
            | LayerEntry::Dir { path, .. }
            | LayerEntry::Symlink { path, .. } => path.trim_matches('/'),
        }
    }
}

/// Docker's `Healthcheck` member of an image config (durations in seconds here).
#[derive(Clone, Debug)]
pub struct Healthcheck {
    /// e.g. `["CMD-SHELL", "test -e /tmp/ready"]`.
    pub test: Vec<String>,
    pub interval_secs: u64,
    pub timeout_secs: u64,
    pub start_period_secs: u64,
    pub retries: u32,
}

/// The `config` member of an image config.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub healthcheck: Option<Healthcheck>,
}

/// Manifest flavour. composectl's image loading: bundles made with `skopeo copy --format v2s2`
/// carry Docker schema 2; registries also serve OCI. A loader must take both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageFormat {
    #[default]
    Oci,
    DockerV2S2,
}

impl ImageFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => "application/vnd.oci.image.manifest.v1+json",
            ImageFormat::DockerV2S2 => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
    fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => "application/vnd.oci.image.config.v1+json",
            ImageFormat::DockerV2S2 => "application/vnd.docker.container.image.v1+json",
        }
    }
    fn layer_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            ImageFormat::DockerV2S2 => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// `<registry host>/<path>`, e.g. `hub.foundries.io/factory/app-01`.
    pub repo: String,
    pub layers: Vec<Vec<LayerEntry>>,
    pub config: ImageConfig,
    pub format: ImageFormat,
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BUSYBOX_APPLETS: [&str; 12] = [
    "sh", "cat", "echo", "env", "httpd", "ls", "nc", "sleep", "test", "touch", "true", "wget",
];

impl ImageSpec {
    /// A runnable image from scratch: `/bin/busybox` of this machine plus applet links
    /// (layer 1) and `/etc/image-marker` = `marker` (layer 2, so versions differ).
    pub fn busybox(repo: &str, marker: &str, cmd: &[&str]) -> ImageSpec {
        let mut base = vec![LayerEntry::host("bin/busybox", "/bin/busybox", 0o755)];
        for applet in BUSYBOX_APPLETS {
            base.push(LayerEntry::symlink(&format!("bin/{applet}"), "busybox"));
        }
        base.push(LayerEntry::dir("tmp", 0o1777));
        ImageSpec {
            repo: repo.into(),
            layers: vec![
                base,
                vec![LayerEntry::file(
                    "etc/image-marker",
                    format!("{marker}\n"),
                    0o644,
                )],
            ],
            config: ImageConfig {
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                env: vec![PATH_ENV.into()],
                ..ImageConfig::default()
            },
            format: ImageFormat::Oci,
        }
    }

    /// A small image that cannot run (no binary): for tests that only move bytes around.
    pub fn tiny(repo: &str, marker: &str) -> ImageSpec {
        ImageSpec {
            repo: repo.into(),
            layers: vec![vec![LayerEntry::file(
                "image-marker",
                format!("{marker}\n"),
                0o644,
            )]],
            config: ImageConfig {
                cmd: vec!["/image-marker".into()],
                env: vec![PATH_ENV.into()],
                ..ImageConfig::default()
            },
            format: ImageFormat::Oci,
        }
    }

    /// `(registry host, path)`: where the image's OCI layout goes under `images/`.
    pub fn host_and_path(&self) -> (&str, &str) {
        self.repo
            .split_once('/')
            .unwrap_or((self.repo.as_str(), ""))
    }
}

/// What [`write_image`] wrote. Digests are lowercase hex without `sha256:`.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub repo: String,
    pub format: ImageFormat,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// sha256 of each uncompressed layer tar (`rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
}

impl ImageInfo {
    /// `<repo>@sha256:<manifest hex>`: how compose files pin images.
    pub fn reference(&self) -> String {
        format!("{}@sha256:{}", self.repo, self.manifest_digest)
    }
}

/// Field order of OCI image-spec descriptors (`ocispec.Descriptor`).
#[derive(Serialize)]
pub(crate) struct OciDescriptor<'a> {
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    pub digest: String,
    pub size: u64,
}

/// Field order of docker/distribution descriptors (schema 2 manifests, app manifests).
#[derive(Serialize)]
pub(crate) struct DistDescriptor<'a> {
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    pub size: u64,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AnyDescriptor<'a> {
    Oci(OciDescriptor<'a>),
    Dist(DistDescriptor<'a>),
}

#[derive(Serialize)]
struct ImageManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: AnyDescriptor<'a>,
    layers: Vec<AnyDescriptor<'a>>,
}

fn descriptor(
    format: ImageFormat,
    media_type: &'static str,
    digest: &str,
    size: u64,
) -> AnyDescriptor<'static> {
    let digest = format!("sha256:{digest}");
    match format {
        ImageFormat::Oci => AnyDescriptor::Oci(OciDescriptor {
            media_type,
            digest,
            size,
        }),
        ImageFormat::DockerV2S2 => AnyDescriptor::Dist(DistDescriptor {
            media_type,
            size,
            digest,
            annotations: None,
        }),
    }
}

/// Write the image's layers, config and manifest into `store/blobs/sha256/`.
pub fn write_image(store: &Path, image: &ImageSpec) -> anyhow::Result<ImageInfo> {
    let fmt = image.format;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, entries) in image.layers.iter().enumerate() {
        let (diff_id, gz) =
            layer_tar_gz(entries).with_context(|| format!("layer {i} of {}", image.repo))?;
        diff_ids.push(diff_id);
        let digest = write_blob(store, &gz)?;
        layers.push((digest, gz.len() as u64));
    }
    let config = serde_json::to_vec(&config_json(&image.config, &diff_ids))?;
    let config_digest = write_blob(store, &config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: fmt.manifest_media_type(),
        config: descriptor(
            fmt,
            fmt.config_media_type(),
            &config_digest,
            config.len() as u64,
        ),
        layers: layers
            .iter()
            .map(|(d, size)| descriptor(fmt, fmt.layer_media_type(), d, *size))
            .collect(),
    };
    let manifest = serde_json::to_vec(&manifest)?;
    Ok(ImageInfo {
        repo: image.repo.clone(),
        format: fmt,
        manifest_digest: write_blob(store, &manifest)?,
        manifest_size: manifest.len() as u64,
        config_digest,
        layer_digests: layers.into_iter().map(|(d, _)| d).collect(),
        diff_ids,
    })
}

fn config_json(c: &ImageConfig, diff_ids: &[String]) -> Value {
    let mut cfg = Map::new();
    let mut put = |k: &str, v: &[String]| {
        if !v.is_empty() {
            cfg.insert(k.into(), json!(v));
        }
    };
    put("Cmd", &c.cmd);
    put("Entrypoint", &c.entrypoint);
    put("Env", &c.env);
    if !c.working_dir.is_empty() {
        cfg.insert("WorkingDir".into(), json!(c.working_dir));
    }
    if let Some(h) = &c.healthcheck {
        const NS: u64 = 1_000_000_000;
        cfg.insert(
            "Healthcheck".into(),
            json!({
                "Test": h.test,
                "Interval": h.interval_secs * NS,
                "Timeout": h.timeout_secs * NS,
                "StartPeriod": h.start_period_secs * NS,
                "Retries": h.retries,
            }),
        );
    }
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("sha256:{d}")).collect();
    json!({
        "architecture": "amd64",
        "config": cfg,
        "created": "2023-11-14T22:13:20Z",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ids},
    })
}

/// Store `bytes` as `store/blobs/sha256/<sha256 hex>` (kept if already there); returns the hex.
pub fn write_blob(store: &Path, bytes: &[u8]) -> anyhow::Result<String> {
    let hex = hex::encode(Sha256::digest(bytes));
    let dir = store.join("blobs/sha256");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(&hex);
    if !path.exists() {
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(hex)
}

/// `(diff id = sha256 hex of the tar, gzip of the tar)` of `entries`, deterministic.
pub fn layer_tar_gz(entries: &[LayerEntry]) -> anyhow::Result<(String, Vec<u8>)> {
    let tar = deterministic_tar(entries)?;
    Ok((hex::encode(Sha256::digest(&tar)), gzip(&tar)?))
}

/// gzip with a zero mtime and no file name in the header, so equal input gives equal bytes.
pub fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// A tar of `entries` sorted by path, missing parents added, owner 0:0, fixed mtime.
pub fn deterministic_tar(entries: &[LayerEntry]) -> anyhow::Result<Vec<u8>> {
    let mut by_path: BTreeMap<String, &LayerEntry> = BTreeMap::new();
    for e in entries {
        by_path.insert(e.path().to_string(), e);
    }
    let mut dirs: BTreeMap<String, u32> = BTreeMap::new();
    for p in by_path.keys() {
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            dirs.entry(parent.to_string()).or_insert(0o755);
            cur = parent;
        }
    }
    let mut all: BTreeMap<String, Option<&LayerEntry>> = BTreeMap::new();
    for d in dirs.keys() {
        all.insert(d.clone(), None);
    }
    for (p, e) in by_path {
        all.insert(p, Some(e));
    }
    let mut b = tar::Builder::new(Vec::new());
    for (path, entry) in all {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(COMMIT_TIME);
        h.set_uid(0);
        h.set_gid(0);
        let ctx = || format!("adding {path} to a tar");
        match entry {
            None | Some(LayerEntry::Dir { .. }) => {
                let mode = match entry {
                    Some(LayerEntry::Dir { mode, .. }) => *mode,
                    _ => 0o755,
                };
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .with_context(ctx)?;
            }
            Some(LayerEntry::File { contents, mode, .. }) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(contents.len() as u64);
                b.append_data(&mut h, &path, contents.as_slice())
                    .with_context(ctx)?;
            }
            Some(LayerEntry::Host { from, mode, .. }) => {
                let mut data = Vec::new();
                std::fs::File::open(from)
                    .and_then(|mut f| f.read_to_end(&mut data))
                    .with_context(|| format!("reading {}", from.display()))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &path, data.as_slice())
                    .with_context(ctx)?;
            }
            Some(LayerEntry::Symlink { target, .. }) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, &path, target).with_context(ctx)?;
            }
        }
    }
    Ok(b.into_inner()?)
}
