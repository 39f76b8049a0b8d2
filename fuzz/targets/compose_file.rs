//! Compose files and image references from a hostile app: no panic; a file that parses
//! gives an override that parses back to the same images.

use std::collections::BTreeMap;

use usb_update::apps::compose::{self, ComposeFile};

pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((repo, hex)) = compose::pinned(text) {
            assert_eq!(format!("{repo}@sha256:{hex}"), text);
        }
    }
    let Ok(file) = ComposeFile::parse(data, "fuzz") else {
        return;
    };
    let images: BTreeMap<String, String> = file
        .services
        .iter()
        .filter_map(|(name, s)| Some((name.clone(), s.image.clone()?)))
        .collect();
    let yaml = compose::override_yaml(&images);
    let back = ComposeFile::parse(yaml.as_bytes(), "override").expect("our override parses");
    let again: BTreeMap<String, String> = back
        .services
        .iter()
        .filter_map(|(name, s)| Some((name.clone(), s.image.clone()?)))
        .collect();
    assert_eq!(again, images);
}
