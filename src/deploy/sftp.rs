//! One host's deploy (or rollback) carried out with SFTP requests alone, for a target with
//! `sftp_only = true`: no command runs on the server. It does what the deploy script
//! (`templates/deploy.sh.hbs`) does, with the same layout, names and guarantees, so a target can
//! switch modes between deploys.
//!
//! ```text
//! build    flight 1  tidy leftovers · stage the manifest · probe SYMLINK's argument order ·
//!                    MKDIR releases/ID.partial and every directory, parents first (one
//!                    channel, in order) · walk the previous release and shared/
//!          then      the manifest's links and changed files (OPEN, then WRITEs + FSETSTAT +
//!                    CLOSE: two round trips a file, hundreds at once) once the directories
//!                    exist; unchanged files hard-linked from the previous release (else
//!                    copy-data, else uploaded again), runtime files carried over, shared/
//!                    linked, once the walks are in
//! ready    flight    RENAME releases/ID.partial → releases/ID, the staged manifest →
//!                    .cutover/manifests/ID (plain RENAME refuses an existing target)
//! go       flight    SYMLINK .current.*.tmp → releases/ID, posix-rename@ it over current,
//!                    READLINK current: the read-back must say releases/ID
//! commit   flight    old releases renamed into .cutover/trash/ with their manifests removed,
//!                    staging and the lock removed; then the trash emptied
//! ```
//!
//! **Flights.** Every request goes out the moment it is made ([`crate::remote::sftp::Sftp::send_mkdir`] and the
//! others) and its answer is awaited later; OpenSSH's sftp-server takes one channel's requests
//! in order, so a MKDIR and the SYMLINK inside it share a flight on one channel. Only true
//! dependencies wait for an answer: a WRITE needs its OPEN's handle, the swap needs the release
//! renamed, a hard link needs the walk that proved its source a regular file. So a build costs a
//! handful of round trips, not some per file.
//!
//! **Bounds.** The work is spread over [`CHANNELS`] SFTP channels of the one connection (one
//! sftp-server process each). A channel keeps fewer than 120 handles open (russh-sftp mangles
//! OpenSSH's 129th: see `remote::sftp`), so an OPEN first takes a handle permit from its channel;
//! requests that need no handle are bounded per channel too, and the bytes read from local
//! files but not yet written are bounded by `UPLOAD_BUDGET_KIB`.
//!
//! **Nothing followed that cutover did not make.** The previous release is read by a walk that
//! never enters a symbolic link ([`Channels::walk`]); a file is hard-linked or copied from it
//! only when the walk saw a regular file there, with the manifest's size and mode, under real
//! directories; anything else is uploaded again from the source. A runtime symlink is copied as
//! a link. Every file of the new release is created new (CREATE|EXCL): nothing is ever written
//! into an existing inode, so a hard link shared with the previous release keeps its content.
//!
//! **Failures, step by step.** Until the swap, `current` and the live release are untouched:
//! a failure, Ctrl-C or a lost connection stops the build, and [`SftpRun::call_off`] first waits
//! until every request already sent has been carried out ([`Channels::fence`]), then removes
//! what this run made (the probe, `releases/ID.partial` or `releases/ID` and its manifest, a
//! temporary link); the host then removes staging and gives the lock back (over a new
//! connection when the old one is gone). What cannot be removed is left under names the next
//! deploy removes (`*.partial`, staging, `probe.*`, `.current.*.tmp`), in either mode. The swap
//! is one rename(2): a failure before it leaves `current` as it was, after it `current` names
//! the new release, and the read-back says which. After the swap and before the commit (a
//! fleet's other host failing), call_off swaps back the same way. A failure during the commit
//! leaves the new release live: exit 3, naming what was left.
//!
//! The stages are here; the build's parts are in `build` (directories, links, the walks and
//! what they decide, the shared walk), `fill` (the files: hard links, copy-data, uploads) and
//! `tidy` (leftovers of interrupted deploys).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use futures::FutureExt;
use russh_sftp::protocol::FileAttributes;

use crate::config::Target;
use crate::layout::{self, Layout, ReleaseId};
use crate::lock::HeldLock;
use crate::output::{bytes, Output};
use crate::plan::Plan;
use crate::remote::sftp::{
    kind_of, status_of, Channels, SymlinkOrder, COPY_DATA, HARDLINK, POSIX_RENAME, READ_ONLY,
    READ_ONLY_FIX,
};
use crate::remote::{PathKind, Progress, Session};
use crate::source::Manifest;
use crate::survey::Survey;

mod build;
mod fill;
mod tidy;

/// SFTP channels a deploy spreads its work over: with OpenSSH's default MaxSessions of 10,
/// room is left for the survey's own and another client.
pub const CHANNELS: usize = 4;

/// Bytes read from local files and not yet written on the server, at most (in KiB).
const UPLOAD_BUDGET_KIB: u32 = 64 * 1024;

/// WRITEs in flight for one file.
const WRITES_PER_FILE: usize = 16;

/// Runtime files named in a warning, at most (then "and N more").
const NAMED: usize = 10;

/// Where the job is headed: a new release, or back to an older one.
#[derive(Debug, Clone)]
enum Job {
    Deploy {
        id: ReleaseId,
        /// What `current` pointed to before (None: there was no `current`).
        was_current: Option<String>,
        /// Releases that must come after every other (the survey's, and those tidied away).
        releases: Vec<ReleaseId>,
        keep: u32,
    },
    Rollback {
        from: ReleaseId,
        to: ReleaseId,
    },
}

/// What this run has made on the server so far: what calling it off takes back.
#[derive(Debug, Default)]
struct Made {
    probe: Option<String>,
    partial: Option<String>,
    /// `releases/ID` and its manifest may exist (the rename flight was sent).
    release: Option<ReleaseId>,
    swap_link: Option<String>,
    /// A swap was sent: `current` may point elsewhere than before.
    swapped: bool,
}

/// What one run says beyond its result: warnings (counted for the summary), and whether
/// something was left behind that a later deploy must remove (exit 3 once live).
#[derive(Default)]
struct Notes {
    warnings: Mutex<Vec<String>>,
    left_behind: AtomicBool,
}

impl Notes {
    fn warn(&self, out: &Output, msg: String) {
        out.warn(&msg);
        self.warnings.lock().expect("not poisoned").push(msg);
    }
    fn count(&self) -> u64 {
        self.warnings.lock().expect("not poisoned").len() as u64
    }
}

/// What a build made, for the report.
pub struct Built {
    pub links: u64,
    pub bytes_sent: u64,
}

/// What a build needs to know.
pub struct Build<'a> {
    pub target: &'a Target,
    pub id: &'a ReleaseId,
    pub plan: &'a Plan,
    pub new: &'a Manifest,
    pub survey: &'a Survey,
    /// The manifest stored for the release: `new` with its `#` records.
    pub record: String,
    pub progress: &'a dyn Progress,
}

/// How calling a run off ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalledOff {
    /// Nothing had been switched: `current` is as it was.
    Untouched,
    /// `current` was switched back.
    Reverted,
    /// `current` could not be switched back: it may point to the new release.
    Unknown,
}

/// One host's SFTP-only deploy or rollback, stage by stage (see the module docs).
pub struct SftpRun {
    channels: Channels,
    layout: Layout,
    out: Output,
    /// Names this run's temporary entries (a probe, a swap link, trash entries).
    suffix: String,
    order: SymlinkOrder,
    job: Option<Job>,
    made: Made,
    notes: Notes,
    /// Releases the tidy-up removed (unfinished ones of interrupted deploys).
    tidied: Vec<ReleaseId>,
    /// Still worth asking for: offered, and not answered "unsupported" yet.
    hardlink: AtomicBool,
    copy_data: AtomicBool,
    /// KiB read from local files and not yet written (see [`UPLOAD_BUDGET_KIB`]).
    budget: Arc<tokio::sync::Semaphore>,
}

/// Counts for the `-v` line and the report.
#[derive(Default)]
struct Stats {
    linked: AtomicU64,
    copied: AtomicU64,
    uploaded: AtomicU64,
    bytes: AtomicU64,
}

impl SftpRun {
    pub fn new(channels: Channels, layout: Layout, out: Output) -> SftpRun {
        let hardlink = channels.first().offered(HARDLINK);
        let copy_data = channels.first().offered(COPY_DATA);
        SftpRun {
            channels,
            layout,
            out,
            suffix: crate::lock::new_token()[..8].to_string(),
            order: SymlinkOrder::TargetFirst,
            job: None,
            made: Made::default(),
            notes: Notes::default(),
            tidied: Vec::new(),
            hardlink: AtomicBool::new(hardlink),
            copy_data: AtomicBool::new(copy_data),
            budget: Arc::new(tokio::sync::Semaphore::new(UPLOAD_BUDGET_KIB as usize)),
        }
    }

    /// Refuse a server that cannot swap atomically, before anything is built or locked: its
    /// SFTP subsystem lacks posix-rename, or is read-only altogether (said as such: the
    /// missing extension is only a symptom there). `stage` names where the question is asked.
    pub async fn require_posix_rename(
        session: &Session,
        target: &Target,
        stage: &str,
    ) -> Result<()> {
        let asked = |r: Result<bool>| r.with_context(|| target.stage(stage));
        if asked(session.sftp_offers(POSIX_RENAME).await)? {
            return Ok(());
        }
        if asked(session.sftp_read_only().await)? {
            return Err(anyhow!(crate::error::with_hint(
                format!(
                    "{}: {READ_ONLY}, so a deploy cannot write there; nothing was changed",
                    target.stage("survey")
                ),
                READ_ONLY_FIX
            )));
        }
        Err(anyhow!(crate::error::with_hint(
            format!(
                "{}: the server's SFTP subsystem does not offer {POSIX_RENAME}: without it, current cannot be \
                 replaced in one atomic rename, and cutover never removes current to re-create it; nothing was changed",
                target.stage("survey")
            ),
            format!(
                "enable it in the server's sftp-server (OpenSSH 4.9 or later offers it unless `-P posix-rename` \
                 switches it off), or let the account run commands and set sftp_only = false for target {}",
                target.name
            )
        )))
    }

    /// Warnings said so far (for the report).
    pub fn warnings(&self) -> Vec<String> {
        self.notes.warnings.lock().expect("not poisoned").clone()
    }

    pub fn warning_count(&self) -> u64 {
        self.notes.count()
    }

    /// Was a swap sent whose outcome is not known to have left `current` as it was?
    pub fn may_have_swapped(&self) -> bool {
        self.made.swapped
    }

    /// Paths of this run that are safe to remove whatever happened (none is live): for a
    /// clean-up over a new connection.
    pub fn temporaries(&self) -> Vec<String> {
        let m = &self.made;
        [&m.probe, &m.partial, &m.swap_link]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    // --- build -------------------------------------------------------------------------------

    /// Build `releases/ID` and store its manifest: ready to swap.
    pub async fn build(&mut self, b: Build<'_>) -> Result<Built> {
        let id = b.id.clone();
        self.job = Some(Job::Deploy {
            id: id.clone(),
            was_current: match &b.survey.current {
                crate::survey::Current::Link { target, .. } => Some(target.clone()),
                _ => None,
            },
            releases: b.survey.releases.clone(),
            keep: b.target.keep_releases,
        });
        let partial = self.layout.partial(&id);
        self.made.probe = Some(self.layout.at(&format!(
            "{}/probe.sftp-{}",
            layout::STATE,
            self.suffix
        )));
        self.made.partial = Some(partial.clone());
        let stats = Stats::default();
        let ((tidied, ()), (order, links)) = tokio::try_join!(
            async {
                tokio::try_join!(
                    self.tidy(b.survey, &id).map(Ok::<_, anyhow::Error>),
                    self.stage_manifest(b.survey, &id, &b.record),
                )
            },
            self.assemble(&b, &partial, &stats),
        )?;
        self.tidied = tidied;
        self.order = order;
        self.out.stage(format_args!(
            "built {partial}: {} hard-linked, {} copied on the server, {} uploaded ({}), {links} shared links",
            stats.linked.load(Ordering::Relaxed),
            stats.copied.load(Ordering::Relaxed),
            stats.uploaded.load(Ordering::Relaxed),
            bytes(stats.bytes.load(Ordering::Relaxed)),
        ));

        // The release takes its name, then its manifest: from now on it counts as a release.
        let ch = self.channels.first();
        self.made.release = Some(id.clone());
        let renamed = ch.send_rename(&partial, &self.layout.release(&id));
        let stored = ch.send_rename(
            &self.layout.staging_manifest(&id),
            &self.layout.manifest(&id),
        );
        let (renamed, stored) = tokio::join!(renamed, stored);
        renamed?;
        self.made.partial = None;
        stored?;
        Ok(Built {
            links,
            bytes_sent: stats.bytes.load(Ordering::Relaxed),
        })
    }

    // --- rollback -------------------------------------------------------------------------------

    /// A rollback from `from` to `to`, under the lock the host took: `current` must still point
    /// to `from` and `to` must still be a finished release. Ready to swap.
    pub async fn prepare_rollback(&mut self, from: &ReleaseId, to: &ReleaseId) -> Result<()> {
        self.job = Some(Job::Rollback {
            from: from.clone(),
            to: to.clone(),
        });
        let scratch = self
            .layout
            .at(&format!("{}/probe.sftp-{}", layout::STATE, self.suffix));
        self.made.probe = Some(scratch.clone());
        let ch = self.channels.first();
        let live = ch.send_readlink(&self.layout.current());
        let release = ch.send_lstat(&self.layout.release(to));
        let manifest = ch.send_lstat(&self.layout.manifest(to));
        let (order, live, release, manifest) =
            tokio::join!(ch.probe_symlink_order(&scratch), live, release, manifest);
        self.order = order?;
        self.made.probe = None;
        let live = live.unwrap_or_default();
        if crate::survey::Current::release_named_by(&live, &self.layout).as_ref() != Some(from) {
            bail!(
                "current points to {live:?}, not releases/{from} as planned; look with cutover releases and try again"
            );
        }
        let is = |a: Option<FileAttributes>, kind| a.is_some_and(|a| kind_of(&a) == kind);
        if !is(release?, PathKind::Dir) || !is(manifest?, PathKind::File) {
            bail!("release {to} is gone (or is not a finished release)");
        }
        Ok(())
    }

    // --- swap, commit, call off --------------------------------------------------------------------

    /// The swap: `current` now points to the new release (or, rolling back, the older one).
    pub async fn swap(&mut self) -> Result<()> {
        let to = match self
            .job
            .as_ref()
            .expect("built or prepared before the swap")
        {
            Job::Deploy { id, .. } => format!("{}/{id}", layout::RELEASES),
            Job::Rollback { to, .. } => format!("{}/{to}", layout::RELEASES),
        };
        self.point_current_at(&to).await
    }

    /// A new link to `target` made beside `current`, renamed over it with posix-rename (one
    /// rename(2): every request sees the old target or the new one), and read back; all in one
    /// flight on one channel, which takes them in order. A failed SYMLINK makes the rename fail
    /// too, and a failed rename leaves `current` as it was.
    async fn point_current_at(&mut self, target: &str) -> Result<()> {
        let tmp = self
            .layout
            .at(&format!(".current.sftp-{}.tmp", self.suffix));
        let current = self.layout.current();
        let ch = self.channels.first().clone();
        self.made.swap_link = Some(tmp.clone());
        self.made.swapped = true;
        // No digest link is kept here (see `Layout::current_digest`): one left by a deploy
        // with a script goes first, so it can never speak for a release this one builds.
        let unclaimed = ch.send_remove(&self.layout.current_digest());
        let cleared = ch.send_remove(&tmp);
        let linked = ch.send_symlink(target, &tmp, self.order);
        let renamed = ch.send_posix_rename(&tmp, &current);
        let read = ch.send_readlink(&current);
        let (_, _, linked, renamed, read) = tokio::join!(unclaimed, cleared, linked, renamed, read);
        if let Err(e) = linked.and(renamed) {
            if status_of(&e).is_some() {
                // The server refused: rename(2) did not happen, current is as it was.
                self.made.swapped = false;
                let _ = ch.send_remove(&tmp).await;
                self.made.swap_link = None;
            }
            return Err(e);
        }
        self.made.swap_link = None;
        let read = read?;
        if read != target {
            bail!("after the swap {current} points to {read:?}, not to {target}");
        }
        self.out
            .stage(format_args!("current -> {target} (posix-rename)"));
        Ok(())
    }

    /// After the swap: old releases pruned (renamed into the trash, then their manifests
    /// removed, never the live one), staging and the lock removed in one flight; then the
    /// trash emptied. 0, or 3 when something was left behind (the release stays live).
    pub async fn commit(&mut self, lock: Option<HeldLock>) -> u32 {
        let job = self.job.clone().expect("built before the commit");
        let l = self.layout.clone();
        let ch = self.channels.first().clone();
        let mut pruned = Vec::new();
        let mut prune_flight = Vec::new();
        let mut staging = None;
        if let Job::Deploy {
            id, releases, keep, ..
        } = &job
        {
            let old = to_prune(releases, &self.tidied, id, *keep);
            if !old.is_empty() {
                drop(ch.send_mkdir(&l.trash(), 0o755));
            }
            for name in old {
                let trashed = format!("{}/{name}.sftp-{}", l.trash(), self.suffix);
                let moved = ch.send_rename(&l.release(&name), &trashed);
                prune_flight.push((name, trashed, moved));
            }
        }
        // The release leaves releases/ first, its manifest after, as in the deploy script: a
        // release that could not move keeps its manifest (it is still a release, and the next
        // deploy prunes it); a manifest left without its release is removed by the next one.
        for (name, trashed, moved) in prune_flight {
            let moved = match moved.await {
                // A directory moves to another parent only if it is writable (its `..`
                // changes): one made read-only (an FTP client's permissions dialog, chmod -R
                // a-w) is made writable for it, as the deploy script does.
                Err(_) => match writable(&ch, &l.release(&name)).await {
                    true => ch.send_rename(&l.release(&name), &trashed).await,
                    false => Err(anyhow::anyhow!("permission denied")),
                },
                ok => ok,
            };
            match moved {
                Ok(()) => {
                    drop(ch.send_remove(&l.manifest(&name)));
                    pruned.push((name, trashed));
                }
                Err(e) => self.left(format!(
                    "could not move old release {} out of releases/; remove it by hand ({e:#})",
                    l.release(&name)
                )),
            }
        }
        if let Job::Deploy { id, .. } = &job {
            staging = Some((l.staging(id), ch.send_rmdir(&l.staging(id))));
        }
        let unlocked = lock.map(|_| {
            futures::future::join(ch.send_remove(&l.lock_info()), ch.send_rmdir(&l.lock()))
        });
        if let Some((path, removed)) = staging {
            if removed.await.is_err() {
                if let Err(e) = self.channels.remove_tree(&path).await {
                    self.left(format!("could not remove {path}: {e:#}"));
                }
            }
        }
        if let Some(unlocked) = unlocked {
            if let (_, Err(e)) = unlocked.await {
                self.left(format!(
                    "could not remove the lock {}: run cutover unlock ({e:#})",
                    l.lock()
                ));
            }
        }
        // The result is final; the trash is emptied now, and what cannot be deleted waits
        // there for the next deploy (which tries again and says so).
        let this = &*self;
        let removed = pruned.iter().map(|(name, trashed)| async move {
            match this.channels.remove_tree(trashed).await {
                Ok(()) => this.out.info(format_args!("pruned release {name}")),
                Err(_) => this.out.info(format_args!(
                    "warning: old release {name} was moved to {trashed} but could not be deleted; the next deploy tries again and reports it"
                )),
            }
        });
        futures::future::join_all(removed).await;
        if self.notes.left_behind.load(Ordering::Relaxed) {
            3
        } else {
            0
        }
    }

    /// Stop: before the swap, remove what this run made; after it, switch `current` back
    /// first (a deploy's new release is removed then too; a rollback removes nothing). The
    /// host removes staging and gives the lock back afterwards.
    pub async fn call_off(&mut self) -> CalledOff {
        // Whatever an abandoned flight still has on its way is carried out before the
        // clean-up begins.
        self.channels.fence().await;
        let mut outcome = CalledOff::Untouched;
        if self.made.swapped {
            let back = match self.job.clone() {
                Some(Job::Deploy {
                    was_current: Some(t),
                    ..
                }) => Some(t),
                Some(Job::Deploy { .. }) => None,
                Some(Job::Rollback { from, .. }) => Some(format!("{}/{from}", layout::RELEASES)),
                None => None,
            };
            let switched = match &back {
                Some(t) => self.point_current_at(t).await,
                // The first release: there was no current to go back to.
                None => {
                    self.channels
                        .first()
                        .send_remove(&self.layout.current())
                        .await
                }
            };
            match switched {
                Ok(()) => {
                    self.made.swapped = false;
                    outcome = CalledOff::Reverted;
                    self.out.info(format_args!(
                        "current switched back{}",
                        back.map(|t| format!(" to {t}")).unwrap_or_default()
                    ));
                }
                Err(e) => {
                    self.out.warn(format_args!(
                        "could not switch current back ({e:#}): it may point to the new release; see cutover releases"
                    ));
                    return CalledOff::Unknown;
                }
            }
        }
        let mut doomed = self.temporaries();
        if let (Some(Job::Deploy { .. }), Some(id)) = (&self.job, &self.made.release) {
            doomed.push(self.layout.release(id));
            doomed.push(self.layout.manifest(id));
        }
        for path in doomed {
            match self.channels.remove_tree(&path).await {
                Ok(()) => {}
                Err(e) => self.out.warn(format_args!(
                    "could not remove {path} ({e:#}); the next deploy removes it"
                )),
            }
        }
        self.made = Made::default();
        outcome
    }
}

/// The releases a deploy of `live` prunes: the oldest beyond `keep` of those the survey found
/// (less those the tidy-up removed) and the new one, never the new one itself (nor, as it is
/// the newest, anything after it).
fn to_prune(
    surveyed: &[ReleaseId],
    tidied: &[ReleaseId],
    live: &ReleaseId,
    keep: u32,
) -> Vec<ReleaseId> {
    let mut all: Vec<ReleaseId> = surveyed
        .iter()
        .filter(|r| !tidied.contains(r))
        .chain(std::iter::once(live))
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    let excess = all.len().saturating_sub(keep as usize);
    all.into_iter()
        .take(excess)
        .take_while(|r| r != live)
        .collect()
}

/// `a, b, c and 7 more`.
fn named(paths: &[String]) -> String {
    let shown: Vec<String> = paths.iter().take(NAMED).map(|p| format!("{p:?}")).collect();
    match paths.len().saturating_sub(NAMED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Make the directory `path` writable by its owner (SETSTAT u+w), when it is a directory that
/// is not: true when it now is (or was already). For moving it, or emptying it.
pub async fn writable(ch: &crate::remote::sftp::Sftp, path: &str) -> bool {
    let Ok(Some(attrs)) = ch.send_lstat(path).await else {
        return false;
    };
    let Some(mode) = attrs.permissions else {
        return false;
    };
    if mode & 0o170000 != 0o040000 {
        return false;
    }
    if mode & 0o300 == 0o300 {
        return true;
    }
    let set = russh_sftp::protocol::FileAttributes {
        permissions: Some(mode & 0o7777 | 0o700),
        ..russh_sftp::protocol::FileAttributes::empty()
    };
    ch.send_setstat(path, set).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<ReleaseId> {
        names.iter().map(|n| ReleaseId::parse(n).unwrap()).collect()
    }

    #[test]
    fn pruning_keeps_the_newest_and_never_the_live_release() {
        let old = ids(&["20260101000000", "20260102000000", "20260103000000"]);
        let live = &ids(&["20260104000000"])[0];
        assert_eq!(to_prune(&old, &[], live, 3), ids(&["20260101000000"]));
        assert_eq!(to_prune(&old, &[], live, 1), old);
        assert!(to_prune(&old, &[], live, 5).is_empty());
        assert!(
            to_prune(&[], &[], live, 1).is_empty(),
            "never the new release"
        );
        // a release the tidy-up removed (unfinished) is gone already: not pruned, not counted
        assert!(to_prune(&old, &old[..1], live, 3).is_empty());
    }

    #[test]
    fn warnings_name_a_few_paths_and_count_the_rest() {
        let few: Vec<String> = vec!["a".into(), "b c".into()];
        assert_eq!(named(&few), "\"a\", \"b c\"");
        let many: Vec<String> = (0..13).map(|i| format!("f{i}")).collect();
        assert!(
            named(&many).ends_with("\"f9\" and 3 more"),
            "{}",
            named(&many)
        );
    }
}
