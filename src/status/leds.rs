//! The patterns on sysfs LEDs (`/sys/class/leds/<name>/`), with the kernel's `timer` trigger
//! only: it is in nearly every kernel, where `pattern` or `heartbeat` may not be.
//!
//! A person must tell the phases apart at a glance, without a legend (PX4's review of its
//! bootloader LEDs: "if ... an error happens it will look the same"), and must never take
//! "working" for "safe to remove":
//!
//! | pattern | LED | reads as |
//! |---|---|---|
//! | idle | off | nothing going on |
//! | working | fast flicker, 100 ms on / 100 ms off (5 Hz) | busy: do not remove the stick, do not power off |
//! | busy | even blink, 250 / 250 ms (2 Hz, countable) | another update runs: hands off, try this stick later |
//! | safe to remove | steady on | the stick can be pulled |
//! | success | slow blink, 1 s on / 1 s off | updated |
//! | error | a short flash once a second, 100 ms on / 900 ms off | failed: read the console or the report on the stick |
//!
//! Only "safe to remove" is steady, and only "working" and "busy" (both: hands off) blink
//! fast. The blinking ones look nothing like steady light within a second.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Pattern;

/// What one LED does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Light {
    Off,
    On,
    Blink { on_ms: u32, off_ms: u32 },
}

/// The LED pattern of each phase (the table above).
pub(crate) fn light(p: Pattern) -> Light {
    match p {
        Pattern::Idle => Light::Off,
        Pattern::Working => Light::Blink {
            on_ms: 100,
            off_ms: 100,
        },
        Pattern::Busy => Light::Blink {
            on_ms: 250,
            off_ms: 250,
        },
        Pattern::SafeToRemove => Light::On,
        Pattern::Success => Light::Blink {
            on_ms: 1000,
            off_ms: 1000,
        },
        Pattern::Error => Light::Blink {
            on_ms: 100,
            off_ms: 900,
        },
    }
}

/// One LED directory that existed when the agent started.
#[derive(Debug)]
pub(crate) struct Led {
    dir: PathBuf,
}

/// The configured LEDs that exist; each missing or oddly named one is reported once here
/// and left out, so a device with a different LED set still updates.
pub fn resolve(leds_path: &Path, names: &[String]) -> Vec<Led> {
    let mut out = Vec::new();
    for name in names {
        // A name is one directory entry: never a path that leads out of the LED class.
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        if !plain {
            tracing::warn!("LED {name:?} skipped: not an LED name");
            continue;
        }
        let dir = leds_path.join(name);
        if dir.join("trigger").is_file() {
            out.push(Led { dir });
        } else {
            tracing::warn!("LED {name} skipped: {} has no trigger", dir.display());
        }
    }
    out
}

impl Led {
    /// Trigger first: the kernel creates `delay_on`/`delay_off` only once the trigger is
    /// `timer`, and setting `none` switches the LED off before the brightness is set. A
    /// blinking LED's brightness is left alone: writing 0 would stop the blink, and writing
    /// to a hardware-offloaded blink may stop it on some drivers. Failures are logged only.
    pub fn show(&self, light: Light) {
        let written = match light {
            Light::Off => self
                .write("trigger", "none")
                .and_then(|()| self.write("brightness", "0")),
            Light::On => {
                let max = self.max_brightness();
                self.write("trigger", "none")
                    .and_then(|()| self.write("brightness", &max))
            }
            Light::Blink { on_ms, off_ms } => self
                .write("trigger", "timer")
                .and_then(|()| self.write("delay_on", &on_ms.to_string()))
                .and_then(|()| self.write("delay_off", &off_ms.to_string())),
        };
        if let Err(e) = written {
            tracing::warn!("LED {}: {e}", self.dir.display());
        }
    }

    /// Full brightness; without a readable `max_brightness`, 255, which the kernel clamps
    /// to the LED's maximum.
    fn max_brightness(&self) -> String {
        std::fs::read_to_string(self.dir.join("max_brightness"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s != "0")
            .unwrap_or_else(|| "255".into())
    }

    /// Writes an existing attribute; never creates a file (a missing one is an error).
    fn write(&self, attr: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(attr);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn led_dir(root: &Path, name: &str, files: &[&str]) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        for f in files {
            fs::write(dir.join(f), "").unwrap();
        }
        dir
    }

    fn read(dir: &Path, f: &str) -> String {
        fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn every_pattern_looks_different_and_only_safe_to_remove_is_steady() {
        let lights: Vec<Light> = Pattern::ALL.iter().map(|p| light(*p)).collect();
        for (i, a) in lights.iter().enumerate() {
            for b in &lights[i + 1..] {
                assert_ne!(a, b);
            }
        }
        for p in Pattern::ALL {
            assert_eq!(light(p) == Light::On, p == Pattern::SafeToRemove, "{p}");
        }
    }

    #[test]
    fn patterns_write_trigger_then_attributes() {
        let t = tempfile::tempdir().unwrap();
        let files = [
            "trigger",
            "brightness",
            "delay_on",
            "delay_off",
            "max_brightness",
        ];
        let dir = led_dir(t.path(), "status", &files);
        fs::write(dir.join("max_brightness"), "7\n").unwrap();
        let leds = resolve(t.path(), &["status".into()]);
        assert_eq!(leds.len(), 1);
        leds[0].show(light(Pattern::Success));
        let got = ["trigger", "delay_on", "delay_off"].map(|f| read(&dir, f));
        assert_eq!(got, ["timer", "1000", "1000"]);
        // A shorter value replaces a longer one whole.
        leds[0].show(light(Pattern::Working));
        assert_eq!(
            ["trigger", "delay_on", "delay_off"].map(|f| read(&dir, f)),
            ["timer", "100", "100"]
        );
        leds[0].show(light(Pattern::SafeToRemove));
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "7".into())
        );
        leds[0].show(light(Pattern::Idle));
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "0".into())
        );
    }

    #[test]
    fn missing_leds_and_attributes_are_skipped_and_never_created() {
        let t = tempfile::tempdir().unwrap();
        let dir = led_dir(t.path(), "only-trigger", &["trigger"]);
        led_dir(t.path(), "no-trigger", &["brightness"]);
        let names = ["only-trigger", "absent", "no-trigger", "../escape", ""].map(String::from);
        let leds = resolve(t.path(), &names);
        assert_eq!(leds.len(), 1);
        leds[0].show(light(Pattern::Working));
        assert_eq!(read(&dir, "trigger"), "timer");
        assert!(!dir.join("delay_on").exists());
        leds[0].show(light(Pattern::SafeToRemove));
        assert!(!dir.join("brightness").exists());
        assert_eq!(leds[0].max_brightness(), "255");
    }
}
