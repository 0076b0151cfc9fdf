//! `cutover deploy`: the stages of one deploy, in order.
//!
//! 1. scan the source (before connecting: an unreadable file stops us before anything is sent)
//! 2. connect, take the lock
//! 3. plan against the manifest of the release `current` points to
//! 4. upload the changed files (as tar archives) and the new manifest into staging
//! 5. run the script in one exec call, given it on stdin (or, with --emit-script, print it)
//!
//! Until the script runs, nothing outside `.cutover/` has changed, so a failure here only has to
//! remove staging and release the lock.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::archive;
use crate::config::Target;
use crate::error::LiveWithWarnings;
use crate::layout::{Layout, ReleaseId};
use crate::plan::{Base, Plan};
use crate::remote::ssh::ExecRefused;
use crate::remote::{OpenFile, PathKind, Session};
use crate::script::{self, Lock, ManifestFrom};
use crate::source::{walk, Manifest};

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
    let mut interrupts = Interrupts::listen()?;

    // Before the lock is taken nothing has been written: an interrupt simply stops.
    let stopped = |signal| anyhow!("target {name}: interrupted by {signal}; nothing was changed");
    let (new, session) = tokio::select! {
        signal = interrupts.next() => return Err(stopped(signal)),
        ready = scan_and_connect(target, out) => ready?,
    };
    let layout = Layout::new(&target.path);

    if opts.dry_run {
        let state = tokio::select! {
            signal = interrupts.next() => return Err(stopped(signal)),
            state = read_state(&session, &layout, target) => state?,
        };
        let plan = Plan::build(
            state.previous.as_ref().map(|(id, m)| (id, m)),
            &new,
            opts.full,
        );
        print_plan(&plan, &state, out);
        session.close().await;
        return Ok(());
    }

    let (state, held, staged) = match survey_and_lock(&session, &layout, target, opts, out).await {
        Ok(r) => r,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    // Until the script runs, an interrupt (Ctrl-C, SIGTERM) abandons the deploy cleanly: the
    // server has nothing but staging and the lock to forget.
    let prepared = tokio::select! {
        signal = interrupts.next() => Err(anyhow!("target {name}: interrupted by {signal} before the deploy script ran; current is untouched")),
        prepared = prepare(&session, &layout, target, &new, state, &held, staged, opts, out) => prepared,
    };
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            abandon(&session, &layout, &held, target, out).await;
            session.close().await;
            return Err(e);
        }
    };

    if opts.emit_script {
        prepared.close_unused(&session).await;
        print!("{}", prepared.script);
        out.info(format_args!(
            "staged release {} ({} files, {}); the script above completes the deploy when run on the server with sh",
            prepared.id,
            prepared.plan.uploads.len(),
            human_bytes(prepared.plan.upload_bytes)
        ));
        let released = lock::release(&session, &layout)
            .await
            .with_context(|| format!("target {name}, stage unlock"));
        session.close().await;
        return released;
    }

    // Once the script runs, the server finishes it (or undoes it) whatever happens to us, and it
    // holds the lock: an interrupt must not release it under the script's feet.
    let notice = tokio::spawn(async move {
        interrupts.next().await;
        eprintln!("cutover: the deploy script keeps running on the server and completes or undoes itself; press Ctrl-C again to stop waiting");
        interrupts.next().await;
        std::process::exit(130);
    });
    let finished = run_remote_script(&session, target, &mut prepared, out, started).await;
    let finished = match finished {
        Err(e)
            if e.chain()
                .any(|c| c.is::<ScriptNotRun>() || c.is::<ExecRefused>()) =>
        {
            // Whatever the server ran instead, the lock and staging are still ours to remove.
            abandon(&session, &layout, &held, target, out).await;
            Err(e)
        }
        other => other,
    };
    notice.abort();
    session.close().await;
    finished
}

/// Stage 1: scan the source (an unreadable file stops us before anything is sent), then connect.
async fn scan_and_connect(target: &Target, out: Output) -> Result<(Manifest, Session)> {
    let name = &target.name;
    let source = target.source.clone();
    let (exclude, include) = (target.exclude.clone(), target.include.clone());
    let scan = tokio::task::spawn_blocking(move || walk::scan(&source, &exclude, &include))
        .await?
        .with_context(|| format!("target {name}, stage scan"))?;
    for w in &scan.warnings {
        out.warn(w);
    }
    let new = scan.manifest;
    out.stage(format_args!(
        "scanned {} entries, {} in files",
        new.entries.len(),
        human_bytes(new.total_bytes())
    ));
    let session = Session::open(target, out.verbose)
        .await
        .with_context(|| format!("target {name}, stage connect"))?;
    out.stage("connected");
    Ok((new, session))
}

/// Best effort after a failure before the script ran: remove staging, release the lock.
async fn abandon(
    session: &Session,
    layout: &Layout,
    held: &lock::Held,
    target: &Target,
    out: Output,
) {
    let release = Some(held.release.clone());
    let mut done = clean_up(session, layout, release.as_ref()).await;
    if !done.released {
        // The connection may be what failed: once more over a new one, removing the lock only
        // if its info file still names this deploy's release.
        let reopened = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            Session::open(target, false),
        )
        .await;
        if let (Ok(Ok(fresh)), Some(id)) = (reopened, release.as_ref()) {
            if lock::held_for(&fresh, layout, id).await {
                done = clean_up(&fresh, layout, Some(id)).await;
                done.notes.insert(0, "reconnected".into());
            }
            fresh.close().await;
        }
    }
    if !done.released {
        done.notes.push(format!(
            "could NOT release the lock {}: run `cutover unlock {}`",
            layout.lock(),
            target.name
        ));
    }
    out.warn(&format!("deploy abandoned: {}", done.notes.join(", ")));
}

struct CleanUp {
    notes: Vec<String>,
    released: bool,
}

/// Remove this deploy's staging and the lock; say what was done.
async fn clean_up(session: &Session, layout: &Layout, release: Option<&ReleaseId>) -> CleanUp {
    let mut notes = Vec::new();
    if let Some(id) = release {
        let staging = layout.staging(id);
        match session.remove_tree(&staging).await {
            Ok(()) => notes.push(format!("removed {staging}")),
            Err(_) => notes.push(format!("left {staging} (the next deploy removes it)")),
        }
    }
    let released = lock::release(session, layout).await.is_ok();
    if released {
        notes.push("released the lock".into());
    }
    CleanUp { notes, released }
}

/// Resolves on SIGINT or SIGTERM, naming it.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Listen from the start of the command: a signal that arrives before anyone waits for it
    /// is still seen, and never kills the process halfway through a stage.
    fn listen() -> Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM, naming it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

struct Prepared {
    id: ReleaseId,
    plan: Plan,
    script: String,
    /// Files opened in staging that nothing was written into (nothing changed): closed while
    /// the script runs.
    unused: Option<Staged>,
}

impl Prepared {
    /// Close the files nothing was written into. Best effort: the script reads none of them
    /// and removes staging, and the server closes what is left open when the session ends.
    async fn close_unused(&mut self, session: &Session) {
        if let Some(Staged { manifest, archive }) = self.unused.take() {
            let _ = tokio::join!(
                session.discard_file(manifest),
                session.discard_file(archive)
            );
        }
    }
}

/// What the server holds before this deploy.
pub struct State {
    pub releases: Vec<ReleaseId>,
    pub foreign: Vec<String>,
    pub current: Option<String>,
    pub previous: Option<(ReleaseId, Manifest)>,
}

/// What the server holds (for --dry-run): the releases, where `current` points, its manifest.
pub async fn read_state(session: &Session, layout: &Layout, target: &Target) -> Result<State> {
    let releases_dir = layout.releases();
    let (names, current) = tokio::join!(
        session.list_dir(&releases_dir),
        read_current(session, layout, target)
    );
    let (releases, foreign) = classify_releases(names.with_context(|| stage_plan(target))?);
    Ok(current?.into_state(releases, foreign))
}

const DEPLOY: &str = "cutover deploy";

/// With the lock held (under the name chosen from the clock): check that name against the
/// listing of `releases/`, then open the staged files and start the shell that will run the
/// script.
async fn with_lock_held(
    session: &Session,
    layout: &Layout,
    target: &Target,
    opts: Options,
    names: Result<Option<Vec<String>>>,
    mut held: lock::Held,
) -> Result<(Vec<ReleaseId>, Vec<String>, lock::Held, Staged), (anyhow::Error, lock::Held)> {
    let names = match names {
        Ok(n) => n,
        Err(e) => return Err((e.context(stage_plan(target)), held)),
    };
    let (releases, foreign) = classify_releases(names);
    if releases.iter().any(|r| *r >= held.release) {
        let id = ReleaseId::next(&releases);
        if let Err(e) = held.rename(session, layout, target, &id, DEPLOY).await {
            return Err((e, held));
        }
    }
    let id = held.release.clone();
    let files = [
        (layout.staging_manifest(&id), 0o644),
        (layout.staging_archive(&id, 0), 0o600),
    ];
    let shell = async {
        if opts.emit_script {
            Ok(()) // printed, not run
        } else {
            session.start_shell().await
        }
    };
    let staging = layout.staging(&id);
    let (opened, shell) = tokio::join!(session.open_staging(&staging, &files), shell);
    let opened = match opened.and_then(|o| shell.map(|()| o)) {
        Ok(o) => o,
        Err(e) => {
            let e = e.context(format!("target {}, stage upload", target.name));
            return Err((e, held));
        }
    };
    let [manifest, archive]: [OpenFile; 2] = opened.try_into().ok().expect("opened as asked");
    Ok((releases, foreign, held, Staged { manifest, archive }))
}

/// Files opened in staging ahead of the plan, so that their content can follow in the next
/// flight: the new manifest and the first archive part (both left empty when nothing changed).
struct Staged {
    manifest: OpenFile,
    archive: OpenFile,
}

/// Survey the server, take the lock and open the staged files, with as few round trips as the
/// dependencies allow:
///
/// ```text
/// flight 1: lstat+readlink current · mkdir lock.new-… + open its info · opendir releases/
/// flight 2: open+stat the live manifest · write info, rename lock.new-… → lock · readdir
/// flight 3: read the manifest · mkdir staging/ID + open its files · exec `sh`
/// ```
///
/// The lock names the release before `releases/` is listed: the clock's second, or the one
/// after the live release when that is later (two deploys in a second). When the listing shows
/// the name taken all the same (a newer release left by a rollback), the lock's info is
/// rewritten with the next free name before anything else happens.
async fn survey_and_lock(
    session: &Session,
    layout: &Layout,
    target: &Target,
    opts: Options,
    out: Output,
) -> Result<(State, lock::Held, Staged)> {
    let (listed, names) = tokio::sync::oneshot::channel();
    let releases_dir = layout.releases();
    let listing = async {
        let _ = listed.send(session.list_dir(&releases_dir).await);
    };
    let rest = async {
        let (link, pending) = tokio::join!(
            current_link(session, layout, target),
            lock::prepare(session, layout, target)
        );
        let pending = pending?;
        let (link, live) = match link {
            Ok(l) => l,
            Err(e) => {
                pending.discard(session).await;
                return Err(e);
            }
        };
        let guess = ReleaseId::next(live.iter());
        let manifest = async {
            match live {
                Some(id) => live_manifest(session, layout, target, id).await,
                None => Ok(None),
            }
        };
        let locking = async {
            // An error before the lock is held needs no clean-up; after, the lock is given back.
            let held = pending
                .take(session, layout, target, &guess, DEPLOY)
                .await?;
            let names = names
                .await
                .unwrap_or_else(|_| Err(anyhow!("the listing of releases/ was lost")));
            Ok::<_, anyhow::Error>(with_lock_held(session, layout, target, opts, names, held).await)
        };
        let (manifest, locked) = tokio::join!(manifest, locking);
        let (releases, foreign, held, staged) = match locked? {
            Ok(done) => done,
            Err((e, held)) => {
                abandon(session, layout, &held, target, out).await;
                return Err(e);
            }
        };
        match manifest {
            Ok(manifest) => {
                let current = Current { link, manifest };
                Ok((current.into_state(releases, foreign), held, staged))
            }
            Err(e) => {
                abandon(session, layout, &held, target, out).await;
                Err(e)
            }
        }
    };
    let ((), result) = tokio::join!(listing, rest);
    result
}

fn stage_plan(target: &Target) -> String {
    format!("target {}, stage plan", target.name)
}

/// Release names in `releases/`, sorted; other names (not ours: left alone) apart. Partial
/// releases of interrupted deploys are neither.
fn classify_releases(names: Option<Vec<String>>) -> (Vec<ReleaseId>, Vec<String>) {
    let mut releases = Vec::new();
    let mut foreign = Vec::new();
    for n in names.unwrap_or_default() {
        match ReleaseId::parse(&n) {
            Some(id) => releases.push(id),
            None if n.ends_with(".partial") => {}
            None => foreign.push(n),
        }
    }
    releases.sort();
    foreign.sort();
    (releases, foreign)
}

/// Where `current` points, and the manifest of that release when it is one of ours.
struct Current {
    link: Option<String>,
    manifest: Option<(ReleaseId, Manifest)>,
}

impl Current {
    fn into_state(self, releases: Vec<ReleaseId>, foreign: Vec<String>) -> State {
        // The manifest was read before the listing came back: it counts only if its release
        // is really there.
        let previous = self.manifest.filter(|(id, _)| releases.contains(id));
        State {
            releases,
            foreign,
            current: self.link,
            previous,
        }
    }
}

/// Read `current` and then, without waiting for anything else, the manifest of its release.
async fn read_current(session: &Session, layout: &Layout, target: &Target) -> Result<Current> {
    let (link, id) = current_link(session, layout, target).await?;
    let manifest = match id {
        Some(id) => live_manifest(session, layout, target, id).await?,
        None => None,
    };
    Ok(Current { link, manifest })
}

/// Where `current` points, and the release that is when it is one of ours.
async fn current_link(
    session: &Session,
    layout: &Layout,
    target: &Target,
) -> Result<(Option<String>, Option<ReleaseId>)> {
    let ctx = || stage_plan(target);
    let current_link = layout.current();
    let (kind, link) = tokio::join!(
        session.path_kind(&current_link),
        session.read_link(&current_link),
    );
    let link = match kind.with_context(ctx)? {
        PathKind::Missing => None,
        PathKind::Symlink => link.with_context(ctx)?,
        _ => bail!(
            "target {}, stage plan: {} is not a symlink. It was probably made by a tool that deploys in place. \
             Move it into releases/ and replace it with a link, e.g.:\n  cd {} && mv current releases/00000000000000-old && ln -s releases/00000000000000-old current\n\
             (cutover leaves non-release names in releases/ alone)",
            target.name,
            layout.current(),
            layout.root()
        ),
    };
    // `current` made by cutover is `releases/ID`; Capistrano-style tools write absolute links.
    let id = link.as_deref().and_then(|link| {
        let (parent, last) = link.trim_end_matches('/').rsplit_once('/')?;
        let parent_ok =
            parent == "releases" || parent == layout.releases() || parent.ends_with("/releases");
        ReleaseId::parse(last).filter(|_| parent_ok)
    });
    Ok((link, id))
}

/// The manifest of release `id`, checked: it comes from the server, so it is untrusted.
async fn live_manifest(
    session: &Session,
    layout: &Layout,
    target: &Target,
    id: ReleaseId,
) -> Result<Option<(ReleaseId, Manifest)>> {
    let Some(bytes) = session
        .read_file(&layout.manifest(&id), MANIFEST_LIMIT)
        .await
        .with_context(|| stage_plan(target))?
    else {
        return Ok(None);
    };
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
    Ok(Some((id, manifest)))
}

/// Plan and upload, with the lock held.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    session: &Session,
    layout: &Layout,
    target: &Target,
    new: &Manifest,
    state: State,
    held: &lock::Held,
    staged: Staged,
    opts: Options,
    out: Output,
) -> Result<Prepared> {
    let name = &target.name;
    let id = held.release.clone();

    let plan = Plan::build(
        state.previous.as_ref().map(|(id, m)| (id, m)),
        new,
        opts.full,
    );
    out.stage(format_args!(
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

    let lock_mode = if opts.emit_script {
        Lock::TakenByScript
    } else {
        Lock::HeldByClient
    };
    // A first deploy's archive also carries every directory, so empty ones exist too.
    let mut packed: Vec<String> = match plan.base {
        Base::Empty => new
            .entries
            .iter()
            .filter(|(_, e)| e.is_dir())
            .map(|(p, _)| p.clone())
            .collect(),
        Base::Previous(_) => Vec::new(),
    };
    packed.extend(plan.uploads.iter().cloned());
    let archive_parts = archive::split(new, packed);
    // An unchanged tree keeps its manifest: the script copies the previous release's. A
    // script printed to be run later (--emit-script) gets its own staged copy all the same: the
    // staging directory is then a complete record of the deploy it finishes.
    let manifest_from = match &state.previous {
        Some((_, previous))
            if previous == new && matches!(plan.base, Base::Previous(_)) && !opts.emit_script =>
        {
            ManifestFrom::Previous
        }
        _ => ManifestFrom::Staging,
    };
    let text = script::deploy_script(
        target,
        &id,
        &plan,
        archive_parts.len(),
        manifest_from,
        lock_mode,
    );
    if archive_parts.is_empty() && manifest_from == ManifestFrom::Previous {
        // Nothing to send: the files opened in staging stay empty and the script, which reads
        // none of them, need not wait for them to be closed.
        out.stage("nothing to upload");
        return Ok(Prepared {
            id,
            plan,
            script: text,
            unused: Some(staged),
        });
    }

    // --- upload into the files opened in staging: the manifest and the archive of changed
    // files, all in flight together.
    let progress = Progress::new(plan.upload_bytes, out);
    let mut parts = archive_parts.into_iter().enumerate().map(|(i, part)| {
        (
            layout.staging_archive(&id, i),
            archive::pack(target.source.clone(), new, part),
        )
    });
    let manifest = match manifest_from {
        ManifestFrom::Staging => new.render().into_bytes(),
        ManifestFrom::Previous => Vec::new(),
    };
    let upload = async {
        match parts.next() {
            Some((_, first)) => {
                let rest = parts.collect();
                session
                    .upload_archives((staged.archive, first), rest, &progress)
                    .await
            }
            // Nothing to upload: the file opened ahead stays empty (the script unpacks
            // `archives` parts, none here).
            None => session.finish_file(staged.archive, b"").await.map(|_| 0),
        }
    };
    let (sent, written) = tokio::join!(upload, session.finish_file(staged.manifest, &manifest));
    let sent = sent
        .and_then(|sent| written.map(|_| sent))
        .with_context(|| format!("target {name}, stage upload into {}", layout.staging(&id)))?;
    progress.finish();
    out.stage(format_args!(
        "uploaded {} (archive of {} entries)",
        human_bytes(sent),
        plan.uploads.len()
    ));

    Ok(Prepared {
        id,
        plan,
        script: text,
        unused: None,
    })
}

/// Run the script in one exec call and report how it ended.
async fn run_remote_script(
    session: &Session,
    target: &Target,
    prepared: &mut Prepared,
    out: Output,
    started: Instant,
) -> Result<()> {
    let name = &target.name;
    // --- run
    let script_started = Instant::now();
    let script = std::mem::take(&mut prepared.script);
    let (exit, ()) = tokio::join!(
        session.run_script(&script, out.quiet),
        prepared.close_unused(session)
    );
    let Prepared { id, plan, .. } = &*prepared;
    let exit = exit.with_context(|| {
        format!("target {name}, stage run: the deploy script could not be started")
    })?;
    if exit.code.is_some()
        && !exit
            .stdout
            .lines()
            .any(|l| l.starts_with("cutover-started "))
    {
        let said = exit.stdout.trim();
        return Err(ScriptNotRun(format!(
            "target {name}, stage run: the server ran something other than the deploy script (exit {}{}): \
             the account may be SFTP-only or have a forced command (`cutover check {name}` tells; \
             `cutover deploy --emit-script` prints the script to run by hand); current is untouched",
            exit.code.unwrap_or_default(),
            if said.is_empty() {
                String::new()
            } else {
                format!(", output {:?}", said.chars().take(200).collect::<String>())
            }
        ))
        .into());
    }
    out.stage(format_args!(
        "script ran in {:.3} s",
        script_started.elapsed().as_secs_f64()
    ));
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
            out.info(format_args!("{}: current -> releases/{id}", target.describe()));
            Ok(())
        }
        Some(3) => {
            out.summary(&summary("is live"));
            out.info(format_args!("{}: current -> releases/{id}", target.describe()));
            Err(LiveWithWarnings(format!(
                "target {name}, stage after swap: release {id} is live, but an after_swap hook or the cleanup failed (see the warnings above)"
            ))
            .into())
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

/// The exec call ended without the script's first line: something else ran in its place, and
/// the lock and staging are still the client's to remove.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ScriptNotRun(String);

#[derive(Default)]
struct ScriptResult {
    links: u64,
    warnings: u64,
}

/// The script's last stdout line: `cutover-result release=ID links=N warnings=N swap=METHOD`.
fn parse_result(stdout: &str) -> ScriptResult {
    let mut r = ScriptResult::default();
    if let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("cutover-result "))
    {
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
