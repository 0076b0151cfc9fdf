//! `cutover deploy`: the stages of a deploy, for a fleet of hosts — a single host is a fleet of
//! one, on the same code path.
//!
//! ```text
//! scan the source ─┐
//! connect (≤10 at once) ─┴─ survey + lock every host ─ plan ─ prepare every host ──┐
//!                                                         (upload, build, before_swap)
//!     barrier: all ready? ── go to all ── every host swaps, verifies ── all passed? ── commit
//!                 └ no: abort to all                                └ no: revert to all
//! ```
//!
//! Until a host's deploy script runs, nothing outside `.cutover/` has changed there, so a
//! failure only has to give back the lock and staging. Every host is locked before any is
//! prepared, and none switches before all are ready: a failure anywhere before `go` leaves
//! `current` untouched everywhere (exit 1). After `go`, a host whose verify hooks fail, or that
//! does not switch, makes every host switch back. A host that could not be switched back leaves
//! the fleet split: exit 4, with the state of each host and the command that reconciles it.
//!
//! A fleet of one sends `go` and `commit` together with `upload-done`, so a single host pays
//! no round trip for the barrier.

pub mod host;
pub mod report;
pub mod seen;
pub mod sftp;

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use futures::stream::{self, StreamExt};

use crate::config::Fleet;
use crate::error::{usage, FleetSplit, LiveWithWarnings};
use crate::layout::{self, ReleaseId};
use crate::output::{bytes, Output};
use crate::script::protocol::word;
use crate::source::record::{self, Record};
use crate::source::{self, Manifest};

use host::{HostDeploy, Phase, Scanned};
use report::{HostReport, Report, Status};

/// sshd's default MaxStartups is 10: more handshakes at once to one server and it starts
/// dropping them. Different servers are connected to side by side (a second wave of
/// handshakes would cost a 20-host fleet one more handshake's round trips), up to a bound that
/// keeps a very large fleet's client within its means.
const CONNECTS_PER_SERVER: usize = 10;
const CONNECTS_AT_ONCE: usize = 64;

/// Connect to every host of `fleet`, in its order; `out` gives each host its output.
pub(crate) async fn connect_all(
    fleet: &Fleet,
    out: impl Fn(&str) -> Output,
) -> Vec<Result<HostDeploy>> {
    use std::collections::HashMap;
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let mut servers: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let connects = fleet.hosts.iter().map(|t| {
        let server = match &t.host {
            crate::config::Host::Ssh { host, port, .. } => {
                format!("{}:{port}", host.to_lowercase())
            }
            crate::config::Host::Local => "local".to_string(),
        };
        let turn = servers
            .entry(server)
            .or_insert_with(|| Arc::new(Semaphore::new(CONNECTS_PER_SERVER)))
            .clone();
        let o = out(&t.label);
        async move {
            let _turn = turn.acquire_owned().await;
            HostDeploy::connect(t, o).await
        }
    });
    stream::iter(connects.collect::<Vec<_>>())
        .buffered(CONNECTS_AT_ONCE)
        .collect()
        .await
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub emit_script: bool,
    pub full: bool,
    /// Build a new release even when nothing changed.
    pub force: bool,
}

/// Deploy `fleet`; the report says how each host ended (also when the deploy failed).
pub async fn run(fleet: &Fleet, opts: Options, out: &Output) -> (Report, Result<()>) {
    let started = Instant::now();
    let mut hosts: Vec<HostDeploy> = Vec::new();
    let mut unreached: Vec<HostReport> = Vec::new();
    let result = stages(fleet, opts, out, &mut hosts, &mut unreached).await;
    let status = match &result {
        Ok(s) => *s,
        Err(_) => overall(&hosts),
    };
    let mut done = Vec::new();
    for h in hosts {
        let mut r = h.report.clone();
        if r.seconds == 0.0 {
            r.seconds = started.elapsed().as_secs_f64();
        }
        done.push(r);
        h.close().await;
    }
    out.stage("connections closed");
    // Every host of the fleet, in its order: also those never reached (or, when the deploy
    // stopped before connecting, all of them).
    let reports = fleet
        .hosts
        .iter()
        .map(|t| {
            let mine = |r: &&HostReport| r.host == t.label;
            done.iter()
                .find(mine)
                .or_else(|| unreached.iter().find(mine))
                .cloned()
                .unwrap_or_else(|| HostReport {
                    host: t.label.clone(),
                    destination: t.describe(),
                    ..HostReport::default()
                })
        })
        .collect();
    let report = Report::new(fleet, reports, status, started.elapsed().as_secs_f64());
    (report, result.map(|_| ()))
}

/// The hosts [`connect_all`] reached go to `hosts`; each one it did not becomes a report in
/// `unreached` (its error in the table and the JSON), and its error is returned.
pub(crate) fn sort_connected(
    fleet: &Fleet,
    connected: Vec<Result<HostDeploy>>,
    hosts: &mut Vec<HostDeploy>,
    unreached: &mut Vec<HostReport>,
) -> Vec<anyhow::Error> {
    let mut failures = Vec::new();
    for (t, c) in fleet.hosts.iter().zip(connected) {
        match c {
            Ok(h) => hosts.push(h),
            Err(e) => {
                unreached.push(HostReport {
                    host: t.label.clone(),
                    destination: t.describe(),
                    error: Some(format!("{e:#}")),
                    seconds: crate::output::started().elapsed().as_secs_f64(),
                    ..HostReport::default()
                });
                failures.push(e);
            }
        }
    }
    failures
}

/// Longest path a Linux server can open: PATH_MAX (4,096) less its terminating NUL.
const PATH_MAX: usize = 4095;

/// The source's longest path, once under a host's `DEPLOY_PATH/releases/ID.partial/`, over
/// [`PATH_MAX`]: what to say. (An SFTP server answered such a file with "Bad message", and
/// verify then said the release had drifted.)
fn too_long_for_a_host(
    hosts: &[HostDeploy],
    new: &crate::source::Manifest,
    id: &ReleaseId,
) -> Option<String> {
    let longest = new.entries.keys().max_by_key(|p| p.len())?;
    hosts.iter().find_map(|h| {
        let under = format!("{}/{id}.partial/", h.layout.releases());
        let total = under.len() + longest.len();
        (total > PATH_MAX).then(|| {
            format!(
                "{}: the source's longest path ({} bytes: {}...) would be {total} bytes long in {under}, over the {PATH_MAX} bytes a path may have on the server (PATH_MAX); shorten or exclude it, or deploy to a shorter path",
                h.target.stage("plan"),
                longest.len(),
                longest.chars().take(60).collect::<String>()
            )
        })
    })
}

/// How a fleet ended when something failed: all failed/reverted, or split.
pub(crate) fn overall(hosts: &[HostDeploy]) -> Status {
    let live = hosts
        .iter()
        .filter(|h| h.report.status == Status::Live)
        .count();
    let unknown = hosts.iter().any(|h| h.report.status == Status::Unknown);
    if (live > 0 && live < hosts.len()) || unknown {
        Status::Unknown
    } else if hosts.iter().any(|h| h.report.status == Status::Reverted) {
        Status::Reverted
    } else if live == hosts.len() && live > 0 {
        Status::Live
    } else {
        Status::Failed
    }
}

async fn stages(
    fleet: &Fleet,
    opts: Options,
    out: &Output,
    hosts: &mut Vec<HostDeploy>,
    unreached: &mut Vec<HostReport>,
) -> Result<Status> {
    let single = fleet.is_single();
    if opts.emit_script && !single {
        return Err(usage(format!(
            "--emit-script prints the script of one host: add --host NAME (target {} has {} hosts)",
            fleet.name,
            fleet.hosts.len()
        )));
    }
    let mut interrupts = Interrupts::listen()?;
    let host_out = |label: &str| out.for_member(fleet.names_hosts(), label);

    // --- 1. scan the source while connecting to every host. The survey starts once every
    // host is connected, whether or not the scan is done: a large tree's hashing overlaps the
    // reading of the live manifests (nothing is written before the scan is known to be good).
    let read_only = opts.dry_run || opts.emit_script;
    // A host that has the source's tree live already is told from its digest (see
    // `HostDeploy::survey_while_scanning`); --force and --full build a release anyway.
    let wants_digest = !read_only && !opts.force && !opts.full;
    let (scan_progress, scan_watch) = tokio::sync::watch::channel(Scanned::Running);
    // The scanned tree, for the hosts that start their upload as soon as they are surveyed:
    // set before the scan says it is done.
    let scanned_tree = std::sync::Arc::new(std::sync::OnceLock::<std::sync::Arc<Manifest>>::new());
    let first = fleet.hosts[0].clone();
    let tree = scanned_tree.clone();
    let scan = tokio::task::spawn_blocking(move || {
        let scan =
            source::scan_release(&first).map(|s| (std::sync::Arc::new(s.manifest), s.warnings));
        if let Ok((manifest, _)) = &scan {
            let _ = tree.set(manifest.clone());
        }
        let digest = scan
            .as_ref()
            .ok()
            .filter(|_| wants_digest)
            .map(|(m, _)| m.tree_digest());
        let _ = scan_progress.send(match &scan {
            Ok((m, _)) => Scanned::Done {
                digest: digest.clone(),
                bytes: m.total_bytes(),
            },
            Err(_) => Scanned::Failed,
        });
        let git = record::git_state(&first.source);
        (scan, git, digest)
    });
    let stopped = |signal| {
        anyhow!(
            "target {}: interrupted by {signal}; nothing was changed",
            fleet.name
        )
    };
    let connected = tokio::select! {
        signal = interrupts.next() => return Err(stopped(signal)),
        connected = connect_all(fleet, host_out) => connected,
    };
    let mut failures = sort_connected(fleet, connected, hosts, unreached);
    if !failures.is_empty() {
        // What is wrong with the source is said first: it is what fails on every host.
        if let Ok((Err(e), _, _)) = scan.await {
            failures.insert(0, e.context(fleet.stage("scan")));
        }
        return Err(first_failure(
            failures,
            fleet,
            "nothing was changed on any host",
        ));
    }

    // --- 2. survey every host and (unless this is a dry run) take every lock
    // An interrupt does not cut the survey short: a lock whose rename is on its way would be
    // taken on the server without this client knowing it holds it. Once the survey is done the
    // locks are known, and given back.
    let side_by_side = hosts.len();
    let fleet_upload = (side_by_side > 1)
        .then(|| std::sync::Arc::new(crate::archive::FleetUpload::new(side_by_side)));
    for h in hosts.iter_mut() {
        h.fleet_upload = fleet_upload.clone();
    }
    // The release's name: this moment, unless a host has a newer release (see below). Each
    // host's upload starts under the name it alone would give, the moment it is surveyed.
    let now = layout::now();
    let (surveyed, scanned, interrupted) = {
        let surveys = futures::future::join_all(hosts.iter_mut().map(|h| {
            let scan = scan_watch.clone();
            let tree = scanned_tree.clone();
            // The exec request goes out as soon as the scan is done, not waited for: the
            // shell starts on the server while the survey's flights travel.
            async move {
                h.survey_while_scanning(opts.dry_run, Some(scan), !read_only)
                    .await?;
                if let Some(tree) = tree.get().filter(|_| !read_only) {
                    h.upload_early(tree, now, opts.full).await;
                }
                Ok(())
            }
        }));
        let both = async { tokio::join!(surveys, scan) };
        tokio::pin!(both);
        tokio::select! {
            signal = interrupts.next() => {
                let (s, scanned) = (&mut both).await;
                (s, scanned, Some(signal))
            }
            (s, scanned) = &mut both => (s, scanned, None),
        }
    };
    if let Some(signal) = interrupted {
        give_back_all(hosts).await;
        return Err(stopped(signal));
    }
    let (scan, git, digest) = match scanned {
        Ok(scanned) => scanned,
        Err(e) => {
            give_back_all(hosts).await;
            return Err(anyhow!(e).context("the source scan stopped"));
        }
    };
    let (_, mut failures) = note_failures(hosts, surveyed);
    let new = match scan {
        Ok((manifest, warnings)) => {
            for w in &warnings {
                out.warn(w);
                // (what the source lacks, every host's release lacks)
                for h in hosts.iter_mut() {
                    h.report.warnings.push(w.clone());
                }
            }
            Some(manifest)
        }
        Err(e) => {
            failures.insert(0, e.context(fleet.stage("scan")));
            None
        }
    };
    if let Some(git) = &git {
        if git.dirty {
            out.warn(format_args!(
                "the source's git working tree has changes that are not committed: the release records commit {} as dirty",
                &git.commit[..git.commit.len().min(12)]
            ));
        }
    }
    if let Some(why) = same_deploy_path(hosts, fleet) {
        give_back_all(hosts).await;
        return Err(usage(why));
    }
    if !failures.is_empty() {
        give_back_all(hosts).await;
        return Err(first_failure(
            failures,
            fleet,
            "nothing was changed on any host",
        ));
    }
    let new = new.expect("no failure: scanned");
    out.stage(format_args!(
        "scanned {} entries, {} in files",
        new.entries.len(),
        bytes(new.total_bytes())
    ));
    if hosts.iter().all(|h| h.unchanged.is_some()) {
        for h in hosts.iter_mut() {
            let id = h.unchanged.clone().expect("every host is unchanged");
            let plan = crate::plan::Plan::build(Some((&id, &new)), &new, false);
            h.report.status = Status::Unchanged;
            h.report.release = Some(id.to_string());
            h.report.unchanged = plan.unchanged;
            if let Some(digest) = &digest {
                h.remember_live(&id, digest);
            }
        }
        return Ok(Status::Unchanged);
    }
    // Some hosts hold the tree already and others do not: the fleet gets one new release
    // everywhere, so those hosts are surveyed (and locked) in full after all.
    let resurveyed = futures::future::join_all(hosts.iter_mut().map(|h| async move {
        match h.unchanged.take() {
            Some(_) => h.survey(false).await,
            None => Ok(()),
        }
    }))
    .await;
    let (_, failures) = note_failures(hosts, resurveyed);
    if !failures.is_empty() {
        give_back_all(hosts).await;
        return Err(first_failure(
            failures,
            fleet,
            "nothing was changed on any host",
        ));
    }

    // --- 3. one release name for the fleet, one plan per host
    // After every release of every host (names sort in deploy order), and past any name that
    // is there but is no release.
    let surveys = || hosts.iter().filter_map(|h| h.survey.as_ref());
    let releases: Vec<ReleaseId> = surveys().flat_map(|s| s.releases.clone()).collect();
    let taken: Vec<ReleaseId> = surveys().flat_map(|s| s.taken_names()).collect();
    let id = ReleaseId::next(&releases, now).and_then(|id| id.avoiding(&taken));
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            give_back_all(hosts).await;
            return Err(e.context(fleet.stage("plan")));
        }
    };
    for h in hosts.iter_mut() {
        h.plan(&new, opts.full);
    }
    if let Some(why) = too_long_for_a_host(hosts, &new, &id) {
        give_back_all(hosts).await;
        return Err(usage(why));
    }
    if opts.dry_run {
        for h in hosts.iter() {
            print_plan(h, out);
        }
        return Ok(Status::Unchanged);
    }
    let noop = hosts
        .iter()
        .all(|h| h.plan.as_ref().is_some_and(|p| p.noop));
    if noop && !opts.force && !opts.emit_script {
        futures::future::join_all(hosts.iter_mut().map(|h| h.give_back_lock())).await;
        for h in hosts.iter_mut() {
            h.report.status = Status::Unchanged;
            h.report.release = h.report.previous.clone();
            h.report.uploaded = 0;
        }
        return Ok(Status::Unchanged);
    }

    // --- 4. prepare every host: upload, build, before_swap, up to "ready"
    let mut manifest = (*new).clone();
    manifest.meta = Record::now(git).to_meta();
    let digest = digest.unwrap_or_else(|| new.tree_digest());
    let prepared = futures::future::join_all(
        hosts
            .iter_mut()
            .map(|h| async { h.prepare(&id, &manifest, &digest, &opts, single).await }),
    );
    let prepared = tokio::select! {
        signal = interrupts.next() => {
            call_off_all(hosts).await;
            return Err(anyhow!("target {}: interrupted by {signal} before anything was switched; current is untouched", fleet.name));
        }
        p = prepared => p,
    };
    let (prepared, failures) = note_failures(hosts, prepared);
    let emitted = prepared.into_iter().flatten().next();
    if let Some(script) = emitted {
        print!("{script}");
        let h = &mut hosts[0];
        out.info(format_args!(
            "staged release {id} ({} files, {}); the script above completes the deploy when run on the server with sh",
            h.report.uploaded,
            bytes(h.report.bytes_sent)
        ));
        if let Some(lock) = h.lock.take() {
            lock.release(&h.session, &h.layout)
                .await
                .with_context(|| h.target.stage("unlock"))?;
        }
        h.report.status = Status::Unchanged;
        return Ok(Status::Unchanged);
    }
    if !failures.is_empty() {
        return Err(call_off_failed(hosts, fleet, failures).await);
    }

    // --- 5. wait until every host is ready. A fleet of one has sent `go` and `commit`
    // already: its script finishes (or undoes itself) on its own, an interrupt only stops our
    // waiting. A fleet is held at the barrier: an interrupt calls every host off.
    // An SFTP-only host has no script on the server: the client itself finishes the switch.
    let words = if hosts.iter().all(|h| h.target.sftp_only) {
        "cutover: the switch over SFTP is under way and takes a moment; press Ctrl-C again to stop waiting (a lock left behind then is removed by `cutover unlock`)"
    } else {
        "cutover: the deploy script keeps running on the server and completes or undoes itself; press Ctrl-C again to stop waiting"
    };
    let target = fleet.name.clone();
    let notice = |mut interrupts: Interrupts| {
        tokio::spawn(async move {
            interrupts.next().await;
            eprintln!("{words}");
            interrupts.next().await;
            // What each host ends on is not known here: say where to look.
            eprintln!(
                "cutover: stopped waiting; the outcome on the server is unknown to this run: `cutover releases {target}` shows where each host is"
            );
            std::process::exit(130);
        })
    };
    let notice = if single {
        let notice = notice(interrupts);
        if let Err(e) = hosts[0].until_ready().await {
            notice.abort();
            hosts[0].clean_up().await;
            return Err(e);
        }
        notice
    } else {
        let ready = futures::future::join_all(hosts.iter_mut().map(|h| h.until_ready()));
        let ready = tokio::select! {
            signal = interrupts.next() => {
                call_off_all(hosts).await;
                return Err(anyhow!("target {}: interrupted by {signal} before anything was switched; current is untouched everywhere", fleet.name));
            }
            r = ready => r,
        };
        let (_, failures) = note_failures(hosts, ready);
        if !failures.is_empty() {
            return Err(call_off_failed(hosts, fleet, failures).await);
        }
        // --- 6. the barrier passed: switch every host, then commit or revert together.
        notice(interrupts)
    };
    let result = switch(hosts, fleet, Purpose::Deploy, single, out).await;
    notice.abort();
    for h in hosts.iter().filter(|h| h.report.status == Status::Live) {
        h.remember_live(&id, &digest);
    }
    result
}

/// `go` to every host, then `commit` when all verified, else `revert`.
pub(crate) async fn switch(
    hosts: &mut [HostDeploy],
    fleet: &Fleet,
    purpose: Purpose,
    single: bool,
    out: &Output,
) -> Result<Status> {
    // A host whose script stopped waiting by itself (barrier_timeout: another host's hooks ran
    // longer) is not there to switch: `go` goes to none, and every host is called off.
    if !single {
        let mut waited = Vec::new();
        for (i, h) in hosts.iter_mut().enumerate() {
            if h.stopped_waiting() {
                waited.push(i);
            }
        }
        if !waited.is_empty() {
            // The host the others waited for is the one ready last: it is the cause (its
            // build and before_swap hooks outlasted barrier_timeout), and it is named; the
            // hosts that stopped waiting are called off with the others.
            let slowest = (0..hosts.len())
                .filter(|i| !waited.contains(i))
                .max_by_key(|&i| hosts[i].ready_at);
            let names = waited
                .iter()
                .map(|&i| hosts[i].target.label.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let e = match slowest {
                Some(i) => {
                    let h = &mut hosts[i];
                    let e = anyhow!(
                        "{}: it was ready only after {names} had stopped waiting for `go` (barrier_timeout {} s): its build and before_swap hooks took longer than that; raise barrier_timeout above the longest any host needs",
                        h.target.stage("barrier"),
                        h.target.barrier_timeout
                    );
                    h.failed(&e);
                    e
                }
                None => {
                    let h = &mut hosts[waited[0]];
                    let e = h.gave_up(word::GO);
                    h.failed(&e);
                    e
                }
            };
            return Err(call_off_failed(hosts, fleet, vec![e]).await);
        }
    }
    let mut verdicts = futures::future::join_all(hosts.iter_mut().map(|h| h.go())).await;
    // The same before `commit`: a host that switched back by itself while others verified
    // makes the fleet revert, not commit around it.
    if !single {
        for (h, v) in hosts.iter_mut().zip(verdicts.iter_mut()) {
            if matches!(v, Ok(true)) && h.stopped_waiting() {
                *v = Err(h.gave_up(word::COMMIT));
            }
        }
    }
    let all_ok = verdicts.iter().all(|v| matches!(v, Ok(true)));
    if !all_ok {
        // Revert every host that switched; the failed ones switched back (or never moved).
        let reasons: Vec<String> = hosts
            .iter()
            .zip(&verdicts)
            .filter_map(|(h, v)| match v {
                Ok(true) => None,
                Ok(false) => Some(format!(
                    "{}: a verify hook failed",
                    h.target.stage("verify")
                )),
                // (a reason goes inside the fleet's message: its hint line stays out)
                Err(e) => Some(
                    format!("{e:#}")
                        .split("\nhint: ")
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
            })
            .collect();
        for (h, v) in hosts.iter_mut().zip(verdicts) {
            match v {
                // It switches back by itself; wait for it.
                Ok(false) => {
                    h.phase = Phase::Swapped;
                    h.failed(&anyhow!(
                        "{}: a verify hook failed",
                        h.target.stage("verify")
                    ));
                }
                Err(e) => h.failed(&e),
                Ok(true) => {}
            }
        }
        // Every host at once: the hosts on the new release are what makes the fleet mixed.
        futures::future::join_all(hosts.iter_mut().map(|h| h.call_off())).await;
        return Err(split_or_failed(hosts, fleet, purpose, reasons.join("; ")));
    }
    let committed = futures::future::join_all(hosts.iter_mut().map(|h| h.commit())).await;
    let mut warned = Vec::new();
    let mut errors = Vec::new();
    for (h, c) in hosts.iter_mut().zip(committed) {
        match c {
            Ok(0) => {}
            Ok(_) => warned.push(h.target.label.clone()),
            Err(e) => {
                if h.report.status != Status::Reverted {
                    h.report.status = Status::Unknown;
                }
                h.failed(&e);
                errors.push(format!("{e:#}"));
            }
        }
    }
    if !errors.is_empty() {
        return Err(split_or_failed(hosts, fleet, purpose, errors.join("; ")));
    }
    if single {
        let h = &hosts[0];
        h.out.info(format_args!(
            "{}: current -> releases/{}",
            h.report.destination,
            h.report.release.as_deref().unwrap_or("?")
        ));
    }
    if !warned.is_empty() {
        // A fleet names the hosts whose warnings to read (its lines are prefixed with them).
        let on = if single {
            String::new()
        } else {
            format!(" on {}", warned.join(", "))
        };
        return Err(LiveWithWarnings(format!(
            "{}: release {} is live, but an after_swap hook or the cleanup failed{on} (see the warnings above)",
            fleet.stage("after swap"),
            hosts[0].report.release.as_deref().unwrap_or("?")
        ))
        .into());
    }
    out.stage("committed");
    Ok(Status::Live)
}

/// What a switch is for: it decides which release a split fleet is brought back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A deploy: `previous` is where every host was, `release` the new one.
    Deploy,
    /// A rollback: `release` is where every host was going, and stays on every host.
    Rollback,
}

/// After a failed switch: exit 1 when every host is back where it was; exit 4 when the fleet
/// may be split (a host on the new release, or one whose state is unknown), with each host's
/// state and the exact command that brings the hosts together.
fn split_or_failed(
    hosts: &[HostDeploy],
    fleet: &Fleet,
    purpose: Purpose,
    why: String,
) -> anyhow::Error {
    let name = &fleet.name;
    let committed = hosts.iter().any(|h| h.report.status == Status::Live);
    // Where every host should end: a deploy that committed nowhere goes back to the previous
    // release (present on every host: nothing was pruned); one that committed somewhere goes
    // forward with a new deploy (a host that switched back removed the new release). A
    // rollback goes on to the release it was going to (a rollback removes nothing).
    let command = |host: Option<&HostDeploy>| -> String {
        let narrow = host
            .map(|h| format!(" --host {}", crate::shell::word(&h.target.label)))
            .unwrap_or_default();
        let back_to = match host {
            Some(h) => h.report.previous.clone(),
            None => {
                let first = hosts[0].report.previous.clone();
                hosts
                    .iter()
                    .all(|h| h.report.previous == first)
                    .then_some(first)
                    .flatten()
            }
        };
        match (purpose, committed, back_to) {
            (Purpose::Rollback, _, _) => format!(
                "cutover rollback {name}{narrow} --to {}",
                hosts[0].report.release.as_deref().unwrap_or("?")
            ),
            (Purpose::Deploy, false, Some(previous)) => {
                format!("cutover rollback {name}{narrow} --to {previous}")
            }
            (Purpose::Deploy, _, _) => format!("cutover deploy {name}{narrow}"),
        }
    };
    let split = hosts
        .iter()
        .any(|h| matches!(h.report.status, Status::Live | Status::Unknown));
    let states: Vec<String> = hosts
        .iter()
        .map(|h| {
            let release = h.report.release.as_deref().unwrap_or("?");
            let previous = h.report.previous.as_deref();
            let (state, fix) = match h.report.status {
                Status::Live => (format!("on {release}"), committed && split),
                Status::Unknown if h.stuck => (
                    format!("still on {release}: its script could not switch current back"),
                    true,
                ),
                Status::Unknown => (
                    format!(
                        "may still be on {release}{}",
                        previous
                            .map(|p| format!(" (or back on {p})"))
                            .unwrap_or_default()
                    ),
                    true,
                ),
                _ => (
                    match previous {
                        Some(p) => format!("on {p}"),
                        None => "as before (no release)".to_string(),
                    },
                    false,
                ),
            };
            let fix = if fix && !committed {
                format!("; to bring it back: {}", command(Some(h)))
            } else {
                String::new()
            };
            format!(
                "  {}: {}, {state}{fix}",
                h.target.label,
                h.report.status.word()
            )
        })
        .collect();
    if split && hosts.len() > 1 {
        FleetSplit(crate::error::with_hint(
            format!(
                "target {name}, stage swap: the fleet may be split ({why}):\n{}",
                states.join("\n")
            ),
            format!(
                "to bring every host to one release, run: {} (hosts already there are left alone); \
                 `cutover releases {name}` shows where each host is",
                command(None)
            ),
        ))
        .into()
    } else if split {
        anyhow!("{why}")
    } else if hosts.len() > 1 {
        anyhow!(
            "target {name}, stage swap: not switched ({why}); every host is back on its previous release:\n{}",
            states.join("\n")
        )
    } else {
        anyhow!("{why}")
    }
}

/// Two entries of `hosts` that are one deploy path, found out by the lock: the lock one of
/// them was refused by is the one this deploy took through the other. (Entries that are the same
/// as written, or once the ssh config is read, are refused before connecting.)
fn same_deploy_path(hosts: &[HostDeploy], fleet: &Fleet) -> Option<String> {
    hosts.iter().find_map(|h| {
        let token = h.refused_by.as_deref().filter(|t| !t.is_empty())?;
        let twin = hosts
            .iter()
            .find(|o| o.lock.as_ref().is_some_and(|l| l.token() == token))?;
        Some(format!(
            "target {}: hosts {} and {} are one deploy path: the lock {} found is the one this deploy took through {} ({}); list each server once in targets.{}.hosts",
            fleet.name,
            twin.target.label,
            h.target.label,
            h.target.label,
            twin.target.label,
            h.layout.lock(),
            fleet.name
        ))
    })
}

/// Each host's result of one stage, in the hosts' order: what succeeded, and the failures, each
/// also noted in its host's report (its error, and when its part ended).
pub(crate) fn note_failures<T>(
    hosts: &mut [HostDeploy],
    results: Vec<Result<T>>,
) -> (Vec<T>, Vec<anyhow::Error>) {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for (h, r) in hosts.iter_mut().zip(results) {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                h.failed(&e);
                failures.push(e);
            }
        }
    }
    (ok, failures)
}

/// One error for several hosts' failures: the first, with how many others failed.
pub(crate) fn first_failure(
    mut failures: Vec<anyhow::Error>,
    fleet: &Fleet,
    what: &str,
) -> anyhow::Error {
    let n = failures.len();
    let first = failures.remove(0);
    if fleet.is_single() {
        return first;
    }
    for other in &failures {
        eprintln!("cutover: error: {other:#}");
    }
    first.context(format!(
        "target {}: {n} of {} hosts failed; {what}",
        fleet.name,
        fleet.hosts.len()
    ))
}

/// Give back every lock this deploy holds (before any script ran).
async fn give_back_all(hosts: &mut [HostDeploy]) {
    futures::future::join_all(hosts.iter_mut().map(|h| h.clean_up())).await;
}

/// Before the switch: every host stops and removes what it built.
/// Before the switch, some hosts failed: call every host off, and the error that says so.
async fn call_off_failed(
    hosts: &mut [HostDeploy],
    fleet: &Fleet,
    failures: Vec<anyhow::Error>,
) -> anyhow::Error {
    call_off_all(hosts).await;
    first_failure(
        failures,
        fleet,
        "no host was switched: current is untouched everywhere",
    )
}

async fn call_off_all(hosts: &mut [HostDeploy]) {
    futures::future::join_all(hosts.iter_mut().map(|h| h.call_off())).await;
}

fn print_plan(h: &HostDeploy, out: &Output) {
    let Some(plan) = &h.plan else { return };
    let base = match &plan.base {
        crate::plan::Base::Empty => "a new release from scratch".to_string(),
        crate::plan::Base::Previous(p) => format!("a copy of release {p}"),
    };
    h.out.summary(format!(
        "dry run: would build {base}: {} to upload ({}){}, {} to delete, {} new directories, {} unchanged; nothing was written{}",
        plan.files_to_upload(),
        bytes(plan.upload_bytes),
        host::shared_links_note(plan),
        plan.deletes.len(),
        plan.new_dirs.len(),
        plan.unchanged,
        if plan.noop { " (nothing changed: a deploy would build no release)" } else { "" }
    ));
    if out.verbose {
        for p in &plan.uploads {
            // (a link to shared/ is made on the server: nothing of the source travels)
            if plan.shared_links.contains(p) {
                let target = crate::source::shared_link_target(p);
                eprintln!("{}  link    {p:?} -> {target:?}", h.out.prefix);
            } else {
                eprintln!("{}  upload  {p:?}", h.out.prefix);
            }
        }
        for p in &plan.deletes {
            eprintln!("{}  delete  {p:?}", h.out.prefix);
        }
        for p in &plan.new_dirs {
            eprintln!("{}  mkdir   {p:?}", h.out.prefix);
        }
        if let Some(s) = &h.survey {
            for f in &s.foreign {
                eprintln!(
                    "{}  note: releases/{:?} is not a cutover release ({}); left alone",
                    h.out.prefix, f.name, f.why
                );
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
pub struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Listen from the start of the command: a signal that arrives before anyone waits for it
    /// is still seen, and never kills the process halfway through a stage.
    pub fn listen() -> Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM, naming it.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
