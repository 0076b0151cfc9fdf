//! Building a release under `releases/ID.partial`: the flights that make its directories and
//! links, the walks of the previous release and of `shared/`, what they decide (which files
//! can be taken from the previous release, which the application wrote at runtime), and the
//! shared walk. Filling in the files is `fill`'s.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use russh_sftp::protocol::OpenFlags;

use super::{Build, SftpRun, Stats};
use crate::layout::ReleaseId;
use crate::plan::{looks_like_shared_link, Base};
use crate::remote::sftp::{
    join, kind_of, mode_attrs, Listing, Node, Sent, Sftp, SymlinkOrder, Tree,
};
use crate::remote::PathKind;
use crate::source::{shared_link_target, Kind, Manifest};
use crate::survey::Survey;

impl SftpRun {
    /// The release's tree under `partial`: returns SYMLINK's argument order and the number
    /// of shared links.
    pub(super) async fn assemble(
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
    pub(super) async fn probe(&self) -> Result<SymlinkOrder> {
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
    pub(super) async fn make_dirs(&self, partial: &str, new: &Manifest) -> Result<()> {
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
    pub(super) async fn make_links(
        &self,
        partial: &str,
        new: &Manifest,
        order: SymlinkOrder,
    ) -> Result<()> {
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
    pub(super) async fn walk_previous(&self, b: &Build<'_>) -> Result<Option<(ReleaseId, Tree)>> {
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
    pub(super) async fn prepare_shared(&self, b: &Build<'_>) -> Result<Listing> {
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
    pub(super) async fn shared_dir(&self, ch: &Sftp, shared: &str, dir: &str) -> Result<()> {
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
    pub(super) async fn stage_manifest(
        &self,
        survey: &Survey,
        id: &ReleaseId,
        text: &str,
    ) -> Result<()> {
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
    pub(super) async fn carry_plan(
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

    /// The shared walk (README, "Shared files"): for every entry of `shared/` at path P, the
    /// release gets a relative link to it when it has nothing at P; both directories: descend;
    /// the link already there (a declared shared path): counted; anything else: the release
    /// wins, with a warning naming P. Returns the number of links.
    pub(super) async fn link_shared(
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
}

/// What the new release holds at a path, for the shared walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    Dir,
    Link(String),
    Other,
}

/// What the walk of the previous release decided.
#[derive(Default)]
pub(super) struct Carry {
    pub(super) previous: Option<ReleaseId>,
    /// Unchanged files whose copy in the previous release is what the manifest says.
    pub(super) linkable: Vec<(String, Node)>,
    /// Unchanged files uploaded again: the previous copy is missing or differs.
    pub(super) reupload: Vec<String>,
    /// Those of them that differ (a warning names them).
    pub(super) drifted: Vec<String>,
    /// Runtime entries carried over.
    pub(super) dirs: Vec<(String, Node)>,
    pub(super) files: Vec<(String, Node)>,
    pub(super) links: Vec<(String, String)>,
    /// Runtime entries that cannot be carried over (sockets, names that are not UTF-8).
    pub(super) unreadable: Vec<String>,
    /// Every path the new release will have.
    pub(super) tree: BTreeMap<String, Shape>,
}
