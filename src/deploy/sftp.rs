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
//! **Flights.** Every request goes out the moment it is made ([`Sftp::send_mkdir`] and the
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
//! files but not yet written are bounded by [`UPLOAD_BUDGET_KIB`].
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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use futures::FutureExt;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::AsyncReadExt;
use xxhash_rust::xxh3::Xxh3;

use crate::config::Target;
use crate::layout::{self, Layout, ReleaseId};
use crate::lock::HeldLock;
use crate::output::{bytes, count, Output};
use crate::plan::{looks_like_shared_link, Base, Plan};
use crate::remote::sftp::{
    join, kind_of, mode_attrs, status_of, Channels, Listing, Node, Sent, Sftp, SymlinkOrder, Tree,
    COPY_DATA, HARDLINK, POSIX_RENAME,
};
use crate::remote::{PathKind, Progress};
use crate::source::{shared_link_target, Kind, Manifest};
use crate::survey::Survey;

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
        let hardlink = channels.first().offers(HARDLINK);
        let copy_data = channels.first().offers(COPY_DATA);
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

    /// Refuse a server that cannot swap atomically, before anything is built or locked.
    pub fn require_posix_rename(offers: bool, target: &Target) -> Result<()> {
        if offers {
            return Ok(());
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

    /// The release's tree under `partial`: returns SYMLINK's argument order and the number
    /// of shared links.
    async fn assemble(
        &self,
        b: &Build<'_>,
        partial: &str,
        stats: &Stats,
    ) -> Result<(SymlinkOrder, u64)> {
        let (order_tx, order_rx) = tokio::sync::watch::channel(None::<SymlinkOrder>);
        // Directories first (one flight), then everything that only needs them: the manifest's
        // links and its changed files.
        let from_the_manifest = async {
            let (order, ()) = tokio::try_join!(self.probe(), self.make_dirs(partial, b.new))?;
            order_tx.send_replace(Some(order));
            let changed: Vec<&String> = b
                .plan
                .uploads
                .iter()
                .filter(|p| matches!(b.new.entries[*p].kind, Kind::File { .. }))
                .collect();
            tokio::try_join!(
                self.make_links(partial, b.new, order),
                self.upload(b, partial, changed, stats),
            )?;
            Ok::<_, anyhow::Error>(order)
        };
        // What needs the walks of the previous release and shared/: unchanged and runtime
        // files, and the shared links.
        let from_the_walks = async {
            let (previous, shared) =
                tokio::try_join!(self.walk_previous(b), self.prepare_shared(b))?;
            let mut rx = order_rx.clone();
            let order = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| anyhow!("the build stopped"))?
                .expect("waited for it");
            let carry = self.carry_plan(b, previous.as_ref()).await?;
            // Runtime directories first: runtime files and shared links may go into them.
            self.make_runtime_dirs(partial, &carry).await?;
            let (links, (), ()) = tokio::try_join!(
                self.link_shared(partial, shared, &carry, order),
                self.copy_unchanged(b, partial, &carry, stats),
                self.carry_runtime(partial, &carry, order, stats),
            )?;
            Ok::<_, anyhow::Error>(links)
        };
        let (order, links) = tokio::try_join!(from_the_manifest, from_the_walks)?;
        Ok((order, links))
    }

    /// Which order this server reads SYMLINK's paths in, tried in a scratch directory.
    async fn probe(&self) -> Result<SymlinkOrder> {
        let scratch = self.made.probe.as_deref().expect("named before the build");
        self.channels
            .first()
            .probe_symlink_order(scratch)
            .await
            .context(
                "cannot find out how this server creates symbolic links (a probe in .cutover/)",
            )
    }

    /// MKDIR the layout's directories (expected to exist but on a new server), then
    /// `releases/ID.partial` and every directory of the release, parents first, each with its
    /// mode set (a SETSTAT after its MKDIR: the server's umask would otherwise have a say): one
    /// flight on one channel.
    async fn make_dirs(&self, partial: &str, new: &Manifest) -> Result<()> {
        let ch = self.channels.first();
        let l = &self.layout;
        let layout_dirs: Vec<Sent<()>> = [l.releases(), l.shared(), l.manifests()]
            .iter()
            .map(|d| ch.send_mkdir(d, 0o755))
            .collect();
        let dirs = std::iter::once((partial.to_string(), 0o755)).chain(
            new.entries
                .iter()
                .filter(|(_, e)| e.is_dir())
                .map(|(p, e)| (format!("{partial}/{p}"), e.mode)),
        );
        let requests = dirs.flat_map(|(d, mode)| {
            [
                ch.send_mkdir(&d, mode),
                ch.send_setstat(&d, mode_attrs(mode)),
            ]
        });
        let made = self.channels.in_order(requests).await;
        // "Exists" is the usual answer here; a real failure shows in the MKDIRs below.
        futures::future::join_all(layout_dirs).await;
        made.into_iter().collect()
    }

    /// Every symbolic link of the new manifest, made new (none is copied from the previous
    /// release: a link costs one request either way).
    async fn make_links(&self, partial: &str, new: &Manifest, order: SymlinkOrder) -> Result<()> {
        let links = new.entries.iter().filter_map(|(p, e)| match &e.kind {
            Kind::Symlink { target } => Some((format!("{partial}/{p}"), target)),
            _ => None,
        });
        stream::iter(
            links.map(|(at, target)| self.channels.next().send_symlink(target, &at, order)),
        )
        .buffer_unordered(self.channels.request_bound())
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
    }

    /// The previous release's tree, walked through its manifest's directories (None on a
    /// first deploy).
    async fn walk_previous(&self, b: &Build<'_>) -> Result<Option<(ReleaseId, Tree)>> {
        let Base::Previous(prev) = &b.plan.base else {
            return Ok(None);
        };
        let dirs = b
            .survey
            .live
            .iter()
            .flat_map(|(_, m)| m.entries.iter())
            .filter(|(_, e)| e.is_dir())
            .map(|(p, _)| p.clone());
        let tree = self
            .channels
            .walk(&self.layout.release(prev), dirs)
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "release {prev}, which this deploy was planned against, is gone; deploy again"
                )
            })?;
        Ok(Some((prev.clone(), tree)))
    }

    /// The declared shared paths (a missing shared file fails the deploy, a missing shared
    /// directory is made, never through a link), then the listing of `shared/`.
    async fn prepare_shared(&self, b: &Build<'_>) -> Result<Listing> {
        let ch = self.channels.next().clone();
        let shared = self.layout.shared();
        // A new server has no shared/ yet ("exists" is the usual answer): this channel takes
        // the requests below after it.
        drop(ch.send_mkdir(&shared, 0o755));
        let files = b.target.shared.files.iter().map(|f| {
            let path = format!("{shared}/{f}");
            let looked = ch.send_lstat(&path);
            async move { (looked.await, path) }
        });
        for (found, path) in futures::future::join_all(files).await {
            if found?.is_none() {
                bail!(
                    "the shared file {path} is missing (shared_files): put it there, e.g. upload it with sftp, and deploy again"
                );
            }
        }
        for dir in &b.target.shared.dirs {
            self.shared_dir(&ch, &shared, dir).await?;
        }
        Ok(ch.read_dir(&shared).await?.unwrap_or_default())
    }

    /// `shared/DIR` exists as a directory afterwards, made without going through a link.
    async fn shared_dir(&self, ch: &Sftp, shared: &str, dir: &str) -> Result<()> {
        let path = format!("{shared}/{dir}");
        let parts: Vec<String> = dir
            .split('/')
            .scan(shared.to_string(), |at, c| {
                at.push('/');
                at.push_str(c);
                Some(at.clone())
            })
            .collect();
        let looks = parts.iter().map(|p| ch.send_lstat(p)).collect::<Vec<_>>();
        let whole = ch.send_stat(&path);
        let (looks, whole) = tokio::join!(futures::future::join_all(looks), whole);
        if whole?.is_some_and(|a| kind_of(&a) == PathKind::Dir) {
            return Ok(());
        }
        for (p, look) in parts.iter().zip(looks) {
            if look?.is_some_and(|a| kind_of(&a) == PathKind::Symlink) {
                bail!(
                    "{p} is a symbolic link: cutover does not create shared/{dir} through it; create {path} yourself and deploy again"
                );
            }
        }
        let made = self
            .channels
            .in_order(parts.iter().map(|p| ch.send_mkdir(p, 0o755)))
            .await;
        match made.into_iter().last() {
            Some(Ok(())) => {
                self.out
                    .info(format_args!("created the shared directory shared/{dir}"));
                Ok(())
            }
            Some(Err(e)) => Err(e).context(format!("cannot create the shared directory {path}")),
            None => Ok(()),
        }
    }

    /// Stage the manifest in `.cutover/staging/ID/` (a leftover there of a killed deploy with
    /// the same name goes first): it becomes `.cutover/manifests/ID` once the release is
    /// complete, and until then staging marks the release as unfinished for the next deploy.
    async fn stage_manifest(&self, survey: &Survey, id: &ReleaseId, text: &str) -> Result<()> {
        let staging = self.layout.staging(id);
        if survey.staging.iter().any(|e| e.name == id.as_str()) {
            self.channels.remove_tree(&staging).await?;
        }
        let ch = self.channels.first();
        let permit = ch.handle_permits(1).await;
        let made = ch.send_mkdir(&staging, 0o755);
        let file = self.layout.staging_manifest(id);
        let opened = ch.send_open(
            &file,
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
            mode_attrs(0o644),
        );
        let (made, opened) = tokio::join!(made, opened);
        let handle = opened.map_err(|e| match made {
            Err(m) => m,
            Ok(()) => e,
        })?;
        let written = ch.finish(handle, &file, text.as_bytes()).await;
        drop(permit);
        written
    }

    // --- what the walks decide --------------------------------------------------------------

    /// From the walk of the previous release: which unchanged files can be taken from it,
    /// which the application wrote at runtime (carried over), and the tree the release will
    /// have, for the shared walk.
    async fn carry_plan(
        &self,
        b: &Build<'_>,
        previous: Option<&(ReleaseId, Tree)>,
    ) -> Result<Carry> {
        let mut carry = Carry::default();
        for (p, e) in &b.new.entries {
            carry.tree.insert(
                p.clone(),
                match &e.kind {
                    Kind::Dir => Shape::Dir,
                    Kind::Symlink { target } => Shape::Link(target.clone()),
                    Kind::File { .. } => Shape::Other,
                },
            );
        }
        let uploads: HashSet<&String> = b.plan.uploads.iter().collect();
        let unchanged = b
            .new
            .entries
            .iter()
            .filter(|(p, e)| matches!(e.kind, Kind::File { .. }) && !uploads.contains(p));
        let Some((prev, tree)) = previous else {
            carry.reupload = unchanged.map(|(p, _)| p.clone()).collect();
            return Ok(carry);
        };
        carry.previous = Some(prev.clone());
        for (p, e) in unchanged {
            match (tree.get(p), &e.kind) {
                (Some(n), Kind::File { size, .. })
                    if n.kind == PathKind::File && n.size == *size && n.mode & 0o777 == e.mode =>
                {
                    carry.linkable.push((p.clone(), n.clone()))
                }
                _ => {
                    carry.drifted.push(p.clone());
                    carry.reupload.push(p.clone());
                }
            }
        }

        // Runtime entries: in the previous release, in no manifest, not under a path this
        // deploy deletes; shared links of the previous release are remade by the shared walk.
        let old = &b
            .survey
            .live
            .as_ref()
            .expect("a previous release has a manifest")
            .1;
        let deleted: BTreeSet<&str> = b.plan.deletes.iter().map(String::as_str).collect();
        let under_deleted = |p: &str| {
            std::iter::once(p)
                .chain(p.match_indices('/').map(|(i, _)| &p[..i]))
                .any(|a| deleted.contains(a))
        };
        let mut links = Vec::new();
        for (p, n) in tree {
            if old.entries.contains_key(p) || under_deleted(p) {
                continue;
            }
            let parent_is_dir = match p.rsplit_once('/') {
                None => true,
                Some((parent, _)) => carry.tree.get(parent) == Some(&Shape::Dir),
            };
            if !parent_is_dir {
                continue;
            }
            if p.contains('\u{fffd}') {
                carry.unreadable.push(p.clone());
                continue;
            }
            if n.kind == PathKind::Symlink {
                // Its target decides first: a shared link is remade, not carried.
                links.push(p.clone());
                continue;
            }
            let release = format!("releases/{prev}/{p}");
            match (b.new.entries.get(p).map(|e| e.is_dir()), n.kind) {
                (Some(true), PathKind::Dir) => {}
                (Some(true), _) => bail!(
                    "{release} was written by the application at runtime, and the new release needs a directory there: \
                     move it away (or into shared/) and deploy again"
                ),
                (Some(false), PathKind::Dir) => bail!(
                    "a directory the application wrote at runtime in releases/{prev} ({p}) is in the way of a file of \
                     the new release; move it away and deploy again"
                ),
                // The repository has its own file there now: it wins.
                (Some(false), _) => {}
                (None, PathKind::Dir) => {
                    carry.tree.insert(p.clone(), Shape::Dir);
                    carry.dirs.push((p.clone(), n.clone()));
                }
                (None, PathKind::File) => {
                    carry.tree.insert(p.clone(), Shape::Other);
                    carry.files.push((p.clone(), n.clone()));
                }
                (None, _) => carry.unreadable.push(p.clone()),
            }
        }
        // A link's target decides whether it is a shared link to remake: one flight.
        let root = self.layout.release(prev);
        let targets = stream::iter(links.into_iter().map(|p| {
            let read = self.channels.next().send_readlink(&join(&root, &p));
            async move { (p, read.await) }
        }))
        .buffered(self.channels.request_bound())
        .collect::<Vec<_>>()
        .await;
        for (p, target) in targets {
            let target = target?;
            if looks_like_shared_link(&p, &target) {
                continue;
            }
            match b.new.entries.get(&p).map(|e| e.is_dir()) {
                Some(true) => bail!(
                    "releases/{prev}/{p} is a symbolic link the application made at runtime, and the new release \
                     needs a directory there: cutover never follows links it did not make. Move it away and deploy again"
                ),
                // The repository has its own entry there now: it wins.
                Some(false) => {}
                None => {
                    carry.tree.insert(p.clone(), Shape::Link(target.clone()));
                    carry.links.push((p, target));
                }
            }
        }
        Ok(carry)
    }

    // --- filling the release -------------------------------------------------------------------

    /// The unchanged files: hard-linked from the previous release, else copied there with
    /// copy-data, else uploaded again from the source (which has the same content).
    async fn copy_unchanged(
        &self,
        b: &Build<'_>,
        partial: &str,
        carry: &Carry,
        stats: &Stats,
    ) -> Result<()> {
        let mut again: Vec<&String> = carry.reupload.iter().collect();
        if !carry.drifted.is_empty() {
            self.notes.warn(
                &self.out,
                format!(
                    "{} in releases/{} differ from their manifest (edited on the server?): uploaded again from the source: {}",
                    count(carry.drifted.len(), "unchanged file"),
                    carry.previous.as_ref().map(ReleaseId::as_str).unwrap_or("?"),
                    named(&carry.drifted)
                ),
            );
        }
        if let Some(prev) = &carry.previous {
            let root = self.layout.release(prev);
            let replicas: Vec<Replica> = carry
                .linkable
                .iter()
                .map(|(p, n)| Replica {
                    rel: p.clone(),
                    from: join(&root, p),
                    to: join(partial, p),
                    node: n.clone(),
                })
                .collect();
            let total = replicas.len();
            let left = self.replicate(replicas, stats).await?;
            if !left.is_empty() {
                let size: u64 = left.iter().map(|r| r.node.size).sum();
                self.notes.warn(
                    &self.out,
                    format!(
                        "{} of {total} unchanged files ({}) are uploaded again from the source: {}",
                        left.len(),
                        bytes(size),
                        self.why_not_on_the_server()
                    ),
                );
            }
            let left: HashSet<String> = left.into_iter().map(|r| r.rel).collect();
            again.extend(
                carry
                    .linkable
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| left.contains(*p)),
            );
        }
        self.upload(b, partial, again, stats).await
    }

    /// Why files could not be copied on the server, for a warning.
    fn why_not_on_the_server(&self) -> String {
        match (
            self.channels.first().offers(HARDLINK),
            self.channels.first().offers(COPY_DATA),
        ) {
            (false, false) => format!("the server offers neither {HARDLINK} nor {COPY_DATA}"),
            (false, true) => {
                format!("the server does not offer {HARDLINK}, and {COPY_DATA} failed")
            }
            (true, false) => {
                format!("{HARDLINK} was refused, and the server does not offer {COPY_DATA}")
            }
            (true, true) => format!("both {HARDLINK} and {COPY_DATA} were refused"),
        }
    }

    /// Files the application wrote into the previous release at runtime (their directories
    /// are made already): links copied as links, files carried over like unchanged ones (hard link, copy-data),
    /// or, when the server can do neither, downloaded and uploaded again (with a warning
    /// naming them).
    async fn carry_runtime(
        &self,
        partial: &str,
        carry: &Carry,
        order: SymlinkOrder,
        stats: &Stats,
    ) -> Result<()> {
        if !carry.unreadable.is_empty() {
            self.notes.warn(
                &self.out,
                format!(
                    "not carried over from releases/{} (not a file, directory or link, or a name that is not UTF-8): {}",
                    carry.previous.as_ref().map(ReleaseId::as_str).unwrap_or("?"),
                    named(&carry.unreadable)
                ),
            );
        }
        let Some(prev) = &carry.previous else {
            return Ok(());
        };
        let root = self.layout.release(prev);
        let links = carry.links.iter().map(|(p, t)| {
            self.channels
                .next()
                .send_symlink(t, &join(partial, p), order)
        });
        stream::iter(links)
            .buffer_unordered(self.channels.request_bound())
            .try_collect::<Vec<()>>()
            .await?;
        let replicas = carry
            .files
            .iter()
            .map(|(p, n)| Replica {
                rel: p.clone(),
                from: join(&root, p),
                to: join(partial, p),
                node: n.clone(),
            })
            .collect();
        let left = self.replicate(replicas, stats).await?;
        if left.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = left.iter().map(|r| r.rel.clone()).collect();
        self.notes.warn(
            &self.out,
            format!(
                "{} the application wrote into releases/{prev} at runtime {} carried over by downloading and uploading \
                 {} again ({}): {}",
                count(left.len(), "file"),
                if left.len() == 1 { "is" } else { "are" },
                if left.len() == 1 { "it" } else { "them" },
                self.why_not_on_the_server(),
                named(&names)
            ),
        );
        stream::iter(left.into_iter().map(|r| self.relay(r, stats)))
            .buffer_unordered(self.channels.handle_bound() / 2)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// The directories the application made in the previous release at runtime, parents
    /// first, with their modes: one flight on one channel.
    async fn make_runtime_dirs(&self, partial: &str, carry: &Carry) -> Result<()> {
        let ch = self.channels.first();
        let dirs = carry.dirs.iter().flat_map(|(p, n)| {
            let at = join(partial, p);
            [
                ch.send_mkdir(&at, n.mode),
                ch.send_setstat(&at, mode_attrs(n.mode)),
            ]
        });
        self.channels.in_order(dirs).await.into_iter().collect()
    }

    /// Copy files on the server: hard links where the server offers them (a refused one falls
    /// back for that file; an unknown extension for all), then copy-data. Returns what neither
    /// could copy.
    async fn replicate(&self, replicas: Vec<Replica>, stats: &Stats) -> Result<Vec<Replica>> {
        let mut left = replicas;
        if self.hardlink.load(Ordering::Relaxed) && !left.is_empty() {
            let tried = stream::iter(left.into_iter().map(|r| {
                let sent = self.channels.next().send_hardlink(&r.from, &r.to);
                async move { (sent.await, r) }
            }))
            .buffer_unordered(self.channels.request_bound())
            .collect::<Vec<_>>()
            .await;
            left = Vec::new();
            let mut refusal = None;
            for (result, r) in tried {
                match result {
                    Ok(()) => {
                        stats.linked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => match status_of(&e) {
                        Some(code) => {
                            if code == StatusCode::OpUnsupported {
                                self.hardlink.store(false, Ordering::Relaxed);
                            }
                            refusal.get_or_insert(format!("{e:#}"));
                            left.push(r);
                        }
                        None => return Err(e),
                    },
                }
            }
            if let Some(why) = refusal {
                self.out.verbose(format_args!(
                    "{} not hard-linked ({why}): copied instead",
                    count(left.len(), "file")
                ));
            }
        }
        if self.copy_data.load(Ordering::Relaxed) && !left.is_empty() {
            let tried = stream::iter(left.into_iter().map(|r| async move {
                let copied = self.copy_on_server(&r).await;
                (copied, r)
            }))
            .buffer_unordered(self.channels.handle_bound() / 2)
            .collect::<Vec<_>>()
            .await;
            left = Vec::new();
            for (result, r) in tried {
                match result {
                    Ok(true) => {
                        stats.copied.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => left.push(r),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(left)
    }

    /// copy-data of one file into a new file: OPEN both in one flight, then COPY, FSETSTAT
    /// (mode and times, which copy-data leaves) and both CLOSEs in the next. False when the
    /// server refused (the new file is removed again).
    async fn copy_on_server(&self, r: &Replica) -> Result<bool> {
        let (ch, permit) = self.channels.with_handles(2).await;
        let src = ch.send_open(&r.from, OpenFlags::READ, FileAttributes::empty());
        let dst = ch.send_open(
            &r.to,
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
            mode_attrs(r.node.mode),
        );
        let (src, dst) = tokio::join!(src, dst);
        let (src, dst) = match (src, dst) {
            (Ok(s), Ok(d)) => (s, d),
            (src, dst) => {
                let closes: Vec<Sent<()>> = [src.as_ref().ok(), dst.as_ref().ok()]
                    .into_iter()
                    .flatten()
                    .map(|h| ch.send_close(h))
                    .collect();
                drop(permit);
                futures::future::join_all(closes).await;
                if dst.is_ok() {
                    let _ = ch.send_remove(&r.to).await;
                }
                let e = dst.err().or(src.err()).expect("one failed");
                return match status_of(&e) {
                    Some(_) => Ok(false),
                    None => Err(e),
                };
            }
        };
        let copied = ch.send_copy_data(&src, &dst, &r.to);
        let set = ch.send_fsetstat(&dst, &r.to, r.node.copy_attrs());
        let closed = futures::future::join(ch.send_close(&src), ch.send_close(&dst));
        drop(permit);
        let (copied, set, (c1, c2)) = tokio::join!(copied, set, closed);
        match copied {
            Ok(()) => {
                set?;
                c1?;
                c2?;
                Ok(true)
            }
            Err(e) => match status_of(&e) {
                Some(code) => {
                    if code == StatusCode::OpUnsupported {
                        self.copy_data.store(false, Ordering::Relaxed);
                    }
                    ch.send_remove(&r.to).await?;
                    Ok(false)
                }
                None => Err(e),
            },
        }
    }

    /// Download a file of the previous release and upload it into the new one (the server
    /// copies nothing itself): reads and writes pipelined, mode and times kept.
    async fn relay(&self, r: Replica, stats: &Stats) -> Result<()> {
        let (ch, permit) = self.channels.with_handles(2).await;
        let src = ch.send_open(&r.from, OpenFlags::READ, FileAttributes::empty());
        let dst = ch.send_open(
            &r.to,
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
            mode_attrs(r.node.mode),
        );
        let (src, dst) = tokio::join!(src, dst);
        let (src, dst) = (src?, dst?);
        let len = ch.write_len().await as u64;
        let mut offset = 0u64;
        let mut writes = Vec::new();
        let mut done = false;
        // Reads go out several at once, each for the next whole chunk; a short answer ends a
        // batch (the next one asks again from there), an empty one the file. The file may be
        // written to right now: what is there is what is copied.
        while !done {
            let reads: Vec<Sent<Vec<u8>>> = (0..WRITES_PER_FILE as u64)
                .map(|i| ch.send_read(&src, &r.from, offset + i * len, len as u32))
                .collect();
            let mut whole = true;
            for data in futures::future::join_all(reads).await {
                let data = data?;
                if done || !whole {
                    continue;
                }
                if data.is_empty() {
                    done = true;
                    continue;
                }
                let n = data.len() as u64;
                writes.push(ch.send_write(&dst, &r.to, offset, data));
                offset += n;
                whole = n == len;
            }
        }
        let set = ch.send_fsetstat(&dst, &r.to, r.node.copy_attrs());
        let closed = futures::future::join(ch.send_close(&src), ch.send_close(&dst));
        drop(permit);
        for w in futures::future::join_all(writes).await {
            w?;
        }
        let (set, (c1, c2)) = tokio::join!(set, closed);
        set?;
        c1?;
        c2?;
        stats.bytes.fetch_add(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Upload files of the new manifest from the source into the release.
    async fn upload(
        &self,
        b: &Build<'_>,
        partial: &str,
        paths: Vec<&String>,
        stats: &Stats,
    ) -> Result<()> {
        stream::iter(
            paths
                .into_iter()
                .map(|p| self.upload_file(b, partial, p, stats)),
        )
        .buffer_unordered(self.channels.handle_bound())
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
    }

    /// One file from the source into a new file: the OPEN travels while the file is read,
    /// then every WRITE, the FSETSTAT (mode and the source's mtime, as tar would) and the
    /// CLOSE in one flight. The bytes are hashed on the way: a file that changed since the
    /// scan fails the deploy instead of shipping content its manifest does not describe.
    async fn upload_file(
        &self,
        b: &Build<'_>,
        partial: &str,
        path: &str,
        stats: &Stats,
    ) -> Result<()> {
        let entry = &b.new.entries[path];
        let Kind::File { size, hash } = entry.kind else {
            unreachable!("only files are uploaded")
        };
        let local: PathBuf = b.target.source.join(path);
        let remote = format!("{partial}/{path}");
        let (ch, permit) = self.channels.with_handles(1).await;
        let opened = ch.send_open(
            &remote,
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
            mode_attrs(entry.mode),
        );
        let read = async {
            let file = tokio::fs::File::open(&local).await?;
            let mtime = file.metadata().await?.modified()?;
            Ok::<_, std::io::Error>((file, mtime))
        };
        let (handle, read) = tokio::join!(opened, read);
        let (mut file, mtime) = read.with_context(|| format!("cannot read {}", local.display()))?;
        let handle = handle?;
        let len = ch.write_len().await;
        let mut hasher = Xxh3::new();
        let mut sent = 0u64;
        let mut writes = FuturesUnordered::new();
        let mut failure = None;
        loop {
            // As much as is left (the manifest knows), and a byte more once it is all read: a
            // file that grew since the scan shows.
            let want = (size.saturating_sub(sent) as usize).clamp(1, len);
            let mut buf = vec![0u8; want];
            let n = match read_full(&mut file, &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    failure = Some(
                        anyhow::Error::new(e).context(format!("cannot read {}", local.display())),
                    );
                    break;
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            hasher.update(&buf);
            let budget = self
                .budget
                .clone()
                .acquire_many_owned((n as u32).div_ceil(1024))
                .await
                .expect("never closed");
            let write = ch.send_write(&handle, &remote, sent, buf);
            writes.push(async move {
                let r = write.await;
                drop(budget);
                r.map(|()| n as u64)
            });
            sent += n as u64;
            while writes.len() >= WRITES_PER_FILE {
                match writes.next().await {
                    Some(Ok(n)) => b.progress.advance(n),
                    Some(Err(e)) => {
                        failure.get_or_insert(e);
                    }
                    None => {}
                }
            }
            if sent > size || failure.is_some() {
                break;
            }
        }
        let secs = mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let attrs = FileAttributes {
            atime: Some(secs),
            mtime: Some(secs),
            ..mode_attrs(entry.mode)
        };
        let set = ch.send_fsetstat(&handle, &remote, attrs);
        let closed = ch.send_close(&handle);
        drop(permit);
        while let Some(w) = writes.next().await {
            match w {
                Ok(n) => b.progress.advance(n),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let (set, closed) = tokio::join!(set, closed);
        if let Some(e) = failure {
            return Err(e);
        }
        set?;
        closed?;
        if sent != size || hasher.digest128() != hash {
            bail!(
                "{} changed while it was being deployed; run the deploy again",
                local.display()
            );
        }
        stats.uploaded.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    /// The shared walk (README, "Shared files"): for every entry of `shared/` at path P, the
    /// release gets a relative link to it when it has nothing at P; both directories: descend;
    /// the link already there (a declared shared path): counted; anything else: the release
    /// wins, with a warning naming P. Returns the number of links.
    async fn link_shared(
        &self,
        partial: &str,
        top: Listing,
        carry: &Carry,
        order: SymlinkOrder,
    ) -> Result<u64> {
        let shared = self.layout.shared();
        let mut links = 0;
        let mut create = Vec::new();
        let mut level = vec![(String::new(), top)];
        while !level.is_empty() {
            let mut descend = Vec::new();
            for (dir, mut entries) in level {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, attrs) in entries {
                    let rel = if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    if rel.contains('\u{fffd}') {
                        self.notes.warn(
                            &self.out,
                            format!("shared/{rel} is not linked: its name is not UTF-8"),
                        );
                        continue;
                    }
                    let expected = shared_link_target(&rel);
                    match carry.tree.get(&rel) {
                        None => {
                            links += 1;
                            create.push((rel, expected));
                        }
                        Some(Shape::Dir) if kind_of(&attrs) == PathKind::Dir => descend.push(rel),
                        Some(Shape::Link(t)) if *t == expected => links += 1,
                        Some(_) => self.notes.warn(
                            &self.out,
                            format!("shared/{rel} is not linked: the release has its own {rel}"),
                        ),
                    }
                }
            }
            level = stream::iter(descend.into_iter().map(|rel| {
                let shared = &shared;
                async move {
                    let (ch, permit) = self.channels.with_handles(0).await;
                    drop(permit);
                    let listing = ch.read_dir(&join(shared, &rel)).await;
                    listing.map(|l| (rel, l.unwrap_or_default()))
                }
            }))
            .buffer_unordered(self.channels.handle_bound())
            .try_collect()
            .await?;
        }
        stream::iter(create.iter().map(|(rel, target)| {
            self.channels
                .next()
                .send_symlink(target, &join(partial, rel), order)
        }))
        .buffer_unordered(self.channels.request_bound())
        .try_collect::<Vec<()>>()
        .await?;
        Ok(links)
    }

    // --- leftovers ------------------------------------------------------------------------------

    /// Remove what interrupted deploys and failed prunes left (as the deploy script does): only
    /// this deploy holds the lock, so they are no one's. A staging directory of a release that
    /// was never finished takes that release with it. Never fails: what cannot be removed is a
    /// warning, and exit 3 once the release is live. Returns the releases removed.
    async fn tidy(&self, survey: &Survey, id: &ReleaseId) -> Vec<ReleaseId> {
        let l = &self.layout;
        let list = |path: String| async move {
            let (ch, permit) = self.channels.with_handles(0).await;
            drop(permit);
            ch.read_dir(&path).await.ok().flatten().unwrap_or_default()
        };
        let (root, state, manifests, trash, releases) = tokio::join!(
            list(l.root().to_string()),
            list(l.state()),
            list(l.manifests()),
            list(l.trash()),
            list(l.releases()),
        );
        let is_dir = |name: &str| {
            releases
                .iter()
                .any(|(n, a)| n == name && kind_of(a) == PathKind::Dir)
        };
        let previous = survey.live_id();
        let live_now = survey.current.release();
        let mut doomed: Vec<String> = Vec::new();
        let mut unfinished = Vec::new();
        for e in &survey.staging {
            if e.name == id.as_str() {
                continue;
            }
            if let Some(name) = ReleaseId::parse(&e.name) {
                let has_manifest = survey.releases.contains(&name);
                let newer = previous.is_none_or(|p| name > *p);
                if is_dir(name.as_str())
                    && Some(&name) != previous
                    && (!has_manifest || (live_now != Some(&name) && newer))
                {
                    unfinished.push(name);
                }
            }
            doomed.push(format!("{}/{}", layout::STAGING, e.name));
        }
        let ours_probe = format!("probe.sftp-{}", self.suffix);
        let ours_link = format!(".current.sftp-{}.tmp", self.suffix);
        let day_ago = layout::now().timestamp() - 86_400;
        // This deploy's own temporaries are being made while this runs: never theirs.
        let ours_partial = format!("{id}.partial");
        doomed.extend(
            releases
                .iter()
                .filter(|(n, _)| n.ends_with(".partial") && *n != ours_partial)
                .map(|(n, _)| format!("{}/{n}", layout::RELEASES)),
        );
        doomed.extend(trash.iter().map(|(n, _)| format!("{}/{n}", layout::TRASH)));
        doomed.extend(
            state
                .iter()
                .filter(|(n, a)| {
                    (n.starts_with("probe.") && *n != ours_probe)
                        || n.starts_with("swap-probe.")
                        || (n.starts_with("lock.new-")
                            && a.mtime.is_some_and(|m| i64::from(m) < day_ago))
                })
                .map(|(n, _)| format!("{}/{n}", layout::STATE)),
        );
        doomed.extend(
            root.iter()
                .filter(|(n, _)| {
                    n.starts_with(".current.") && n.ends_with(".tmp") && *n != ours_link
                })
                .map(|(n, _)| n.clone()),
        );
        doomed.extend(
            manifests
                .iter()
                .filter(|(n, _)| !is_dir(n) || n == id.as_str())
                .map(|(n, _)| format!("{}/{n}", layout::MANIFESTS)),
        );
        let releases_gone = unfinished.iter().map(|name| async move {
            let (release, manifest) = (l.release(name), l.manifest(name));
            let gone = tokio::try_join!(
                self.channels.remove_tree(&release),
                self.channels.remove_tree(&manifest),
            );
            match gone {
                Ok(_) => {
                    self.out.info(format_args!(
                        "removed the unfinished release {name} of an interrupted deploy"
                    ));
                    Some(name.clone())
                }
                Err(e) => {
                    self.left(format!(
                        "could not remove the unfinished release {}: {e:#}",
                        l.release(name)
                    ));
                    None
                }
            }
        });
        let leftovers = doomed.iter().map(|rel| async move {
            match self.channels.remove_tree(&l.at(rel)).await {
                Ok(()) => self.out.info(format_args!("removed leftover {rel}")),
                Err(e) => self.left(format!(
                    "could not remove leftover {}: remove it by hand ({e:#})",
                    l.at(rel)
                )),
            }
        });
        let (gone, _) = tokio::join!(
            futures::future::join_all(releases_gone),
            futures::future::join_all(leftovers)
        );
        gone.into_iter().flatten().collect()
    }

    /// Something stays behind that should not: a warning, and exit 3 once live.
    fn left(&self, msg: String) {
        self.notes.left_behind.store(true, Ordering::Relaxed);
        self.notes.warn(&self.out, msg);
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
        let cleared = ch.send_remove(&tmp);
        let linked = ch.send_symlink(target, &tmp, self.order);
        let renamed = ch.send_posix_rename(&tmp, &current);
        let read = ch.send_readlink(&current);
        let (_, linked, renamed, read) = tokio::join!(cleared, linked, renamed, read);
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

    /// After the swap: old releases pruned (renamed into the trash with their manifests
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
                let unlisted = ch.send_remove(&l.manifest(&name));
                let moved = ch.send_rename(&l.release(&name), &trashed);
                prune_flight.push((name, trashed, unlisted, moved));
            }
            staging = Some((l.staging(id), ch.send_rmdir(&l.staging(id))));
        }
        let unlocked = lock.map(|_| {
            futures::future::join(ch.send_remove(&l.lock_info()), ch.send_rmdir(&l.lock()))
        });
        for (name, trashed, unlisted, moved) in prune_flight {
            let _ = unlisted.await;
            match moved.await {
                Ok(()) => pruned.push((name, trashed)),
                Err(e) => self.left(format!(
                    "could not move old release {} out of releases/; remove it by hand ({e:#})",
                    l.release(&name)
                )),
            }
        }
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

/// One file to copy on the server.
struct Replica {
    /// Path in the release.
    rel: String,
    from: String,
    to: String,
    node: Node,
}

/// What the new release holds at a path, for the shared walk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Dir,
    Link(String),
    Other,
}

/// What the walk of the previous release decided.
#[derive(Default)]
struct Carry {
    previous: Option<ReleaseId>,
    /// Unchanged files whose copy in the previous release is what the manifest says.
    linkable: Vec<(String, Node)>,
    /// Unchanged files uploaded again: the previous copy is missing or differs.
    reupload: Vec<String>,
    /// Those of them that differ (a warning names them).
    drifted: Vec<String>,
    /// Runtime entries carried over.
    dirs: Vec<(String, Node)>,
    files: Vec<(String, Node)>,
    links: Vec<(String, String)>,
    /// Runtime entries that cannot be carried over (sockets, names that are not UTF-8).
    unreadable: Vec<String>,
    /// Every path the new release will have.
    tree: BTreeMap<String, Shape>,
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

/// Read until `buf` is full or the file ends; the bytes read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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
