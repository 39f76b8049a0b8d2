//! Compose apps in an app store laid out like a bundle's `apps/` (docs/bundle-format.md), as
//! composeapp publishes them and composectl / ci-scripts store them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::oci::{
    deterministic_tar, gzip, write_blob, write_image, DistDescriptor, ImageInfo, ImageSpec,
    LayerEntry, OciDescriptor,
};

/// A service that becomes ready and runs until it is stopped.
pub const RUN_FOREVER: &str = "trap 'exit 0' TERM; touch /tmp/ready; sleep 2147483647 & wait";

/// Registry host of Foundries factories.
pub const REGISTRY: &str = "hub.foundries.io";

/// The OCI empty JSON descriptor composeapp uses as the app manifest's config.
pub const EMPTY_CONFIG_DIGEST: &str =
    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// An app to write: its compose file (with `{{image:N}}` placeholders, see [`write_app`])
/// and its images.
#[derive(Clone, Debug)]
pub struct AppSpec {
    pub name: String,
    pub compose: String,
    pub images: Vec<ImageSpec>,
    /// An entry the compose archive carries beside the compose file, which no device
    /// may write: to test the extraction rules.
    pub hostile: Option<Hostile>,
}

/// A compose archive entry that escapes its project directory.
#[derive(Clone, Debug)]
pub enum Hostile {
    /// A regular file at this raw path (`../x`, `/abs/x`).
    File(String),
    /// A symlink `name` -> `target`.
    Symlink(String, String),
}

/// A `.tgz` with `docker-compose.yml` and the hostile entry, headers written raw (the tar
/// crate refuses to write such names itself).
pub fn hostile_archive(compose: &str, hostile: &Hostile) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(compose.len() as u64);
    h.set_mode(0o644);
    h.set_path("docker-compose.yml")?;
    h.set_cksum();
    b.append(&h, compose.as_bytes())?;
    let mut h = tar::Header::new_gnu();
    let (name, data): (&str, &[u8]) = match hostile {
        Hostile::File(path) => {
            h.set_entry_type(tar::EntryType::Regular);
            (path, b"escaped\n")
        }
        Hostile::Symlink(name, target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name(target)?;
            (name, b"")
        }
    };
    let raw = &mut h.as_old_mut().name;
    anyhow::ensure!(name.len() < raw.len(), "hostile name too long");
    raw[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data)?;
    gzip(&b.into_inner()?)
}

impl AppSpec {
    /// One runnable busybox service that becomes healthy once started; `marker` makes
    /// versions of the app differ.
    pub fn busybox(factory: &str, name: &str, marker: &str) -> AppSpec {
        let mut image = ImageSpec::busybox(
            &format!("{REGISTRY}/{factory}/{name}"),
            marker,
            // PID 1 gets no default signal handlers: without the trap a stop waits out
            // the engine's 10 s grace period.
            &["sh", "-c", RUN_FOREVER],
        );
        image.config.healthcheck = Some(super::oci::Healthcheck {
            test: vec!["CMD-SHELL".into(), "test -e /tmp/ready".into()],
            interval_secs: 1,
            timeout_secs: 5,
            start_period_secs: 0,
            retries: 3,
        });
        let images = vec![image];
        AppSpec {
            name: name.into(),
            compose: default_compose(&images),
            images,
            hostile: None,
        }
    }

    /// A busybox service that runs `script` (under `sh -c`) instead of becoming healthy:
    /// `"exit 3"` exits at once; with `healthy = false` it runs but its healthcheck fails.
    pub fn busybox_running(
        factory: &str,
        name: &str,
        marker: &str,
        script: &str,
        healthy: bool,
    ) -> AppSpec {
        let mut app = AppSpec::busybox(factory, name, marker);
        let image = &mut app.images[0];
        image.config.cmd = vec!["sh".into(), "-c".into(), script.into()];
        if !healthy {
            if let Some(h) = image.config.healthcheck.as_mut() {
                h.test = vec!["CMD-SHELL".into(), "exit 1".into()];
                h.retries = 1;
            }
        }
        app
    }

    /// One small image that cannot run: for tests that only move bytes around.
    pub fn tiny(factory: &str, name: &str, marker: &str) -> AppSpec {
        let images = vec![ImageSpec::tiny(
            &format!("{REGISTRY}/{factory}/{name}"),
            marker,
        )];
        AppSpec {
            name: name.into(),
            compose: default_compose(&images),
            images,
            hostile: None,
        }
    }
}

/// A compose file with one service per image, named after the image's last path element,
/// images as `{{image:N}}` placeholders.
pub fn default_compose(images: &[ImageSpec]) -> String {
    let mut out = String::from("services:\n");
    for (i, image) in images.iter().enumerate() {
        let base = image.repo.rsplit('/').next().unwrap_or("app");
        let svc = if i == 0 {
            base.to_string()
        } else {
            format!("{base}-{i}")
        };
        out.push_str(&format!(
            "  {svc}:\n    image: {{{{image:{i}}}}}\n    restart: unless-stopped\n"
        ));
    }
    out
}

/// What [`write_app`] wrote. Digests are lowercase hex without `sha256:`.
#[derive(Clone, Debug)]
pub struct AppInfo {
    pub name: String,
    /// `hub.foundries.io/<factory>/<name>@sha256:<manifest hex>`, as in the target.
    pub uri: String,
    pub manifest_digest: String,
    pub archive_digest: String,
    /// `apps/apps/<name>/<manifest hex>/`.
    pub dir: PathBuf,
    pub images: Vec<ImageInfo>,
    /// The compose file as stored (placeholders replaced).
    pub compose: String,
}

impl AppInfo {
    /// Pinned image references, in the order of the images given.
    pub fn image_refs(&self) -> Vec<String> {
        self.images.iter().map(ImageInfo::reference).collect()
    }
}

#[derive(Serialize)]
struct AppManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: DistDescriptor<'a>,
    layers: Vec<DistDescriptor<'a>>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "artifactType")]
    artifact_type: &'a str,
}

#[derive(Serialize)]
struct OciIndex<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    manifests: Vec<OciDescriptor<'a>>,
}

/// Write app `name` of `factory` into the store `store` (a bundle's `apps/` directory):
/// every image's blobs, the compose archive, the app bundle index, the app manifest, and
/// `apps/<name>/<hex>/{uri, manifest.json, <archive hex>.tgz, docker-compose.yml, images/..}`.
///
/// In `compose_yaml`, `{{image:N}}` is replaced by `images[N]` pinned by digest
/// (`hub.foundries.io/<factory>/<img>@sha256:<hex>`), as `composectl publish` pins them.
pub fn write_app(
    store: &Path,
    name: &str,
    factory: &str,
    compose_yaml: &str,
    images: &[ImageSpec],
    hostile: Option<&Hostile>,
) -> anyhow::Result<AppInfo> {
    let ctx = || format!("writing app {name} into {}", store.display());
    let infos = images
        .iter()
        .map(|i| write_image(store, i))
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(ctx)?;
    let compose = substitute(compose_yaml, &infos).with_context(ctx)?;

    let archive = match hostile {
        Some(h) => hostile_archive(&compose, h)?,
        None => gzip(&deterministic_tar(&[LayerEntry::file(
            "docker-compose.yml",
            compose.as_bytes(),
            0o644,
        )])?)?,
    };
    let archive_digest = write_blob(store, &archive).with_context(ctx)?;
    // The "app bundle index": file -> digest, which composectl checks unpacked files against.
    let index: BTreeMap<&str, String> = BTreeMap::from([(
        "docker-compose.yml",
        format!("sha256:{}", hex::encode(Sha256::digest(compose.as_bytes()))),
    )]);
    let index = serde_json::to_vec(&index)?;
    let index_digest = write_blob(store, &index).with_context(ctx)?;
    write_blob(store, b"{}").with_context(ctx)?;

    let manifest = AppManifest {
        schema_version: 2,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        config: DistDescriptor {
            media_type: "application/vnd.oci.empty.v1+json",
            size: 2,
            digest: format!("sha256:{EMPTY_CONFIG_DIGEST}"),
            annotations: None,
        },
        layers: vec![DistDescriptor {
            media_type: "application/octet-stream",
            size: archive.len() as u64,
            digest: format!("sha256:{archive_digest}"),
            annotations: Some(BTreeMap::from([
                (
                    "org.foundries.app.bundle.index.digest".to_string(),
                    format!("sha256:{index_digest}"),
                ),
                (
                    "org.foundries.app.bundle.index.size".to_string(),
                    index.len().to_string(),
                ),
            ])),
        }],
        annotations: BTreeMap::from([("compose-app".to_string(), "v1".to_string())]),
        artifact_type: "application/vnd.fio+compose-app",
    };
    // composeapp writes the manifest with Go's MarshalIndent(.., "", "   ").
    let mut manifest_bytes = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    manifest.serialize(&mut serde_json::Serializer::with_formatter(
        &mut manifest_bytes,
        fmt,
    ))?;
    let manifest_digest = write_blob(store, &manifest_bytes).with_context(ctx)?;

    let dir = store.join("apps").join(name).join(&manifest_digest);
    let uri = format!("{REGISTRY}/{factory}/{name}@sha256:{manifest_digest}");
    write_file(&dir.join("uri"), uri.as_bytes())?;
    write_file(&dir.join("manifest.json"), &manifest_bytes)?;
    write_file(&dir.join(format!("{archive_digest}.tgz")), &archive)?;
    write_file(&dir.join("docker-compose.yml"), compose.as_bytes())?;
    for (spec, info) in images.iter().zip(&infos) {
        let (host, path) = spec.host_and_path();
        let layout = dir
            .join("images")
            .join(host)
            .join(path)
            .join(&info.manifest_digest);
        write_file(
            &layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let index = OciIndex {
            schema_version: 2,
            manifests: vec![OciDescriptor {
                media_type: info.format.manifest_media_type(),
                digest: format!("sha256:{}", info.manifest_digest),
                size: info.manifest_size,
            }],
        };
        write_file(&layout.join("index.json"), &serde_json::to_vec(&index)?)?;
    }
    Ok(AppInfo {
        name: name.into(),
        uri,
        manifest_digest,
        archive_digest,
        dir,
        images: infos,
        compose,
    })
}

/// [`write_app`] from an [`AppSpec`].
pub fn write_app_spec(store: &Path, factory: &str, app: &AppSpec) -> anyhow::Result<AppInfo> {
    write_app(
        store,
        &app.name,
        factory,
        &app.compose,
        &app.images,
        app.hostile.as_ref(),
    )
}

fn substitute(compose: &str, images: &[ImageInfo]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(compose.len());
    let mut rest = compose;
    while let Some(start) = rest.find("{{image:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{image:".len()..];
        let end = after
            .find("}}")
            .context("unterminated {{image:N}} placeholder in the compose file")?;
        let n: usize = after[..end]
            .trim()
            .parse()
            .with_context(|| format!("bad placeholder {{{{image:{}}}}}", &after[..end]))?;
        let image = images
            .get(n)
            .with_context(|| format!("{{{{image:{n}}}}} but only {} images", images.len()))?;
        out.push_str(&image.reference());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
