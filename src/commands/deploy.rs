//! `cutover deploy`: the stages of one deploy, in order.
//!
//! 1. scan the source (before connecting: an unreadable file stops us before anything is sent)
//! 2. connect, take the lock
//! 3. plan against the manifest of the release `current` points to
//! 4. upload changed files, the new manifest and the script into staging
//! 5. run the script in one exec call (or, with --emit-script, print it)
//!
//! Until the script runs, nothing outside `.cutover/` has changed, so a failure here only has to
//! remove staging and release the lock.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::Target;
use crate::error::LiveWithWarnings;
use crate::layout::{Layout, ReleaseId};
use crate::plan::{Base, Plan};
use crate::remote::{PathKind, Session, Upload, UploadKind};
use crate::script::{self, Lock};
use crate::source::{walk, Kind, Manifest};

use super::{human_bytes, lock, Output, Progress};

/// Largest manifest we read back from a server (about 2 million entries).
const MANIFEST_LIMIT: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub emit_script: bool,
    pub full: bool,
}

pub async fn run(target: &Target, opts: Options, out: Output) -> Result<()> {
    let started = Instant::now();
    let name = target.name.clone();

    let source = target.source.clone();
    let (exclude, include) = (target.exclude.clone(), target.include.clone());
    let scan = tokio::task::spawn_blocking(move || walk::scan(&source, &exclude, &include))
        .await?
        .with_context(|| format!("target {name}, stage scan"))?;
    for w in &scan.warnings {
        out.warn(w);
    }
    let new = scan.manifest;
    out.verbose(format_args!("scanned {} entries, {} in files", new.entries.len(), human_bytes(new.total_bytes())));

    let session = Session::open(target, out.verbose).await.with_context(|| format!("target {name}, stage connect"))?;
    let layout = Layout::new(&target.path);

    if opts.dry_run {
        let state = read_state(&session, &layout, target).await?;
        let plan = Plan::build(state.previous.as_ref().map(|(id, m)| (id, m)), &new, opts.full);
        print_plan(&plan, &state, out);
        session.close().await;
        return Ok(());
    }

    let held = lock::acquire(&session, &layout, target).await?;
    let result = locked_stages(&session, &layout, target, &new, opts, out, &held, started).await;
    match result {
        Ok(Finished::Ran) => {
            // the script released the lock
            session.close().await;
            Ok(())
        }
        Ok(Finished::Emitted) => {
            lock::release(&session, &layout).await.with_context(|| format!("target {}, stage unlock", target.name))?;
            session.close().await;
            Ok(())
        }
        Ok(Finished::LiveWithWarnings(msg)) => {
            session.close().await;
            Err(LiveWithWarnings(msg).into())
        }
        Err(e) => {
            if let Some(id) = held.release.lock().unwrap().clone() {
                let _ = session.remove_tree(&layout.staging(&id)).await;
            }
            if lock::release(&session, &layout).await.is_err() {
                out.warn(&format!("could not release the lock {}; run `cutover unlock {}`", layout.lock(), target.name));
            }
            session.close().await;
            Err(e)
        }
    }
}

enum Finished {
    Ran,
    Emitted,
    LiveWithWarnings(String),
}

/// What the server holds before this deploy.
pub struct State {
    pub releases: Vec<ReleaseId>,
    pub foreign: Vec<String>,
    pub current: Option<String>,
    pub previous: Option<(ReleaseId, Manifest)>,
}

pub async fn read_state(session: &Session, layout: &Layout, target: &Target) -> Result<State> {
    let ctx = || format!("target {}, stage plan", target.name);
    let names = session.list_dir(&layout.releases()).await.with_context(ctx)?.unwrap_or_default();
    let mut releases = Vec::new();
    let mut foreign = Vec::new();
    for n in names {
        match ReleaseId::parse(&n) {
            Some(id) => releases.push(id),
            None if n.ends_with(".partial") => {}
            None => foreign.push(n),
        }
    }
    releases.sort();
    foreign.sort();

    let current = match session.path_kind(&layout.current()).await.with_context(ctx)? {
        PathKind::Missing => None,
        PathKind::Symlink => session.read_link(&layout.current()).await.with_context(ctx)?,
        _ => bail!(
            "target {}: {} is not a symlink. It was probably made by a tool that deploys in place. \
             Move it into releases/ and replace it with a link, e.g.:\n  cd {} && mv current releases/00000000000000-old && ln -s releases/00000000000000-old current\n\
             (cutover leaves non-release names in releases/ alone)",
            target.name,
            layout.current(),
            layout.root()
        ),
    };
    // `current` made by cutover is `releases/ID`; Capistrano-style tools write absolute links.
    let current_id = current.as_deref().and_then(|link| {
        let (parent, last) = link.trim_end_matches('/').rsplit_once('/')?;
        let parent_ok = parent == "releases" || parent == layout.releases() || parent.ends_with("/releases");
        ReleaseId::parse(last).filter(|_| parent_ok)
    });
    let previous = match current_id {
        Some(id) if releases.contains(&id) => match session.read_file(&layout.manifest(&id), MANIFEST_LIMIT).await.with_context(ctx)? {
            Some(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| anyhow!("the manifest is not UTF-8"));
                let manifest = text.and_then(|t| Manifest::parse(&t)).map_err(|e| {
                    anyhow!(
                        "target {}, stage plan: the manifest {} is not valid ({e:#}). It is read from the server, so cutover \
                         refuses to act on it. If the release itself is fine, remove that file and deploy again: the next \
                         release will then be uploaded in full",
                        target.name,
                        layout.manifest(&id)
                    )
                })?;
                Some((id, manifest))
            }
            None => None,
        },
        _ => None,
    };
    Ok(State { releases, foreign, current, previous })
}

#[allow(clippy::too_many_arguments)]
async fn locked_stages(
    session: &Session,
    layout: &Layout,
    target: &Target,
    new: &Manifest,
    opts: Options,
    out: Output,
    held: &lock::Held,
    started: Instant,
) -> Result<Finished> {
    let name = &target.name;
    let state = read_state(session, layout, target).await?;
    let id = ReleaseId::next(&state.releases);
    *held.release.lock().unwrap() = Some(id.clone());
    lock::write_info(session, layout, &id, "cutover deploy").await.with_context(|| format!("target {name}, stage lock"))?;

    let plan = Plan::build(state.previous.as_ref().map(|(id, m)| (id, m)), new, opts.full);
    out.verbose(format_args!(
        "release {id}: {} to upload ({}), {} to delete, {} unchanged{}",
        plan.uploads.len(),
        human_bytes(plan.upload_bytes),
        plan.deletes.len(),
        plan.unchanged,
        match &plan.base {
            Base::Empty => " (new release from scratch)".to_string(),
            Base::Previous(p) => format!(" (based on {p})"),
        }
    ));

    let lock_mode = if opts.emit_script { Lock::TakenByScript } else { Lock::HeldByClient };
    let text = script::deploy_script(target, &id, &plan, lock_mode);

    // --- upload
    let tree = layout.staging_tree(&id);
    let mut dirs = vec![layout.staging_root(), layout.staging(&id), tree.clone()];
    let wanted: std::collections::BTreeSet<&str> = match plan.base {
        Base::Empty => new.entries.iter().filter(|(_, e)| e.is_dir()).map(|(p, _)| p.as_str()).collect(),
        Base::Previous(_) => plan.uploads.iter().filter_map(|p| p.rsplit_once('/').map(|(d, _)| d)).flat_map(ancestors).collect(),
    };
    dirs.extend(wanted.iter().map(|d| format!("{tree}/{d}")));
    let mut uploads: Vec<Upload> = plan
        .uploads
        .iter()
        .map(|rel| {
            let e = &new.entries[rel];
            let what = match &e.kind {
                Kind::File { size, .. } => UploadKind::File { local: target.source.join(rel), size: *size, mode: e.mode },
                Kind::Symlink { target } => UploadKind::Symlink { target: target.clone() },
                Kind::Dir => unreachable!("directories are created, not uploaded"),
            };
            Upload { remote: format!("{tree}/{rel}"), what }
        })
        .collect();
    uploads.push(Upload { remote: layout.staging_manifest(&id), what: UploadKind::Data { bytes: new.render().into_bytes(), mode: 0o644 } });
    if !opts.emit_script {
        uploads.push(Upload { remote: layout.staging_script(&id), what: UploadKind::Data { bytes: text.clone().into_bytes(), mode: 0o644 } });
    }
    let progress = Progress::new(plan.upload_bytes, out);
    session
        .upload(&dirs, uploads, &progress)
        .await
        .with_context(|| format!("target {name}, stage upload into {}", layout.staging(&id)))?;
    progress.finish();

    if opts.emit_script {
        print!("{text}");
        out.info(format_args!(
            "staged release {id} ({} files, {}); the script above completes the deploy when run on the server with sh",
            plan.uploads.len(),
            human_bytes(plan.upload_bytes)
        ));
        return Ok(Finished::Emitted);
    }

    // --- run
    let exit = session
        .run_script(&layout.staging_script(&id), out.quiet)
        .await
        .with_context(|| format!("target {name}, stage run: the deploy script could not be started"))?;
    let result = parse_result(&exit.stdout);
    let summary = |verb: &str| {
        format!(
            "{name}: release {id} {verb}: {} uploaded, {} deleted, {} unchanged, {} sent, {} shared links, {} warnings, {:.1} s",
            plan.uploads.len(),
            plan.deletes.len(),
            plan.unchanged,
            human_bytes(plan.upload_bytes),
            result.links,
            result.warnings,
            started.elapsed().as_secs_f64()
        )
    };
    match exit.code {
        Some(0) => {
            out.summary(&summary("is live"));
            Ok(Finished::Ran)
        }
        Some(3) => {
            out.summary(&summary("is live"));
            Ok(Finished::LiveWithWarnings(format!(
                "target {name}, stage after swap: release {id} is live, but an after_swap hook or the cleanup failed (see the warnings above)"
            )))
        }
        Some(code) => Err(anyhow!(
            "target {name}, stage run: the deploy script failed (exit {code}); current is untouched and release {id} was removed"
        )),
        None => Err(anyhow!(
            "target {name}, stage run: the connection ended before the deploy script reported back. On the server the script \
             finishes or undoes itself on its own; run `cutover releases {name}` to see which release is live"
        )),
    }
}

fn ancestors(dir: &str) -> Vec<&str> {
    let mut out = vec![dir];
    let mut cur = dir;
    while let Some((parent, _)) = cur.rsplit_once('/') {
        out.push(parent);
        cur = parent;
    }
    out
}

#[derive(Default)]
struct ScriptResult {
    links: u64,
    warnings: u64,
}

/// The script's last stdout line: `cutover-result release=ID links=N warnings=N swap=METHOD`.
fn parse_result(stdout: &str) -> ScriptResult {
    let mut r = ScriptResult::default();
    if let Some(line) = stdout.lines().rev().find(|l| l.starts_with("cutover-result ")) {
        for field in line.split_whitespace() {
            match field.split_once('=') {
                Some(("links", n)) => r.links = n.parse().unwrap_or(0),
                Some(("warnings", n)) => r.warnings = n.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    r
}

fn print_plan(plan: &Plan, state: &State, out: Output) {
    let base = match &plan.base {
        Base::Empty => "a new release from scratch".to_string(),
        Base::Previous(p) => format!("a copy of release {p}"),
    };
    out.summary(&format!(
        "dry run: would build {base}: {} to upload ({}), {} to delete, {} new directories, {} unchanged; nothing was written",
        plan.uploads.len(),
        human_bytes(plan.upload_bytes),
        plan.deletes.len(),
        plan.new_dirs.len(),
        plan.unchanged
    ));
    if out.verbose {
        for p in &plan.uploads {
            eprintln!("  upload  {p:?}");
        }
        for p in &plan.deletes {
            eprintln!("  delete  {p:?}");
        }
        for p in &plan.new_dirs {
            eprintln!("  mkdir   {p:?}");
        }
        for f in &state.foreign {
            eprintln!("  note: releases/{f:?} is not a cutover release; left alone");
        }
    }
}
