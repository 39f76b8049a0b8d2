//! An app's manifest chain ([`usb_update::apps::content::resolve`]): app manifest, compose
//! archive, compose file, image index, image manifests, configs, from a store of blobs the
//! input writes.
//!
//! Input: `[bad] blob0 SEP blob1 SEP ...` (at most 8 blobs, `SEP` = `\n@@@\n`). Blobs are
//! content-addressed, so an input names others by placeholders that are replaced before
//! hashing, from the last blob to the first (a blob can name only later ones): `{D<n>}`
//! becomes `sha256:<hex of blob n>`, `{H<n>}` the hex alone, `{S<n>}` its size. A blob that
//! starts with `TGZ\n` becomes a gzip'd tar holding the rest as `docker-compose.yml`. Blob 0
//! is the app manifest the URI pins. Blob number `bad` (if there is one) is stored with its
//! last byte changed: a stick that serves other bytes than the digest names.
//!
//! What must hold: no panic; a refusal is 50 or 8 with a one-line reason; a resolved app
//! never read the damaged blob (its manifests, archive and configs are verified as read),
//! and every service's image is pinned by digest.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::gen::oci::{deterministic_tar, gzip};
use crate::gen::LayerEntry;
use usb_update::apps::content::{self, BlobSource};
use usb_update::error::{Code, Result};

pub const SEP: &[u8] = b"\n@@@\n";
const MAX_BLOBS: usize = 8;

struct Dir(PathBuf);

impl BlobSource for Dir {
    fn open_blob(&self, hex: &str) -> Result<Option<(File, u64)>> {
        let p = self.0.join(hex);
        match File::open(&p) {
            Ok(f) => {
                let len = f.metadata().map_err(anyhow::Error::from)?.len();
                Ok(Some((f, len)))
            }
            Err(_) => Ok(None),
        }
    }

    fn describe(&self) -> String {
        format!("fuzz store {}", self.0.display())
    }
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        out.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    out.push(rest);
    out
}

/// The blobs' final bytes, placeholders replaced, archives built.
fn materialise(raw: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut done: Vec<Option<(Vec<u8>, String)>> = vec![None; raw.len()];
    for i in (0..raw.len()).rev() {
        let mut text = raw[i].to_vec();
        for (j, d) in done.iter().enumerate().skip(i + 1) {
            let Some((bytes, hex)) = d else { continue };
            for (tag, with) in [
                (format!("{{D{j}}}"), format!("sha256:{hex}")),
                (format!("{{H{j}}}"), hex.clone()),
                (format!("{{S{j}}}"), bytes.len().to_string()),
            ] {
                text = replace(&text, tag.as_bytes(), with.as_bytes());
            }
        }
        if let Some(compose) = text.strip_prefix(b"TGZ\n") {
            let entry = LayerEntry::file("docker-compose.yml", compose.to_vec(), 0o644);
            match deterministic_tar(&[entry]).and_then(|t| gzip(&t)) {
                Ok(tgz) => text = tgz,
                Err(_) => return Vec::new(),
            }
        }
        let hex = hex::encode(Sha256::digest(&text));
        done[i] = Some((text, hex));
    }
    done.into_iter().flatten().map(|(b, _)| b).collect()
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// The outcome of one input: the resolution, the blobs' digests, the damaged blob.
fn run(data: &[u8]) -> Option<(Result<content::App>, Vec<String>, usize)> {
    let [bad, rest @ ..] = data else {
        return None;
    };
    let raw = split(rest);
    if raw.len() > MAX_BLOBS {
        return None;
    }
    let blobs = materialise(&raw);
    if blobs.is_empty() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("fuzz-oci")
        .tempdir_in(scratch())
        .ok()?;
    let digests: Vec<String> = blobs
        .iter()
        .map(|b| hex::encode(Sha256::digest(b)))
        .collect();
    for (i, (b, hex)) in blobs.iter().zip(&digests).enumerate() {
        let mut stored = b.clone();
        if i == usize::from(*bad) {
            match stored.last_mut() {
                Some(last) => *last ^= 1,
                None => stored.push(b'x'),
            }
        }
        std::fs::write(dir.path().join(hex), &stored).ok()?;
    }
    let src = Dir(dir.path().to_path_buf());
    let uri = format!("hub.foundries.io/fuzz/app@sha256:{}", digests[0]);
    Some((
        content::resolve(&src, "app", &uri),
        digests,
        usize::from(*bad),
    ))
}

/// The check of one fuzz input (see the module doc).
pub fn check(data: &[u8]) {
    let Some((outcome, digests, bad)) = run(data) else {
        return;
    };
    match outcome {
        Err(e) => {
            assert!(
                matches!(e.code(), Code::Copy | Code::ContentMissing),
                "code {}: {}",
                e.code(),
                e.one_line()
            );
            assert!(!e.one_line().contains('\n'), "{:?}", e.one_line());
        }
        Ok(app) => {
            let mut read = vec![app.digest.clone(), app.archive.digest.clone()];
            for i in &app.images {
                read.extend(i.manifests.iter().map(|m| m.digest.clone()));
                read.push(i.config.digest.clone());
            }
            if let Some(damaged) = digests.get(bad) {
                assert!(
                    !read.contains(damaged),
                    "a damaged blob was taken: {damaged}"
                );
            }
            for (svc, &i) in &app.services {
                let image = &app.images[i];
                assert!(
                    usb_update::apps::compose::pinned(&image.reference).is_some(),
                    "service {svc}: {} is not pinned",
                    image.reference
                );
            }
        }
    }
}

/// Where the blobs of one input are written: memory when there is a tmpfs.
fn scratch() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        Path::new("/tmp")
    }
}

/// Seeds: an app with one image, the same through a multi-platform index, with a damaged
/// config, with an unpinned image.
pub fn seeds() -> Vec<Vec<u8>> {
    // `{n}` below is replaced by a blob number, then `{Dn}`/`{Sn}` by the input's rules.
    let app = |layer: usize, cfg: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"{{D{cfg}}}"}},"layers":[{{"mediaType":"application/octet-stream","size":{{S{layer}}},"digest":"{{D{layer}}}"}}]}}"#
        )
    };
    let compose = |img: usize| {
        format!("TGZ\nservices:\n  app:\n    image: hub.foundries.io/fuzz/img@{{D{img}}}\n")
    };
    let image = |cfg: usize, layer: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{{S{cfg}}},"digest":"{{D{cfg}}}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":{{S{layer}}},"digest":"{{D{layer}}}"}}]}}"#
        )
    };
    let index = |m: usize| {
        let one = |arch: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":{{S{m}}},"digest":"{{D{m}}}","platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            )
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
            one("arm64"),
            one("amd64")
        )
    };
    let config =
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let join = |bad: u8, parts: &[String]| {
        let mut out = vec![bad];
        out.extend(parts.join("\n@@@\n").into_bytes());
        out
    };
    let plain = [
        app(1, 5),
        compose(2),
        image(3, 4),
        config.to_string(),
        "layer".to_string(),
        "{}".to_string(),
    ];
    let indexed = [
        app(1, 6),
        compose(2),
        index(3),
        image(4, 5),
        config.to_string(),
        "layer".to_string(),
        "{}".to_string(),
    ];
    let mut unpinned = plain.clone();
    unpinned[1] = "TGZ\nservices:\n  app:\n    image: busybox:latest\n".to_string();
    vec![
        join(0xff, &plain),
        join(0xff, &indexed),
        join(3, &plain),
        join(0xff, &unpinned),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds reach where they should: the first two resolve (one image, directly and
    /// through an index), the damaged and the unpinned ones are refused with 50.
    #[test]
    fn seeds_resolve_as_meant() {
        let s = seeds();
        let app = run(&s[0]).unwrap().0.unwrap();
        assert_eq!(app.images.len(), 1);
        assert_eq!(app.images[0].manifests.len(), 1);
        let app = run(&s[1]).unwrap().0.unwrap();
        assert_eq!(app.images[0].manifests.len(), 2, "index, then the manifest");
        for bad in [&s[2], &s[3]] {
            let e = run(bad).unwrap().0.unwrap_err();
            assert_eq!(e.code(), Code::Copy, "{}", e.one_line());
        }
    }
}
