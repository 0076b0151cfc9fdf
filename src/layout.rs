//! The one place that knows where things live under a target's deploy path, and what a release
//! is called.
//!
//! ```text
//! PATH/current -> releases/20261126120000    relative symlink, replaced by one rename
//! PATH/releases/20261126120000/               finished releases
//! PATH/releases/20261126120000.partial/       a release under construction (never served)
//! PATH/shared/                                persistent files, linked into every release
//! PATH/.cutover/manifests/<ID>                what each release contains (see source::manifest)
//! PATH/.cutover/lock/                         held while a deploy runs; `info` says by whom
//! PATH/.cutover/staging/<ID>/                 one deploy's uploads: files.N.tar, manifest
//! PATH/.cutover/trash/<ID>.<PID>/             pruned releases on their way out
//! PATH/.cutover/current-manifest -> manifests/<ID>   the live release's manifest (a hint)
//! PATH/.cutover/current-digest -> <ID>-<DIGEST>      what release <ID> holds, in 32 hex digits
//! ```
//!
//! Only `current` and the links into `shared/` are symbolic links by design. Every other name
//! here is a real directory or file, and whatever cutover writes into or deletes from is checked
//! to be one first (see the survey and the scripts): a link planted where a directory is expected
//! is never followed.

use anyhow::{bail, Result};
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};

/// Paths under one deploy path, all absolute.
#[derive(Debug, Clone)]
pub struct Layout {
    root: String,
}

pub const CURRENT: &str = "current";
pub const RELEASES: &str = "releases";
pub const SHARED: &str = "shared";
pub const STATE: &str = ".cutover";
pub const MANIFESTS: &str = ".cutover/manifests";
pub const STAGING: &str = ".cutover/staging";
pub const TRASH: &str = ".cutover/trash";
pub const LOCK: &str = ".cutover/lock";
pub const CURRENT_MANIFEST: &str = ".cutover/current-manifest";
pub const CURRENT_DIGEST: &str = ".cutover/current-digest";

impl Layout {
    pub fn new(deploy_path: &str) -> Layout {
        Layout {
            root: deploy_path.trim_end_matches('/').to_string(),
        }
    }
    pub fn root(&self) -> &str {
        &self.root
    }
    /// `PATH/rel` for a path relative to the deploy path.
    pub fn at(&self, rel: &str) -> String {
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
    pub fn partial(&self, id: &ReleaseId) -> String {
        self.at(&format!("{RELEASES}/{id}.partial"))
    }
    pub fn shared(&self) -> String {
        self.at(SHARED)
    }
    pub fn state(&self) -> String {
        self.at(STATE)
    }
    pub fn manifests(&self) -> String {
        self.at(MANIFESTS)
    }
    pub fn manifest(&self, id: &ReleaseId) -> String {
        self.at(&format!("{MANIFESTS}/{id}"))
    }
    /// `.cutover/current-manifest`, a link to the manifest of the release `current` points to,
    /// kept by the scripts next to every swap: a hint that lets the survey open that manifest
    /// before it knows where `current` points (one round trip less). Never trusted: used only
    /// when its `release` record names the release `current` points to.
    pub fn current_manifest(&self) -> String {
        self.at(CURRENT_MANIFEST)
    }
    /// `.cutover/current-digest`, a link whose target is `ID-DIGEST`: the tree digest
    /// ([`crate::source::Manifest::tree_digest`]) of release ID, written by the deploy script
    /// before it swaps. When `current` points to that release and the digest is the source's,
    /// a deploy changes nothing, known from one round trip. A claim about one release, which
    /// never changes once built: it counts only for the release it names.
    pub fn current_digest(&self) -> String {
        self.at(CURRENT_DIGEST)
    }
    pub fn lock(&self) -> String {
        self.at(LOCK)
    }
    pub fn lock_info(&self) -> String {
        self.at(&format!("{LOCK}/info"))
    }
    pub fn staging_root(&self) -> String {
        self.at(STAGING)
    }
    pub fn staging(&self, id: &ReleaseId) -> String {
        self.at(&format!("{STAGING}/{id}"))
    }
    pub fn trash(&self) -> String {
        self.at(TRASH)
    }
    /// The changed files of a deploy, as tar archives `files.0.tar`, `files.1.tar`, … (see
    /// `archive`).
    pub fn staging_archive(&self, id: &ReleaseId, part: usize) -> String {
        format!("{}/files.{part}.tar", self.staging(id))
    }
    pub fn staging_manifest(&self, id: &ReleaseId) -> String {
        format!("{}/manifest", self.staging(id))
    }
    /// The directories of the layout that must be real directories when they exist (never
    /// symlinks), relative to the deploy path, parents first.
    pub const DIRECTORIES: [&'static str; 5] = [RELEASES, STATE, MANIFESTS, STAGING, TRASH];
}

/// A release name: the UTC time of the deploy as 14 digits, `YYYYMMDDhhmmss`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ReleaseId(String);

impl std::fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const ID_FORMAT: &str = "%Y%m%d%H%M%S";

/// Releases dated further ahead of this machine's clock than this are worth a warning: every
/// later release name is pushed past them.
pub const FUTURE_TOLERANCE_SECS: i64 = 86_400;

impl ReleaseId {
    /// Only names of exactly 14 ASCII digits that form a real date are release names; anything
    /// else in `releases/` belongs to someone else and is left alone.
    pub fn parse(name: &str) -> Option<ReleaseId> {
        if name.len() != 14 || !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        NaiveDateTime::parse_from_str(name, ID_FORMAT)
            .ok()
            .map(|_| ReleaseId(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The release name for a UTC time; None outside years 1000-9999 (not 14 digits).
    pub fn at(time: DateTime<Utc>) -> Option<ReleaseId> {
        let s = time.format(ID_FORMAT).to_string();
        ReleaseId::parse(&s)
    }

    pub fn time(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0, ID_FORMAT)
            .expect("validated at construction")
            .and_utc()
    }

    /// The name for a deploy starting `now`: that UTC second, or the second after the newest
    /// existing release when that is later (a clock behind the server's, two deploys in one
    /// second, a release dated in the future), so names stay unique, 14 digits long, and sort
    /// in deploy order. After `99991231235959` there is no name left: an error says so.
    pub fn next<'a>(
        existing: impl IntoIterator<Item = &'a ReleaseId>,
        now: DateTime<Utc>,
    ) -> Result<ReleaseId> {
        // Names have whole seconds: compare whole seconds.
        let now = now.with_nanosecond(0).unwrap_or(now);
        let newest = existing.into_iter().max();
        let candidate = match newest {
            Some(n) if n.time() >= now => n.time() + chrono::Duration::seconds(1),
            _ => now,
        };
        match ReleaseId::at(candidate) {
            Some(id) => Ok(id),
            None => bail!(
                "no release name is left after {}: release names are 14-digit UTC times and end at \
                 99991231235959. Remove that release (it is dated in the future) and deploy again",
                newest.map(ReleaseId::as_str).unwrap_or("?")
            ),
        }
    }

    /// This name, or the first second after it that is not `taken`: names in `releases/` that
    /// are no releases (a file, a link, a leftover `.partial`, another tool's directory) are
    /// never built over, but a new release does not have to sort after them, so one dated in
    /// the future does not push every new name there.
    pub fn avoiding(self, taken: &[ReleaseId]) -> Result<ReleaseId> {
        let mut id = self;
        while taken.contains(&id) {
            id = match ReleaseId::at(id.time() + chrono::Duration::seconds(1)) {
                Some(next) => next,
                None => bail!(
                    "no release name is left after {id}: release names are 14-digit UTC times and end at \
                     99991231235959, and {id} is taken by something in releases/ that is not a release: \
                     move it away and deploy again"
                ),
            };
        }
        Ok(id)
    }

    /// How far this release is dated ahead of `now`, when that is more than a day.
    pub fn ahead_of(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let ahead = self.time() - now;
        (ahead.num_seconds() > FUTURE_TOLERANCE_SECS).then_some(ahead)
    }
}

/// This machine's clock, in UTC.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// `2026-11-26T12:00:00Z`: how times are written into lock and release records.
pub fn iso(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The inverse of [`iso`].
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// "3 min", "2 h", "5 days": how long ago something happened, for people.
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{} s", s.max(0)),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
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
    use chrono::TimeZone;

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
        let t = Utc.timestamp_opt(1_795_694_400, 0).unwrap();
        assert_eq!(ReleaseId::at(t).unwrap().as_str(), "20261126120000");
        assert_eq!(ReleaseId::parse("20261126120000").unwrap().time(), t);
        assert_eq!(iso(t), "2026-11-26T12:00:00Z");
        assert_eq!(parse_iso("2026-11-26T12:00:00Z"), Some(t));
    }

    #[test]
    fn only_fourteen_digit_dates_are_release_names() {
        assert!(ReleaseId::parse("2026112612000").is_none());
        assert!(ReleaseId::parse("20261126120000.partial").is_none());
        assert!(ReleaseId::parse("20260230120000").is_none());
        assert!(ReleaseId::parse("20261126126000").is_none());
        assert!(ReleaseId::parse("old-site").is_none());
        assert!(ReleaseId::parse("２0261126120000").is_none());
        assert!(ReleaseId::parse("+2026112612000").is_none());
    }

    #[test]
    fn next_id_is_later_than_every_existing_release() {
        let now = Utc.timestamp_opt(1_795_694_400, 0).unwrap();
        let future = ReleaseId::parse("29991231235959").unwrap();
        assert_eq!(
            ReleaseId::next([&future], now).unwrap().as_str(),
            "30000101000000"
        );
        let past = ReleaseId::parse("20000101000000").unwrap();
        assert_eq!(
            ReleaseId::next([&past], now).unwrap().as_str(),
            "20261126120000"
        );
        let same = ReleaseId::parse("20261126120000").unwrap();
        assert_eq!(
            ReleaseId::next([&same], now).unwrap().as_str(),
            "20261126120001"
        );
        let later_in_that_second = now + chrono::Duration::milliseconds(500);
        assert_eq!(
            ReleaseId::next([&same], later_in_that_second)
                .unwrap()
                .as_str(),
            "20261126120001"
        );
    }

    #[test]
    fn the_end_of_the_id_space_is_a_clear_refusal() {
        let now = Utc.timestamp_opt(1_795_694_400, 0).unwrap();
        let last = ReleaseId::parse("99991231235959").unwrap();
        let e = ReleaseId::next([&last], now).unwrap_err().to_string();
        assert!(e.contains("99991231235959") && e.contains("Remove"), "{e}");
    }

    #[test]
    fn names_that_are_no_releases_are_avoided_not_sorted_after() {
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap();
        let id = ReleaseId::at(now).unwrap();
        let far = ReleaseId::parse("20991231235959").unwrap();
        assert_eq!(id.clone().avoiding(std::slice::from_ref(&far)).unwrap(), id);
        let same = [id.clone(), ReleaseId::parse("20261204120001").unwrap()];
        assert_eq!(id.avoiding(&same).unwrap().as_str(), "20261204120002");
        let last = ReleaseId::parse("99991231235959").unwrap();
        let e = last
            .clone()
            .avoiding(std::slice::from_ref(&last))
            .unwrap_err();
        assert!(e.to_string().contains("not a release"), "{e}");
    }

    #[test]
    fn releases_far_in_the_future_are_noticed() {
        let now = Utc.timestamp_opt(1_795_694_400, 0).unwrap();
        assert!(ReleaseId::parse("20261126130000")
            .unwrap()
            .ahead_of(now)
            .is_none());
        assert!(ReleaseId::parse("20261128120000")
            .unwrap()
            .ahead_of(now)
            .is_some());
    }
}
