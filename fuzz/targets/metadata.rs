//! Metadata parsing and canonicalisation: no panic on any input, and the canonical form
//! is a fixed point (parsing it back and canonicalising again gives the same bytes).

use usb_update::tuf::{canonical, meta};

pub fn run(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(c) = canonical::to_vec(&v) {
            let back: serde_json::Value =
                serde_json::from_slice(&c).expect("canonical output must be JSON");
            assert_eq!(back, v, "canonical form changed the value");
            assert_eq!(canonical::to_vec(&back).expect("canonical twice"), c);
        }
    }
    let Ok(mut env) = meta::Envelope::parse(data) else {
        return;
    };
    let _ = env.version();
    let _ = env.expires();
    let _ = meta::Root::from_envelope(&env);
    let _ = meta::timestamp_snapshot_ref(&env);
    let _ = meta::snapshot_targets_ref(&env);
    let _ = meta::bundle_index(&env);
    if let Ok(targets) = meta::targets(&mut env) {
        for t in targets {
            let _ = (t.version(), t.apps(), t.hardware_ids(), t.tags());
        }
    }
}
