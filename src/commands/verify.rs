//! `cutover verify`: is the live release still what was deployed?
//!
//! Each release starts as a copy of the previous one, so a hand edit made on the server is
//! carried into every later release, silently. `verify` walks the live release and compares it
//! with its manifest: type, mode and size of every entry, link targets, and with `--hash` the
//! content (xxh3-128, as at deploy). Links into `shared/` that the shared walk made are expected;
//! anything else that is in no manifest is extra. It changes nothing.
//!
//! The walk costs no round trip per file: the manifest names every directory, so all of them
//! are listed at once (READDIR returns each entry's LSTAT attributes), and only symbolic links
//! (READLINK) and, with `--hash`, file contents (pipelined READs) cost a request each.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Context, Result};
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::config::{Fleet, Target};
use crate::error::usage;
use crate::layout::Layout;
use crate::output::Output;
use crate::plan::looks_like_shared_link;
use crate::remote::{DirEntry, PathKind, Session};
use crate::source::{Kind, Manifest};
use crate::survey::Survey;

/// Requests in flight at once for listings, links and reads.
const IN_FLIGHT: usize = 64;

/// One difference between the release and its manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    pub path: String,
    pub why: String,
}

#[derive(Debug, Serialize, Default)]
pub struct HostVerdict {
    pub host: String,
    pub release: Option<String>,
    pub clean: bool,
    pub checked: usize,
    pub modified: Vec<Drift>,
    pub missing: Vec<Drift>,
    pub extra: Vec<Drift>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub target: String,
    pub clean: bool,
    pub hash: bool,
    pub hosts: Vec<HostVerdict>,
}

pub async fn run(fleet: &Fleet, hash: bool, json: bool, out: &Output) -> Result<()> {
    let hosts =
        futures::future::join_all(fleet.hosts.iter().map(|t| verify_host(t, hash, out))).await;
    let verdict = Verdict {
        target: fleet.name.clone(),
        clean: hosts.iter().all(|h| h.clean),
        hash,
        hosts,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).expect("the verdict serializes")
        );
    } else {
        for h in &verdict.hosts {
            let o = out.for_member(fleet.names_hosts(), &h.host);
            print_host(h, &fleet.name, hash, &o);
        }
    }
    if let Some(e) = verdict.hosts.iter().find_map(|h| h.error.clone()) {
        return Err(anyhow!(e));
    }
    if verdict.clean {
        Ok(())
    } else {
        Err(anyhow!(
            "{}: the live release differs from its manifest (drift listed above)",
            fleet.stage("verify")
        ))
    }
}

fn print_host(h: &HostVerdict, target: &str, hash: bool, out: &Output) {
    let Some(release) = &h.release else { return };
    // A check that stopped on an error says nothing about drift (it said "has drifted: 0
    // modified, 0 missing, 0 extra"): the error is printed instead.
    if h.error.is_some() {
        return;
    }
    for (what, list) in [
        ("modified", &h.modified),
        ("missing", &h.missing),
        ("extra", &h.extra),
    ] {
        for d in list {
            out.summary(format!("{what:<9} {:?}: {}", d.path, d.why));
        }
    }
    if h.clean {
        out.summary(format!(
            "{target}: release {release} matches its manifest ({} entries checked{})",
            h.checked,
            if hash {
                ", content hashed"
            } else {
                "; --hash compares content too"
            }
        ));
    } else {
        out.summary(format!(
            "{target}: release {release} has drifted: {} modified, {} missing, {} extra",
            h.modified.len(),
            h.missing.len(),
            h.extra.len()
        ));
    }
}

async fn verify_host(target: &Target, hash: bool, out: &Output) -> HostVerdict {
    let mut verdict = HostVerdict {
        host: target.label.clone(),
        ..HostVerdict::default()
    };
    let session = match Session::open(target, out.verbose).await {
        Ok(s) => s,
        Err(e) => {
            verdict.error = Some(format!("{:#}", e.context(target.stage("connect"))));
            return verdict;
        }
    };
    let layout = Layout::new(&target.path);
    match verify(&session, &layout, target, hash, &mut verdict).await {
        Ok(()) => {
            verdict.clean = verdict.modified.is_empty()
                && verdict.missing.is_empty()
                && verdict.extra.is_empty();
        }
        Err(e) => verdict.error = Some(format!("{e:#}")),
    }
    session.close().await;
    verdict
}

async fn verify(
    session: &Session,
    layout: &Layout,
    target: &Target,
    hash: bool,
    verdict: &mut HostVerdict,
) -> Result<()> {
    let survey = Survey::read(session, layout)
        .await
        .with_context(|| target.stage("survey"))?;
    let Some((id, manifest)) = survey.live else {
        return Err(usage(format!(
            "{}: {} does not point to a cutover release with a manifest: nothing to verify",
            target.stage("verify"),
            layout.current()
        )));
    };
    verdict.release = Some(id.to_string());
    let root = layout.release(&id);
    let found = walk(session, &root, &manifest)
        .await
        .with_context(|| target.stage("verify"))?;
    let unknown_links = compare(&manifest, &found, verdict);
    let shared = stream::iter(unknown_links.into_iter().map(|p| {
        let path = format!("{root}/{p}");
        async move {
            let got = session.read_link(&path).await;
            (p, got)
        }
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<_>>()
    .await;
    for (p, got) in shared {
        match got? {
            Some(t) if looks_like_shared_link(&p, &t) => {}
            Some(t) => verdict.extra.push(Drift {
                why: format!("a symbolic link to {t:?} that is in no manifest"),
                path: p,
            }),
            None => {}
        }
    }
    verdict.extra.sort_by(|a, b| a.path.cmp(&b.path));
    // Link targets and, with --hash, content: one request each, many in flight.
    let links: Vec<(&String, &String)> = manifest
        .entries
        .iter()
        .filter_map(|(p, e)| match &e.kind {
            Kind::Symlink { target } => Some((p, target)),
            _ => None,
        })
        .filter(|(p, _)| found.get(*p).is_some_and(|f| f.kind == PathKind::Symlink))
        .collect();
    let read_links = stream::iter(links.into_iter().map(|(p, want)| {
        let path = format!("{root}/{p}");
        async move { (p, want, session.read_link(&path).await) }
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<_>>()
    .await;
    for (p, want, got) in read_links {
        match got? {
            Some(t) if &t == want => {}
            Some(t) => verdict.modified.push(Drift {
                path: p.clone(),
                why: format!("the link points to {t:?}, the manifest says {want:?}"),
            }),
            None => verdict.missing.push(Drift {
                path: p.clone(),
                why: "the link is gone".into(),
            }),
        }
    }
    if hash {
        let files: Vec<(&String, u64, u128)> = manifest
            .entries
            .iter()
            .filter_map(|(p, e)| match e.kind {
                Kind::File { size, hash } => Some((p, size, hash)),
                _ => None,
            })
            .filter(|(p, size, _)| {
                found
                    .get(*p)
                    .is_some_and(|f| f.kind == PathKind::File && f.size == *size)
            })
            .collect();
        let hashed = stream::iter(files.into_iter().map(|(p, size, want)| {
            let path = format!("{root}/{p}");
            async move {
                let got = session.read_file(&path, size + 1).await;
                (p, want, got)
            }
        }))
        .buffer_unordered(IN_FLIGHT / 4)
        .collect::<Vec<_>>()
        .await;
        for (p, want, got) in hashed {
            match got? {
                Some(bytes) if xxhash_rust::xxh3::xxh3_128(&bytes) == want => {}
                Some(_) => verdict.modified.push(Drift {
                    path: p.clone(),
                    why: "its content differs (same size, other bytes)".into(),
                }),
                None => verdict.missing.push(Drift {
                    path: p.clone(),
                    why: "the file is gone".into(),
                }),
            }
        }
    }
    // What the hooks make in a release (composer's vendor/, caches) is declared, not drift.
    if !target.verify_exclude.is_empty() {
        let base = std::path::Path::new("/release");
        let excluded =
            crate::source::walk::matcher(base, &target.verify_exclude, "verify_exclude")?;
        let kept = |d: &Drift| {
            let p = base.join(&d.path);
            !(excluded.matched(&p, true).is_ignore()
                || excluded.matched_path_or_any_parents(&p, false).is_ignore())
        };
        verdict.modified.retain(kept);
        verdict.missing.retain(kept);
        verdict.extra.retain(kept);
    }
    verdict.modified.sort_by(|a, b| a.path.cmp(&b.path));
    verdict.missing.sort_by(|a, b| a.path.cmp(&b.path));
    verdict.checked = manifest.entries.len();
    Ok(())
}

/// Every entry below `root`, listing every directory of the manifest at once. Directories the
/// manifest does not know are reported by their parent's listing, not entered.
async fn walk(
    session: &Session,
    root: &str,
    manifest: &Manifest,
) -> Result<BTreeMap<String, DirEntry>> {
    let dirs: Vec<String> = std::iter::once(String::new())
        .chain(
            manifest
                .entries
                .iter()
                .filter(|(_, e)| e.is_dir())
                .map(|(p, _)| p.clone()),
        )
        .collect();
    let listings = stream::iter(dirs.into_iter().map(|dir| async move {
        let path = if dir.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{dir}")
        };
        // Only a real directory is listed: a link where the manifest has a directory is
        // reported by its parent's listing, never followed.
        let listed = match session.path_kind(&path).await {
            Ok(PathKind::Dir) => session.list_dir(&path).await,
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        (dir, listed)
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<_>>()
    .await;
    let mut found = BTreeMap::new();
    for (dir, listed) in listings {
        for entry in listed?.unwrap_or_default() {
            let path = if dir.is_empty() {
                entry.name.clone()
            } else {
                format!("{dir}/{}", entry.name)
            };
            found.insert(path, entry);
        }
    }
    Ok(found)
}

fn kind_word(k: PathKind) -> &'static str {
    match k {
        PathKind::Dir => "a directory",
        PathKind::File => "a file",
        PathKind::Symlink => "a symbolic link",
        PathKind::Other => "a special file",
        PathKind::Missing => "nothing",
    }
}

/// Compare what was found with the manifest; returns the links in no manifest, which are fine
/// when the shared walk made them.
fn compare(
    manifest: &Manifest,
    found: &BTreeMap<String, DirEntry>,
    verdict: &mut HostVerdict,
) -> Vec<String> {
    let mut links = Vec::new();
    for (path, e) in &manifest.entries {
        let want = match e.kind {
            Kind::Dir => PathKind::Dir,
            Kind::File { .. } => PathKind::File,
            Kind::Symlink { .. } => PathKind::Symlink,
        };
        let Some(f) = found.get(path) else {
            // Inside a directory that is missing or not a directory: said once, for the top.
            let parent_reported = path.rsplit_once('/').is_some_and(|(parent, _)| {
                found.get(parent).is_none_or(|p| p.kind != PathKind::Dir)
            });
            if !parent_reported {
                verdict.missing.push(Drift {
                    path: path.clone(),
                    why: format!("the manifest has {}", kind_word(want)),
                });
            }
            continue;
        };
        if f.kind != want {
            verdict.modified.push(Drift {
                path: path.clone(),
                why: format!(
                    "{} where the manifest has {}",
                    kind_word(f.kind),
                    kind_word(want)
                ),
            });
            continue;
        }
        match e.kind {
            Kind::File { size, .. } if f.size != size => verdict.modified.push(Drift {
                path: path.clone(),
                why: format!("{} bytes, the manifest says {size}", f.size),
            }),
            Kind::File { .. } | Kind::Dir if f.mode & 0o777 != e.mode => {
                verdict.modified.push(Drift {
                    path: path.clone(),
                    why: format!("mode {:o}, the manifest says {:o}", f.mode & 0o777, e.mode),
                })
            }
            _ => {}
        }
    }
    let known: BTreeSet<&String> = manifest.entries.keys().collect();
    for (path, f) in found {
        if known.contains(path) {
            continue;
        }
        if f.kind == PathKind::Symlink {
            // Maybe a link the shared walk made: its target decides (see `verify`).
            links.push(path.clone());
            continue;
        }
        verdict.extra.push(Drift {
            path: path.clone(),
            why: format!("{} that is in no manifest", kind_word(f.kind)),
        });
    }
    links
}
