//! Config (aktualizr-lite's lenient TOML) and policy (strict TOML) files as written by
//! anyone: no panic, only errors naming the file.

pub fn run(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("x.toml");
    std::fs::write(&file, data).expect("write");
    let paths = [file.clone()];
    if let Err(e) = usb_update::config::Config::load(&paths) {
        assert!(format!("{e:#}").contains("x.toml"), "{e:#}");
    }
    if let Err(e) = usb_update::policy::Policy::load(&paths) {
        assert!(
            format!("{e:#}").contains("x.toml") || format!("{e:#}").starts_with("policy:"),
            "{e:#}"
        );
    }
}
