//! After a site visit: two devices with the same hostname (and hardware id) update from one
//! stick; each leaves its own report, with its serial, and `usb-update report` on the stick
//! tells them apart.

use std::process::Command;

use crate::common::agent_rig::Rig;
use crate::common::apps::{app, T};
use crate::common::stick::Stick;
use crate::common::{Run, HWID};

/// `[provision] primary_ecu_serial` of the rig's device.
fn with_serial(r: &Rig, serial: &str) {
    std::fs::write(
        r.s.d.conf.join("50-serial.toml"),
        format!("[provision]\nprimary_ecu_serial = \"{serial}\"\n"),
    )
    .unwrap();
}

#[test]
fn two_devices_of_one_hostname_leave_two_reports() {
    let mut a = Rig::new();
    let b = Rig::new();
    with_serial(&a, "SN-A");
    with_serial(&b, "SN-B");
    let f = a.s.f.name.clone();
    let bundle = a.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let content = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(bundle.path())
        .arg(content.path().join("update"))
        .status()
        .unwrap();
    assert!(st.success());
    let stick = Stick::with(content.path(), "UPDATE");
    let oa = a.handle(&stick);
    assert_eq!(oa.code, 100, "{}{}", oa.stdout, oa.stderr);
    // The second device follows another tag: the bundle's is refused.
    std::fs::write(
        b.s.d.policy.join("60-tag.toml"),
        "[update]\nallowed_tags = [\"main\"]\n",
    )
    .unwrap();
    let ob = b.handle(&stick);
    assert_eq!(ob.code, 15, "{}{}", ob.stdout, ob.stderr);

    let host = nix::unistd::gethostname().unwrap();
    let host = host.to_string_lossy();
    let (table, json) = stick.mounted(|root| {
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_usb-update"))
                .arg("report")
                .args(args)
                .arg(root)
                .output()
                .unwrap();
            Run::from(out)
        };
        (run(&[]), run(&["--json"]))
    });
    assert_eq!(table.code, 0, "{}{}", table.stdout, table.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    let files: Vec<&str> = rows.iter().map(|r| r["file"].as_str().unwrap()).collect();
    let stem = usb_update::status::report_file_stem(&host, None);
    assert_eq!(
        files,
        [format!("{stem}-SN-A.json"), format!("{stem}-SN-B.json")]
    );
    for (row, (serial, code)) in rows.iter().zip([("SN-A", 100), ("SN-B", 15)]) {
        assert_eq!(row["verdict"], "intact", "{row}");
        let report = &row["report"];
        assert_eq!(report["device"], host.as_ref());
        assert_eq!(report["serial"], serial);
        assert_eq!(report["hardware_id"], HWID);
        assert_eq!(report["exit_code"], code);
        // The booted commit is the generator's, made at its fixed commit time.
        assert_eq!(report["image_built"], "2023-11-14T22:13:20Z");
        assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
        let line = table
            .stdout
            .lines()
            .find(|l| l.contains(&format!("{serial} / {HWID}")))
            .unwrap_or_else(|| panic!("no row of {serial}:\n{}", table.stdout));
        assert!(line.contains(&format!(" {code} ")), "{line}");
    }
}
