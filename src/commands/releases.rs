//! `cutover releases` and `cutover unlock`: look at and repair a target's state, on every host
//! of a fleet.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::config::{Fleet, Target};
use crate::layout::{self, Layout, ReleaseId};
use crate::lock;
use crate::output::Output;
use crate::remote::{PathKind, Session};
use crate::source::record::{Git, Record};
use crate::source::Manifest;
use crate::survey::{Foreign, Survey, MANIFEST_LIMIT};

/// One release, as `releases --json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseInfo {
    pub id: String,
    /// `current` points to it (on every host that has it, for a fleet: see `hosts`).
    pub current: bool,
    pub created_at: String,
    pub files: Option<usize>,
    pub deployed_by: String,
    pub cutover_version: String,
    pub git: Option<Git>,
    /// The hosts that have it.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReleases {
    pub host: String,
    pub current: Option<String>,
    pub releases: Vec<String>,
    pub foreign: Vec<Foreign>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub target: String,
    /// Every host has `current` on the same release.
    pub in_sync: bool,
    pub releases: Vec<ReleaseInfo>,
    pub hosts: Vec<HostReleases>,
}

pub async fn list(fleet: &Fleet, json: bool, out: &Output) -> Result<()> {
    let per_host = futures::future::join_all(fleet.hosts.iter().map(|t| read_host(t, out))).await;
    let mut releases: BTreeMap<ReleaseId, ReleaseInfo> = BTreeMap::new();
    let mut hosts = Vec::new();
    let mut first_error = None;
    for (t, r) in fleet.hosts.iter().zip(per_host) {
        match r {
            Ok((survey, records)) => {
                let live = survey.current.release().cloned();
                for (id, (record, files)) in records {
                    let info = releases.entry(id.clone()).or_insert_with(|| ReleaseInfo {
                        id: id.to_string(),
                        current: false,
                        created_at: if record.created_at.is_empty() {
                            layout::iso(id.time())
                        } else {
                            record.created_at.clone()
                        },
                        files,
                        deployed_by: record.deployed_by.clone(),
                        cutover_version: record.cutover_version.clone(),
                        git: record.git.clone(),
                        hosts: Vec::new(),
                    });
                    info.hosts.push(t.label.clone());
                    if live.as_ref() == Some(&id) {
                        info.current = true;
                    }
                }
                hosts.push(HostReleases {
                    host: t.label.clone(),
                    current: live.map(|l| l.to_string()),
                    releases: survey.releases.iter().map(ReleaseId::to_string).collect(),
                    foreign: survey.foreign.clone(),
                    error: None,
                });
            }
            Err(e) => {
                hosts.push(HostReleases {
                    host: t.label.clone(),
                    current: None,
                    releases: Vec::new(),
                    foreign: Vec::new(),
                    error: Some(format!("{e:#}")),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    let currents: Vec<&Option<String>> = hosts.iter().map(|h| &h.current).collect();
    let in_sync = currents.windows(2).all(|w| w[0] == w[1]);
    let listing = Listing {
        target: fleet.name.clone(),
        in_sync,
        releases: releases.into_values().rev().collect(),
        hosts,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listing).expect("the listing serializes")
        );
    } else {
        print_listing(&listing, fleet, out);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_listing(listing: &Listing, fleet: &Fleet, out: &Output) {
    let single = fleet.is_single();
    let now = layout::now();
    if listing.releases.is_empty() && listing.hosts.iter().all(|h| h.error.is_none()) {
        out.summary(format!("{}: no releases yet", fleet.name));
    }
    for r in &listing.releases {
        let id = ReleaseId::parse(&r.id).expect("listed releases are valid");
        let age = layout::human_age((now - id.time()).num_seconds());
        let files = match r.files {
            Some(1) => "1 file".to_string(),
            Some(n) => format!("{n} files"),
            None => "?".into(),
        };
        let who = if r.deployed_by.is_empty() {
            String::new()
        } else {
            format!("  by {}", r.deployed_by)
        };
        let git = match &r.git {
            Some(g) => format!(
                "  {}{}{}",
                &g.commit[..g.commit.len().min(12)],
                if g.branch.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", g.branch)
                },
                if g.dirty { " dirty" } else { "" }
            ),
            None => String::new(),
        };
        let mark = if single {
            if r.current { "  current" } else { "" }.to_string()
        } else {
            let on: Vec<&str> = listing
                .hosts
                .iter()
                .filter(|h| h.current.as_deref() == Some(r.id.as_str()))
                .map(|h| h.host.as_str())
                .collect();
            // (a host that could not be read is unknown, not missing it)
            let read = listing.hosts.iter().filter(|h| h.error.is_none()).count();
            let missing = read.saturating_sub(r.hosts.len());
            format!(
                "{}{}",
                if on.is_empty() {
                    String::new()
                } else {
                    format!("  current on {}", on.join(", "))
                },
                if missing > 0 {
                    format!(
                        "  (missing on {missing} host{})",
                        if missing == 1 { "" } else { "s" }
                    )
                } else {
                    String::new()
                }
            )
        };
        out.summary(format!(
            "{}  {age:>9} ago  {files:>12}{who}{git}{mark}",
            r.id
        ));
    }
    for h in &listing.hosts {
        let o = out.for_member(fleet.names_hosts(), &h.host);
        for f in &h.foreign {
            o.summary(format!(
                "{:?}: not a cutover release ({}); left alone",
                f.name, f.why
            ));
        }
        if let Some(e) = &h.error {
            o.warn(e);
        }
    }
    if !single && !listing.in_sync {
        let states: Vec<String> = listing
            .hosts
            .iter()
            .map(|h| match (&h.error, &h.current) {
                (Some(_), _) => format!("{} unknown (could not be read)", h.host),
                (None, Some(id)) => format!("{} on {id}", h.host),
                (None, None) => format!("{} on nothing", h.host),
            })
            .collect();
        out.warn(format_args!(
            "the hosts of target {0} are NOT on the same release: {1}; `cutover deploy {0}` or `cutover rollback {0} --to ID` brings them together",
            fleet.name,
            states.join(", "),
        ));
    }
}

/// One host's survey and the record of each of its releases.
async fn read_host(
    target: &Target,
    out: &Output,
) -> Result<(Survey, Vec<(ReleaseId, (Record, Option<usize>))>)> {
    let session = Session::open(target, out.verbose)
        .await
        .with_context(|| target.stage("connect"))?;
    let layout = Layout::new(&target.path);
    let result = async {
        let survey = Survey::read(&session, &layout)
            .await
            .with_context(|| target.stage("survey"))?;
        let records = futures::future::join_all(survey.releases.iter().map(|id| {
            let (session, layout) = (&session, &layout);
            async move {
                let record = match session
                    .read_file(&layout.manifest(id), MANIFEST_LIMIT)
                    .await
                {
                    Ok(Some(bytes)) => std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|t| Manifest::parse(t).ok())
                        .map(|m| (Record::from_meta(&m.meta), Some(m.file_count()))),
                    _ => None,
                };
                (id.clone(), record.unwrap_or((Record::default(), None)))
            }
        }))
        .await;
        Ok((survey, records))
    }
    .await;
    session.close().await;
    result
}

pub async fn unlock(fleet: &Fleet, out: &Output) -> Result<()> {
    let outs: Vec<Output> = fleet
        .hosts
        .iter()
        .map(|t| out.for_member(fleet.names_hosts(), &t.label))
        .collect();
    // Every host at once: one that cannot be reached does not hold up the others.
    let results = futures::future::join_all(
        fleet
            .hosts
            .iter()
            .zip(&outs)
            .map(|(t, o)| unlock_host(t, o)),
    )
    .await;
    let mut failed = None;
    for (r, o) in results.into_iter().zip(&outs) {
        if let Err(e) = r {
            o.warn(format_args!("{e:#}"));
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn unlock_host(target: &Target, out: &Output) -> Result<()> {
    let session = Session::open(target, out.verbose)
        .await
        .with_context(|| target.stage("connect"))?;
    let layout = Layout::new(&target.path);
    let result = async {
        let kind = session
            .path_kind(&layout.lock())
            .await
            .with_context(|| target.stage("unlock"))?;
        if kind == PathKind::Missing {
            out.summary(format!("{}: not locked", target.name));
            return Ok(());
        }
        if let Ok(Some(info)) = lock::read(&session, &layout).await {
            if info.held_by_a_running_cutover_here() {
                return Err(anyhow!(crate::error::with_hint(
                    format!(
                        "{}: the lock {} is held by a deploy that is still running on this machine (pid {}, `{}`): nothing was removed",
                        target.stage("unlock"),
                        layout.lock(),
                        info.pid,
                        info.command
                    ),
                    format!(
                        "wait for it to end (it removes its lock itself), or stop it first (kill {}), then unlock",
                        info.pid
                    )
                )));
            }
        }
        let holder = lock::describe_holder(&session, &layout).await;
        lock::remove(&session, &layout)
            .await
            .map_err(|e| anyhow!("{}: {e:#}", target.stage("unlock")))?;
        out.summary(format!(
            "{}: removed the lock {} ({holder})",
            target.name,
            layout.lock()
        ));
        Ok(())
    }
    .await;
    session.close().await;
    result
}
