//! What a host holds now: where `current` points, which releases there are, the manifest of the
//! live one, leftovers of interrupted deploys, and anything in the layout that is not what
//! cutover made. Every command starts here (deploy, rollback, releases, check, verify), so the
//! server's state is read — and distrusted — in one place.
//!
//! Everything read here is input from the server. A release counts only when it is a real
//! directory named by 14 digits AND has a manifest that is a regular file; anything else in
//! `releases/` is foreign: listed, never chosen by a rollback, never pruned. A layout directory
//! that is a symbolic link (`releases`, `.cutover`, `.cutover/staging`, …) is reported, never
//! followed. The live manifest is parsed and validated ([`Manifest::parse`]) before anything is
//! planned from it, and its content is never echoed in an error.
//!
//! Reading costs two flights of requests (three when the hint below misses), whatever the
//! number of releases:
//!
//! ```text
//! flight 1: lstat + readlink current · lstat of each layout directory · opendir releases/,
//!           .cutover/manifests/, .cutover/staging/ · open .cutover/current-manifest
//! flight 2: readdir of the three · read current-manifest · open the live release's manifest
//! flight 3: read that manifest, only when current-manifest was not its copy
//! ```
//!
//! `current-manifest` is a link the deploy and rollback scripts keep pointing at the live
//! release's manifest. It is a hint, never trusted: it counts only when its `#release` record
//! names the release `current` points to, and it is validated like any manifest.

use anyhow::{anyhow, Context, Result};

use crate::layout::{self, Layout, ReleaseId};
use crate::remote::{DirEntry, PathKind, Session};
use crate::source::Manifest;

/// Largest manifest read back from a server (about 2 million entries).
pub const MANIFEST_LIMIT: u64 = 256 * 1024 * 1024;

/// What `current` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// No `current` yet: a new server.
    Missing,
    /// A symbolic link; `release` when its target names a release directory of ours
    /// (`releases/ID`, or an absolute `PATH/releases/ID` as Capistrano writes it).
    Link {
        target: String,
        release: Option<ReleaseId>,
    },
    /// Something else: a real directory left by a tool that deploys in place, a file, …
    NotALink(PathKind),
}

impl Current {
    /// The release a link target names, when it names one under this deploy path's
    /// `releases/`.
    pub fn release_named_by(target: &str, layout: &Layout) -> Option<ReleaseId> {
        let trimmed = target.trim_end_matches('/');
        let (parent, last) = trimmed.rsplit_once('/')?;
        let parent = parent.trim_start_matches("./");
        let ours = parent == layout::RELEASES || parent == layout.releases();
        ReleaseId::parse(last).filter(|_| ours)
    }

    pub fn release(&self) -> Option<&ReleaseId> {
        match self {
            Current::Link { release, .. } => release.as_ref(),
            _ => None,
        }
    }
}

/// A name in `releases/` that is not a release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Foreign {
    pub name: String,
    /// Why it does not count, in words.
    pub why: String,
}

/// What a host holds now.
#[derive(Debug, Clone)]
pub struct Survey {
    pub current: Current,
    /// Real directories with a 14-digit name and a manifest, oldest first.
    pub releases: Vec<ReleaseId>,
    /// Other names in `releases/`: left alone.
    pub foreign: Vec<Foreign>,
    /// `ID.partial` directories: releases under construction, or left by a killed deploy.
    pub partials: Vec<String>,
    /// The release `current` points to, when it counts as a release, with its manifest.
    pub live: Option<(ReleaseId, Manifest)>,
    /// Entries of `.cutover/staging/`: uploads of deploys running now or killed.
    pub staging: Vec<DirEntry>,
    /// Layout directories (relative to the deploy path) that are symbolic links or not
    /// directories: never followed, never written into.
    pub not_directories: Vec<(String, PathKind)>,
    /// Does `.cutover/lock` exist?
    pub locked: bool,
    /// Things worth telling the user that stop nothing.
    pub notes: Vec<String>,
    /// Flights of requests the survey took (2 or 3; a listing is an OPENDIR, then READDIRs):
    /// its time divided by them estimates a round trip.
    pub flights: u32,
}

/// What `.cutover/current-digest` says of the live release (see [`Survey::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The release `current` points to, which the link names.
    pub release: ReleaseId,
    /// The digest of the tree it holds ([`Manifest::tree_digest`]).
    pub digest: String,
    /// Whether the release is whole, when that was looked at in the same flight.
    pub whole: Option<bool>,
}

impl Survey {
    /// Read what `layout`'s host holds, in two flights of requests (three when
    /// `.cutover/current-manifest` does not name the release `current` points to).
    pub async fn read(session: &Session, layout: &Layout) -> Result<Survey> {
        Survey::read_unless(session, layout, async { false }).await
    }

    /// [`Survey::read`], except that the live manifest is read only once `unneeded` says
    /// false: a deploy that may turn out to change nothing ([`Survey::claim`]) holds back
    /// that largest read until it knows. When it says true, `live` is left empty.
    pub async fn read_unless(
        session: &Session,
        layout: &Layout,
        unneeded: impl std::future::Future<Output = bool>,
    ) -> Result<Survey> {
        let current_path = layout.current();
        let dirs =
            async {
                futures::future::join_all(Layout::DIRECTORIES.iter().chain([&layout::SHARED]).map(
                    |d| async move { (d.to_string(), session.path_kind(&layout.at(d)).await) },
                ))
                .await
            };
        let (releases_path, manifests_path, staging_path, lock_path) = (
            layout.releases(),
            layout.manifests(),
            layout.staging_root(),
            layout.lock(),
        );
        let listings = async {
            tokio::join!(
                session.list_dir(&releases_path),
                session.list_dir(&manifests_path),
                session.list_dir(&staging_path),
                session.path_kind(&lock_path),
            )
        };
        // The live manifest is opened as soon as `current` is known, alongside the listings.
        let live = async {
            // `.cutover/current-manifest` is opened in the first flight, before it is known
            // where `current` points: when it turns out to be that release's manifest, the
            // survey takes two flights instead of three.
            let hint = layout.current_manifest();
            let (kind, target, hinted) = tokio::join!(
                session.path_kind(&current_path),
                session.read_link(&current_path),
                session.open_read(&hint)
            );
            let hinted = hinted.ok().flatten();
            let current = match kind? {
                PathKind::Missing => Current::Missing,
                PathKind::Symlink => {
                    let target = target?.unwrap_or_default();
                    let release = Current::release_named_by(&target, layout);
                    Current::Link { target, release }
                }
                other => Current::NotALink(other),
            };
            let id = match current.release() {
                Some(_) if unneeded.await => None,
                id => id.cloned(),
            };
            let Some(id) = id else {
                if let Some(h) = hinted {
                    session.discard_read(h);
                }
                return Ok::<_, anyhow::Error>((current, None, 1));
            };
            let path = layout.manifest(&id);
            let read_real = || async {
                session
                    .read_file(&path, MANIFEST_LIMIT)
                    .await
                    .with_context(|| format!("cannot read {path}"))
            };
            // Flights: `current` read (with the hint opened), then the hint read; the real
            // manifest opened meanwhile and, when the hint is not its copy, read in a third.
            let mut flights = 3;
            let manifest = match hinted {
                Some(h) => {
                    // The hint is read while the real manifest is opened; the real one is read
                    // only when the hint is not its copy.
                    let (hint_bytes, real) = tokio::join!(
                        session.read_opened(h, MANIFEST_LIMIT),
                        session.open_read(&path)
                    );
                    match hint_bytes {
                        Ok(bytes) if records_release(&bytes, &id) => {
                            if let Ok(Some(r)) = real {
                                session.discard_read(r);
                            }
                            flights = 2;
                            Some(bytes)
                        }
                        _ => match real.with_context(|| format!("cannot read {path}"))? {
                            Some(r) => Some(
                                session
                                    .read_opened(r, MANIFEST_LIMIT)
                                    .await
                                    .with_context(|| format!("cannot read {path}"))?,
                            ),
                            None => None,
                        },
                    }
                }
                None => read_real().await?,
            };
            Ok((current, manifest, flights))
        };
        let (dirs, (releases, manifests, staging, lock), live) = tokio::join!(dirs, listings, live);

        let mut not_directories = Vec::new();
        for (name, kind) in dirs {
            match kind.with_context(|| format!("cannot inspect {}", layout.at(&name)))? {
                PathKind::Dir | PathKind::Missing => {}
                other => not_directories.push((name, other)),
            }
        }
        // (list_dir's errors name the directory already)
        let listing =
            |r: Result<Option<Vec<DirEntry>>>, _path: String| r.map(Option::unwrap_or_default);
        let releases_dir = not_directories.iter().any(|(n, _)| n == layout::RELEASES);
        let manifests_dir = not_directories
            .iter()
            .any(|(n, _)| n == layout::MANIFESTS || n == layout::STATE);
        // A listing made through a link is not the layout's: it is ignored.
        let names = if releases_dir {
            Vec::new()
        } else {
            listing(releases, layout.releases())?
        };
        let manifests = if manifests_dir {
            Vec::new()
        } else {
            listing(manifests, layout.manifests())?
        };
        let staging = if not_directories.iter().any(|(n, _)| n == layout::STAGING) {
            Vec::new()
        } else {
            listing(staging, layout.staging_root())?
        };
        let (current, manifest_bytes, live_flights) = live?;

        let mut releases = Vec::new();
        let mut foreign = Vec::new();
        let mut partials = Vec::new();
        for entry in names {
            let has_manifest = |id: &ReleaseId| {
                manifests
                    .iter()
                    .any(|m| m.name == id.as_str() && m.kind == PathKind::File)
            };
            let why = match (ReleaseId::parse(&entry.name), entry.kind) {
                (Some(id), PathKind::Dir) if has_manifest(&id) => {
                    releases.push(id);
                    continue;
                }
                (Some(_), PathKind::Dir) => {
                    "no manifest in .cutover/manifests/ (a deploy that never finished, or another tool's release)"
                }
                (Some(_), PathKind::Symlink) => "a symbolic link, not a directory",
                (Some(_), _) => "not a directory",
                (None, PathKind::Dir) if entry.name.ends_with(".partial") => {
                    partials.push(entry.name);
                    continue;
                }
                (None, _) => "not a 14-digit release name",
            };
            foreign.push(Foreign {
                name: entry.name,
                why: why.into(),
            });
        }

        let mut notes = Vec::new();
        let live = match (current.release(), manifest_bytes) {
            (Some(id), Some(bytes)) if releases.contains(id) => {
                Some((id.clone(), parse_manifest(layout, id, &bytes)?))
            }
            (Some(id), _) => {
                notes.push(format!(
                    "current points to releases/{id}, which is not a cutover release with a manifest: the next deploy uploads everything"
                ));
                None
            }
            (None, _) => None,
        };
        if let Current::Link {
            target,
            release: None,
        } = &current
        {
            notes.push(format!(
                "current points to {target:?}, not to a release under releases/: the next deploy uploads everything"
            ));
        }
        if let Some(newest) = releases.last() {
            if let Some(ahead) = newest.ahead_of(layout::now()) {
                notes.push(format!(
                    "release {newest} is dated {} ahead of this machine's clock: every new release is named after it. \
                     Check the clocks, or remove that release if it is not wanted",
                    layout::human_age(ahead.num_seconds())
                ));
            }
        }
        Ok(Survey {
            current,
            releases,
            foreign,
            partials,
            live,
            staging,
            not_directories,
            locked: !matches!(lock, Ok(PathKind::Missing)),
            flights: live_flights.max(2),
            notes,
        })
    }

    /// What `.cutover/current-digest` claims the live release holds: that release and the
    /// digest, when `current` points to the release the link names, the layout's directories
    /// are directories and no deploy holds the lock. Flight 1 of a deploy (`current` and the
    /// link read, the lock and two directories looked at). A source with that digest changes
    /// nothing once the release is known to be whole: looked at in this same flight when the
    /// release was `expected` (and is the one claimed), else by [`Survey::release_is_whole`].
    pub async fn claim(
        session: &Session,
        layout: &Layout,
        expected: Option<&ReleaseId>,
    ) -> Option<Claim> {
        let paths = [
            layout.current(),
            layout.current_digest(),
            layout.lock(),
            layout.releases(),
            layout.state(),
        ];
        let whole = async {
            match expected {
                Some(id) => Some(Survey::release_is_whole(session, layout, id).await),
                None => None,
            }
        };
        let (current, claim, lock, releases, state, whole) = tokio::join!(
            session.read_link(&paths[0]),
            session.read_link(&paths[1]),
            session.path_kind(&paths[2]),
            session.path_kind(&paths[3]),
            session.path_kind(&paths[4]),
            whole,
        );
        let release = Current::release_named_by(&current.ok()??, layout)?;
        let whole_layout = matches!(
            (lock, releases, state),
            (Ok(PathKind::Missing), Ok(PathKind::Dir), Ok(PathKind::Dir))
        );
        let claim = claim.ok()??;
        let digest = claim.strip_prefix(&format!("{release}-"))?.to_string();
        // What was looked at speaks for the expected release only.
        let whole = whole.filter(|_| expected == Some(&release));
        (whole_layout && digest.len() == 32).then_some(Claim {
            release,
            digest,
            whole,
        })
    }

    /// Is release `id` a real directory with a manifest that is a regular file (what the
    /// survey counts as a release)? One flight of three requests.
    pub async fn release_is_whole(session: &Session, layout: &Layout, id: &ReleaseId) -> bool {
        let paths = [layout.release(id), layout.manifests(), layout.manifest(id)];
        let (release, manifests, manifest) = tokio::join!(
            session.path_kind(&paths[0]),
            session.path_kind(&paths[1]),
            session.path_kind(&paths[2]),
        );
        matches!(
            (release, manifests, manifest),
            (Ok(PathKind::Dir), Ok(PathKind::Dir), Ok(PathKind::File))
        )
    }

    /// Every name in `releases/` that a new release must come after: releases, and foreign or
    /// partial entries with a release-like name (a release named like one would collide).
    /// Release-shaped names in `releases/` that are no releases: foreign names and `.partial`
    /// leftovers. A new release avoids them (see [`ReleaseId::avoiding`]).
    pub fn taken_names(&self) -> Vec<ReleaseId> {
        self.foreign
            .iter()
            .map(|f| f.name.as_str())
            .chain(self.partials.iter().map(|p| p.trim_end_matches(".partial")))
            .filter_map(ReleaseId::parse)
            .collect()
    }

    /// The release `current` points to, when it counts.
    pub fn live_id(&self) -> Option<&ReleaseId> {
        self.live.as_ref().map(|(id, _)| id)
    }

    /// The first layout directory that is not a real directory, as an error that says what to
    /// do; None when the layout is sound (or still missing, on a new server).
    pub fn layout_problem(&self, layout: &Layout) -> Option<String> {
        // The trash holds only what cutover pruned: the deploy script removes a link or file
        // there (never following it) and goes on.
        let (name, kind) = self
            .not_directories
            .iter()
            .find(|(name, _)| name != layout::TRASH)?;
        let what = match kind {
            PathKind::Symlink => "a symbolic link",
            PathKind::File => "a file",
            _ => "not a directory",
        };
        let fix = match name.as_str() {
            layout::STAGING => format!(
                "remove it (it holds only what cutover puts there): rm {}",
                crate::shell::quote(&layout.at(name))
            ),
            layout::SHARED => format!(
                "cutover never follows links it did not make; move it away and make {} a real directory \
                 (to keep shared files on another file system, mount it there, or link the entries inside \
                 shared/: shared/storage -> /mnt/nfs/storage)",
                crate::shell::quote(&layout.at(name))
            ),
            _ => format!(
                "cutover never follows links it did not make; move it away and make {} a real directory",
                crate::shell::quote(&layout.at(name))
            ),
        };
        Some(format!(
            "{} is {what}, not a directory: {fix}",
            layout.at(name)
        ))
    }
}

/// Does this manifest text say (in its `#release` record, before its entries) that it is the
/// manifest of release `id`?
fn records_release(bytes: &[u8], id: &ReleaseId) -> bool {
    let want = format!("#release\t{id}");
    bytes
        .split(|b| *b == b'\n')
        .skip(1)
        .take_while(|l| l.first() == Some(&b'#'))
        .any(|l| l == want.as_bytes())
}

/// Parse the manifest of release `id`: untrusted input, refused with advice when invalid. The
/// error says what is wrong, never what the file contains.
fn parse_manifest(layout: &Layout, id: &ReleaseId, bytes: &[u8]) -> Result<Manifest> {
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("the manifest is not UTF-8"));
    text.and_then(Manifest::parse).map_err(|e| {
        anyhow!(
            "the manifest {} is not valid ({e:#}). It is read from the server, so cutover refuses to act on it. \
             If the release itself is fine, remove that file and deploy again: the next release is then uploaded in full",
            layout.manifest(id)
        )
    })
}
