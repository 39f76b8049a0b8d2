//! The device's clock next to an expiry. Offline devices often have a wrong clock (no RTC
//! battery, never synced): an expiry error that only says "make a newer bundle" sends the
//! operator to the factory for nothing when the clock is the culprit. So every expiry error
//! names the device's time and says which of the two is likely wrong.

use crate::error::Error;

/// What the device knows about time when it judges an expiry: its clock, and the date its
/// running image was built (`None`: unknown). Times are `YYYY-MM-DDTHH:MM:SSZ`, compared as
/// strings like every expiry.
#[derive(Debug, Clone, Copy)]
pub struct Clock<'a> {
    pub now: &'a str,
    pub built: Option<&'a str>,
}

impl<'a> From<&'a str> for Clock<'a> {
    fn from(now: &'a str) -> Clock<'a> {
        Clock { now, built: None }
    }
}

impl<'a> From<&'a String> for Clock<'a> {
    fn from(now: &'a String) -> Clock<'a> {
        Clock::from(now.as_str())
    }
}

/// A clock this far past the newest expiry of everything the bundle carries is "years
/// ahead": a bundle whose every file, root included, expired that long ago is rarer than a
/// device clock that never was set.
pub const AHEAD_YEARS: u32 = 1;

impl Clock<'_> {
    /// Is the clock before the image's build date (then it is certainly wrong)?
    pub fn before_build(&self) -> bool {
        self.built.is_some_and(|b| self.now < b)
    }

    /// Is the clock more than [`AHEAD_YEARS`] past `horizon` (the newest expiry)?
    pub fn ahead_of(&self, horizon: &str) -> bool {
        match plus_years(horizon, AHEAD_YEARS) {
            Some(limit) => self.now > limit.as_str(),
            None => false,
        }
    }

    /// A line for `check` and the report when the clock is known wrong whatever the
    /// bundle: before the image's build date.
    pub fn warning(&self) -> Option<String> {
        let built = self.built.filter(|_| self.before_build())?;
        Some(format!(
            "the device clock ({}) is before this image was built ({built}): it is wrong, \
             and expiry dates are judged against it; set it",
            self.now
        ))
    }
}

/// `ts` moved `years` later (`None` if `ts` is not `YYYY-...`). Feb 29 becomes a string
/// that still sorts right.
fn plus_years(ts: &str, years: u32) -> Option<String> {
    let year: u32 = ts.get(..4)?.parse().ok()?;
    Some(format!("{:04}{}", year + years, ts.get(4..)?))
}

/// The expiry error: the file, its expiry, the device time, and which is likely wrong.
/// `horizon` is the newest expiry of all metadata the bundle carries.
pub(crate) fn expired(
    file: &str,
    role: &str,
    expires: &str,
    clock: &Clock,
    horizon: &str,
) -> Error {
    let now = clock.now;
    let head = format!("{file}: {role} metadata expired at {expires}, device time {now}");
    let msg = if let (true, Some(built)) = (clock.before_build(), clock.built) {
        format!(
            "{head}, before this image was built ({built}): the device clock is wrong, set it; \
             the bundle expired before the image was built too: make a newer bundle"
        )
    } else if clock.ahead_of(horizon) {
        format!(
            "{head}, more than {AHEAD_YEARS} year(s) past the newest expiry in the bundle \
             ({horizon}): the device clock is likely wrong, set it and retry (make a newer \
             bundle only if this one really is that old)"
        )
    } else {
        format!("{head}: make a newer bundle")
    };
    Error::expired(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "2031-01-01T00:00:00Z";

    fn msg(now: &str, built: Option<&str>, expires: &str) -> String {
        expired("t.json", "targets", expires, &Clock { now, built }, H).msg
    }

    #[test]
    fn a_clock_years_ahead_is_blamed() {
        let m = msg("2040-05-01T00:00:00Z", Some("2026-01-01T00:00:00Z"), H);
        assert_eq!(
            m,
            "t.json: targets metadata expired at 2031-01-01T00:00:00Z, device time \
             2040-05-01T00:00:00Z, more than 1 year(s) past the newest expiry in the bundle \
             (2031-01-01T00:00:00Z): the device clock is likely wrong, set it and retry (make \
             a newer bundle only if this one really is that old)"
        );
    }

    #[test]
    fn a_clock_just_past_the_expiry_blames_the_bundle() {
        let m = msg("2031-06-01T00:00:00Z", Some("2026-01-01T00:00:00Z"), H);
        assert!(
            m.ends_with("device time 2031-06-01T00:00:00Z: make a newer bundle"),
            "{m}"
        );
        // One year and a second past the horizon is "ahead".
        assert!(Clock::from("2032-01-01T00:00:01Z").ahead_of(H));
        assert!(!Clock::from("2032-01-01T00:00:00Z").ahead_of(H));
    }

    #[test]
    fn a_clock_before_the_build_is_wrong() {
        let c = Clock {
            now: "2001-01-01T00:00:00Z",
            built: Some("2023-11-14T22:13:20Z"),
        };
        assert!(c.before_build());
        assert!(c.warning().unwrap().starts_with(
            "the device clock (2001-01-01T00:00:00Z) is before this image was built (2023-11-14T22:13:20Z)"
        ));
        let m = msg(c.now, c.built, "2000-01-01T00:00:00Z");
        assert!(
            m.contains(
                "before this image was built (2023-11-14T22:13:20Z): the device clock is wrong"
            ),
            "{m}"
        );
        // Unknown build date: no verdict about the build.
        assert_eq!(Clock::from("2001-01-01T00:00:00Z").warning(), None);
        assert!(!Clock::from("garbage").ahead_of("x"));
    }
}
