//! What an app is made of, read from its manifest chain: the app manifest named by the
//! TUF-signed URI, its compose archive, and for every service the image manifest (through a
//! multi-platform index when there is one), config and layers.
//!
//! Every blob is verified against the digest that names it as it is read, so a resolved
//! [`App`] is trustworthy whatever the source: the stick or the device's own store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::archive;
use super::compose::{self, ComposeFile};
use crate::error::{Error, Result};

/// Largest app manifest (composectl reads at most 50 KiB).
const APP_MANIFEST_CAP: u64 = 64 << 10;
/// Largest image manifest, index or config.
const IMAGE_META_CAP: u64 = 4 << 20;
/// Largest compose archive held in memory (they are a few KiB: compose file and config).
const ARCHIVE_CAP: u64 = 64 << 20;
/// Largest compose file inside the archive.
const COMPOSE_CAP: u64 = 1 << 20;

/// Where blobs come from: `sha256/<hex>` files of the stick's or the device's store.
pub trait BlobSource: Sync {
    /// The blob's file and length, or `None` when the source does not have it.
    fn open_blob(&self, hex: &str) -> Result<Option<(File, u64)>>;
    /// Names the source in messages ("bundle /media/x", "store /var/sota/reset-apps").
    fn describe(&self) -> String;
}

/// A blob and, when a descriptor gave it, its size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blob {
    pub digest: String,
    pub size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Image {
    /// `<repo>@sha256:<manifest hex>` as the compose file pins it.
    pub reference: String,
    pub repo: String,
    pub manifest_digest: String,
    /// The manifest, and the index it was chosen from when there was one.
    pub manifests: Vec<Blob>,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Image {
    /// The engine's id of the loaded image: the config digest.
    pub fn id(&self) -> String {
        format!("sha256:{}", self.config.digest)
    }

    /// The tag the image is loaded under, as composectl tags it on an engine that cannot
    /// hold digest references: `<repo>:<first 7 hex of the manifest digest>`.
    pub fn tag(&self) -> String {
        format!("{}:{}", self.repo, &self.manifest_digest[..7])
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub uri: String,
    /// The app manifest's digest (hex).
    pub digest: String,
    pub manifest: Vec<u8>,
    pub archive: Blob,
    /// Further layers and the bundle index, kept so the store stays whole for composectl.
    pub extra: Vec<Blob>,
    pub compose: ComposeFile,
    /// Service name -> index into `images`.
    pub services: BTreeMap<String, usize>,
    pub images: Vec<Image>,
}

impl App {
    /// Every blob of the app, each once.
    pub fn blobs(&self) -> BTreeSet<Blob> {
        let mut all = BTreeSet::from([
            Blob {
                digest: self.digest.clone(),
                size: Some(self.manifest.len() as u64),
            },
            self.archive.clone(),
        ]);
        all.extend(self.extra.iter().cloned());
        for i in &self.images {
            all.extend(i.manifests.iter().cloned());
            all.insert(i.config.clone());
            all.extend(i.layers.iter().cloned());
        }
        all
    }

    /// Service name -> the tag its image is loaded under.
    pub(crate) fn service_tags(&self) -> BTreeMap<String, String> {
        self.services
            .iter()
            .map(|(s, &i)| (s.clone(), self.images[i].tag()))
            .collect()
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: Option<u64>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

/// `sha256:<hex>` -> hex, refusing anything else.
fn hex_of(digest: &str, what: &str) -> Result<String> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| crate::core::bundle::valid_digest(h))
        .map(str::to_string)
        .ok_or_else(|| Error::copy(format!("{what}: digest {digest:?} is not sha256:<64 hex>")))
}

fn blob_of(d: &Descriptor, what: &str) -> Result<Blob> {
    Ok(Blob {
        digest: hex_of(&d.digest, what)?,
        size: d.size,
    })
}

/// Read a small blob whole and verify it: size (when known), cap, digest.
pub(crate) fn read_verified(
    src: &dyn BlobSource,
    blob: &Blob,
    cap: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let hex = &blob.digest;
    let Some((file, len)) = src.open_blob(hex)? else {
        return Err(Error::content_missing(format!(
            "{what}: blob {hex} is not in {}",
            src.describe()
        )));
    };
    if blob.size.is_some_and(|s| s != len) {
        return Err(Error::copy(format!(
            "{what}: blob {hex} in {} has {len} bytes, its descriptor says {}",
            src.describe(),
            blob.size.unwrap_or_default()
        )));
    }
    if len > cap {
        return Err(Error::copy(format!(
            "{what}: blob {hex} has {len} bytes, over the {cap}-byte limit for its kind"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::copy(format!("{what}: reading blob {hex}: {e}")))?;
    if hex::encode(Sha256::digest(&bytes)) != *hex {
        return Err(Error::copy(format!(
            "{what}: blob {hex} in {} does not match its digest",
            src.describe()
        )));
    }
    Ok(bytes)
}

/// The GOARCH of this build: what a multi-platform index is searched for.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn is_index(m: &Manifest) -> bool {
    m.manifests.is_some()
        || m.media_type.ends_with("image.index.v1+json")
        || m.media_type.ends_with("manifest.list.v2+json")
}

/// Resolve image `reference` (pinned by digest) of app `app`.
fn resolve_image(src: &dyn BlobSource, app: &str, reference: &str) -> Result<Image> {
    let what = format!("app {app}: image {reference}");
    let (repo, hex) = compose::pinned(reference).ok_or_else(|| {
        Error::copy(format!(
            "{what}: not pinned by sha256 digest; an offline device cannot resolve it"
        ))
    })?;
    let mut blob = Blob {
        digest: hex.to_string(),
        size: None,
    };
    let mut manifests = Vec::new();
    let mut manifest: Manifest;
    loop {
        let bytes = read_verified(src, &blob, IMAGE_META_CAP, &what)?;
        manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::copy(format!("{what}: manifest {}: {e}", blob.digest)))?;
        manifests.push(blob.clone());
        if !is_index(&manifest) {
            break;
        }
        if manifests.len() > 1 {
            return Err(Error::copy(format!("{what}: an index inside an index")));
        }
        let arch = goarch();
        let chosen = manifest
            .manifests
            .iter()
            .flatten()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .ok_or_else(|| Error::copy(format!("{what}: no manifest for linux/{arch}")))?;
        tracing::debug!(
            variant = ?chosen.platform.as_ref().and_then(|p| p.variant.clone()),
            "{what}: chose {} from its index", chosen.digest
        );
        blob = blob_of(chosen, &what)?;
    }
    let config = manifest
        .config
        .as_ref()
        .ok_or_else(|| Error::copy(format!("{what}: manifest has no config")))?;
    let config = blob_of(config, &what)?;
    let layers = manifest
        .layers
        .iter()
        .map(|d| blob_of(d, &what))
        .collect::<Result<Vec<_>>>()?;
    if layers.iter().any(|l| l.size.is_none()) {
        return Err(Error::copy(format!(
            "{what}: a layer descriptor has no size"
        )));
    }
    // The config is read once here so that a broken one fails before anything is copied.
    read_verified(src, &config, IMAGE_META_CAP, &what)?;
    Ok(Image {
        reference: reference.to_string(),
        repo: repo.to_string(),
        manifest_digest: hex.to_string(),
        manifests,
        config,
        layers,
    })
}

/// Resolve app `name` from its URI `<registry>/<factory>/<name>@sha256:<hex>`.
pub fn resolve(src: &dyn BlobSource, name: &str, uri: &str) -> Result<App> {
    let what = format!("app {name}");
    let (_, digest) = compose::pinned(uri)
        .ok_or_else(|| Error::copy(format!("{what}: URI {uri:?} is not pinned by sha256")))?;
    let mblob = Blob {
        digest: digest.to_string(),
        size: None,
    };
    let manifest_bytes = read_verified(src, &mblob, APP_MANIFEST_CAP, &what)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Error::copy(format!("{what}: app manifest {digest}: {e}")))?;
    let (first, rest) = manifest
        .layers
        .split_first()
        .ok_or_else(|| Error::copy(format!("{what}: app manifest has no compose archive")))?;
    let archive = blob_of(first, &what)?;
    let mut extra = rest
        .iter()
        .map(|d| blob_of(d, &what))
        .collect::<Result<Vec<_>>>()?;
    if let Some(index) = first
        .annotations
        .get("org.foundries.app.bundle.index.digest")
    {
        let size = first
            .annotations
            .get("org.foundries.app.bundle.index.size")
            .and_then(|s| s.parse().ok());
        extra.push(Blob {
            digest: hex_of(index, &what)?,
            size,
        });
    }
    if let Some(c) = &manifest.config {
        extra.push(blob_of(c, &what)?);
    }
    let archive_bytes = read_verified(src, &archive, ARCHIVE_CAP, &what)?;
    let mut found = None;
    for file in compose::FILE_NAMES {
        let member = archive::read_member(archive_bytes.as_slice(), file, COMPOSE_CAP)
            .map_err(|e| Error::copy(format!("{what}: compose archive: {e:#}")))?;
        if let Some(bytes) = member {
            found = Some((file, bytes));
            break;
        }
    }
    let (file, compose_bytes) = found
        .ok_or_else(|| Error::copy(format!("{what}: the compose archive has no compose file")))?;
    let compose = ComposeFile::parse(&compose_bytes, &format!("{what}: {file}"))
        .map_err(|e| Error::copy(format!("{e:#}")))?;
    let mut images: Vec<Image> = Vec::new();
    let mut services = BTreeMap::new();
    for (svc, s) in &compose.services {
        if s.has_build {
            return Err(Error::copy(format!(
                "{what}: service {svc} has a build section; the device never builds"
            )));
        }
        let reference = s
            .image
            .as_deref()
            .ok_or_else(|| Error::copy(format!("{what}: service {svc} has no image")))?;
        let at = match images.iter().position(|i| i.reference == reference) {
            Some(i) => i,
            None => {
                images.push(resolve_image(src, name, reference)?);
                images.len() - 1
            }
        };
        services.insert(svc.clone(), at);
    }
    Ok(App {
        name: name.to_string(),
        uri: uri.to_string(),
        digest: digest.to_string(),
        manifest: manifest_bytes,
        archive,
        extra,
        compose,
        services,
        images,
    })
}
