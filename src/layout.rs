//! The one place that knows where things live under a target's deploy path.
//!
//! ```text
//! PATH/current -> releases/20261126120000    relative symlink, replaced by one rename
//! PATH/releases/20261126120000/               finished releases
//! PATH/releases/20261126120000.partial/       a release under construction (never served)
//! PATH/shared/                                persistent files, linked into every release
//! PATH/.cutover/manifests/<ID>                what each release contains (see source::manifest)
//! PATH/.cutover/lock/                         held while a deploy runs; `info` says by whom
//! PATH/.cutover/staging/<ID>/                 one deploy's uploads: files.N.tar, manifest
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

/// Paths under one deploy path, all absolute.
#[derive(Debug, Clone)]
pub struct Layout {
    root: String,
}

impl Layout {
    pub fn new(deploy_path: &str) -> Layout {
        Layout {
            root: deploy_path.trim_end_matches('/').to_string(),
        }
    }
    pub fn root(&self) -> &str {
        &self.root
    }
    fn at(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root)
    }
    pub fn current(&self) -> String {
        self.at(CURRENT)
    }
    pub fn releases(&self) -> String {
        self.at(RELEASES)
    }
    pub fn release(&self, id: &ReleaseId) -> String {
        self.at(&format!("{RELEASES}/{id}"))
    }
    pub fn shared(&self) -> String {
        self.at(SHARED)
    }
    pub fn state(&self) -> String {
        self.at(STATE)
    }
    pub fn manifests(&self) -> String {
        self.at(&format!("{STATE}/manifests"))
    }
    pub fn manifest(&self, id: &ReleaseId) -> String {
        self.at(&format!("{STATE}/manifests/{id}"))
    }
    pub fn lock(&self) -> String {
        self.at(&format!("{STATE}/lock"))
    }
    pub fn lock_info(&self) -> String {
        self.at(&format!("{STATE}/lock/info"))
    }
    pub fn staging_root(&self) -> String {
        self.at(&format!("{STATE}/staging"))
    }
    pub fn staging(&self, id: &ReleaseId) -> String {
        self.at(&format!("{STATE}/staging/{id}"))
    }
    /// The changed files of a deploy, as tar archives `files.0.tar`, `files.1.tar`, … (see
    /// `archive`).
    pub fn staging_archive(&self, id: &ReleaseId, part: usize) -> String {
        format!("{}/files.{part}.tar", self.staging(id))
    }
    pub fn staging_manifest(&self, id: &ReleaseId) -> String {
        format!("{}/manifest", self.staging(id))
    }
}

pub const CURRENT: &str = "current";
pub const RELEASES: &str = "releases";
pub const SHARED: &str = "shared";
pub const STATE: &str = ".cutover";

/// A release name: the UTC time of the deploy as 14 digits, `YYYYMMDDhhmmss`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseId(String);

impl std::fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ReleaseId {
    /// Only names of exactly 14 ASCII digits that form a real date are release names; anything
    /// else in `releases/` belongs to someone else and is left alone.
    pub fn parse(name: &str) -> Option<ReleaseId> {
        if name.len() == 14 && name.bytes().all(|b| b.is_ascii_digit()) && to_unix(name).is_some() {
            Some(ReleaseId(name.to_string()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_unix(secs: i64) -> ReleaseId {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        ReleaseId(format!(
            "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        ))
    }

    pub fn unix(&self) -> i64 {
        to_unix(&self.0).expect("validated at construction")
    }

    /// The name for a deploy starting now: the current UTC second, or the second after the
    /// newest existing release when that is later (a clock behind the server's, or two deploys
    /// in one second), so names stay unique and sort in deploy order.
    pub fn next<'a>(existing: impl IntoIterator<Item = &'a ReleaseId>) -> ReleaseId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let newest = existing.into_iter().map(ReleaseId::unix).max();
        match newest {
            Some(n) if n >= now => ReleaseId::from_unix(n + 1),
            _ => ReleaseId::from_unix(now),
        }
    }
}

fn to_unix(s: &str) -> Option<i64> {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0, 4)?,
        n(4, 6)?,
        n(6, 8)?,
        n(8, 10)?,
        n(10, 12)?,
        n(12, 14)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return None; // e.g. February 30th
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian, days since 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `/a/b/c` → `/a`, `/a/b`, `/a/b/c`.
pub fn ancestors(path: &str) -> Vec<String> {
    let path = path.trim_end_matches('/');
    let mut out: Vec<String> = path
        .match_indices('/')
        .map(|(i, _)| path[..i].to_string())
        .filter(|a| !a.is_empty())
        .collect();
    out.push(path.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_top_down() {
        assert_eq!(
            ancestors("/srv/app/.cutover/staging"),
            [
                "/srv",
                "/srv/app",
                "/srv/app/.cutover",
                "/srv/app/.cutover/staging"
            ]
        );
        assert_eq!(ancestors("/srv/"), ["/srv"]);
    }

    #[test]
    fn ids_are_utc_timestamps() {
        assert_eq!(ReleaseId::from_unix(0).as_str(), "19700101000000");
        assert_eq!(
            ReleaseId::from_unix(1_795_694_400).as_str(),
            "20261126120000"
        );
        assert_eq!(
            ReleaseId::parse("20261126120000").unwrap().unix(),
            1_795_694_400
        );
    }

    #[test]
    fn only_fourteen_digit_dates_are_release_names() {
        assert!(ReleaseId::parse("2026112612000").is_none());
        assert!(ReleaseId::parse("20261126120000.partial").is_none());
        assert!(ReleaseId::parse("20260230120000").is_none());
        assert!(ReleaseId::parse("old-site").is_none());
        assert!(ReleaseId::parse("２0261126120000").is_none());
    }

    #[test]
    fn next_id_is_later_than_every_existing_release() {
        let future = ReleaseId::parse("29991231235959").unwrap();
        assert_eq!(ReleaseId::next([&future]).as_str(), "30000101000000");
        let past = ReleaseId::parse("20000101000000").unwrap();
        assert!(ReleaseId::next([&past]) > past);
    }
}
