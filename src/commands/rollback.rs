//! `cutover rollback`: point `current` at an earlier finished release, with the same atomic swap
//! as a deploy, in one exec call per host (an SFTP-only host: SYMLINK and posix-rename under the
//! same lock, see `deploy::sftp`). A fleet goes through the same barrier as a deploy:
//! every host locked and ready first, then all switched, then committed — or all switched back.
//! Nothing is deleted: the release rolled back from stays until it ages out (prune never
//! removes releases newer than the one `current` points to).

use anyhow::{anyhow, Result};

use crate::config::Fleet;
use crate::deploy::host::HostDeploy;
use crate::deploy::report::{HostReport, Report, Status};
use crate::deploy::{first_failure, note_failures};
use crate::error::usage;
use crate::layout::ReleaseId;
use crate::output::Output;

pub async fn run(fleet: &Fleet, to: Option<&str>, json: bool, out: &Output) -> Result<()> {
    let wanted = match to {
        Some(t) => Some(ReleaseId::parse(t).ok_or_else(|| usage(format!("--to {t:?}: a release name is a UTC time in 14 digits, YYYYMMDDhhmmss, e.g. 20261126120000 (see cutover releases)")))?),
        None => None,
    };
    let started = std::time::Instant::now();
    let single = fleet.is_single();
    let mut hosts = Vec::new();
    let mut unreached = Vec::new();
    let result = rollback(fleet, wanted, single, out, &mut hosts, &mut unreached).await;
    let status = match &result {
        Ok(s) => *s,
        Err(_) => crate::deploy::overall(&hosts),
    };
    // In the fleet's order (the hosts that moved were switched apart from the others), also
    // the hosts never reached.
    let reports = fleet
        .hosts
        .iter()
        .filter_map(|t| {
            hosts
                .iter()
                .find(|h| h.target.label == t.label)
                .map(|h| h.report.clone())
                .or_else(|| unreached.iter().find(|r| r.host == t.label).cloned())
        })
        .collect();
    for h in hosts {
        h.close().await;
    }
    let report = Report::new(fleet, reports, status, started.elapsed().as_secs_f64());
    if json {
        println!("{}", report.to_json());
    } else {
        print(&report, result.is_ok(), single, out);
    }
    result.map(|_| ())
}

/// A line per host once the rollback is done; for a fleet, the table and how the hosts
/// switched, also when it failed.
fn print(report: &Report, done: bool, single: bool, out: &Output) {
    if done {
        for h in &report.hosts {
            let o = out.for_member(report.names_hosts, &h.host);
            match h.status {
                Status::Live => o.summary(format!(
                    "{}: rolled back: current -> releases/{} (was {})",
                    report.target,
                    h.release.as_deref().unwrap_or("?"),
                    h.previous.as_deref().unwrap_or("?")
                )),
                _ => o.summary(format!(
                    "{}: release {} is already current",
                    report.target,
                    h.release.as_deref().unwrap_or("?")
                )),
            }
        }
    }
    if !single && !report.hosts.is_empty() {
        out.summary(format!("\n{}", report.table().trim_end()));
        if let Some(line) = crate::deploy::report::switch_line(report) {
            out.summary(line);
        }
    }
}

async fn rollback(
    fleet: &Fleet,
    wanted: Option<ReleaseId>,
    single: bool,
    out: &Output,
    hosts: &mut Vec<HostDeploy>,
    unreached: &mut Vec<HostReport>,
) -> Result<Status> {
    let connected =
        crate::deploy::connect_all(fleet, |label| out.for_member(fleet.names_hosts(), label)).await;
    let failures = crate::deploy::sort_connected(fleet, connected, hosts, unreached);
    let nothing = "rollback not done; current is untouched everywhere";
    if !failures.is_empty() {
        return Err(first_failure(failures, fleet, nothing));
    }
    let surveyed = futures::future::join_all(hosts.iter_mut().map(|h| h.survey(true))).await;
    let (_, failures) = note_failures(hosts, surveyed);
    if !failures.is_empty() {
        return Err(first_failure(failures, fleet, nothing));
    }
    // The release to go to: the one asked for, or the newest release older than the live one
    // that every host has.
    let mut lives = Vec::new();
    for h in hosts.iter() {
        let survey = h.survey.as_ref().expect("surveyed");
        let live = survey
            .current
            .release()
            .filter(|id| survey.releases.contains(id))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "{}: {} does not point to a cutover release; nothing to roll back from",
                    h.target.stage("rollback"),
                    h.layout.current()
                )
            })?;
        lives.push(live);
    }
    let newest_live = lives.iter().max().cloned().expect("at least one host");
    let to = match wanted {
        Some(id) => {
            // Every host that lacks it is named (and marked failed), not just the first.
            let mut lacking = Vec::new();
            for h in hosts.iter_mut() {
                let survey = h.survey.as_ref().expect("surveyed");
                if survey.releases.contains(&id) {
                    continue;
                }
                let e = match survey.foreign.iter().find(|f| f.name == id.as_str()) {
                    Some(f) => anyhow!(
                        "{}: {}/{id} is not a release cutover can roll back to ({}): a rollback only goes to releases with a manifest (see cutover releases {})",
                        h.target.stage("rollback"),
                        h.layout.releases(),
                        f.why,
                        fleet.name
                    ),
                    None => anyhow!(
                        "{}: there is no release {id} in {} (see cutover releases {})",
                        h.target.stage("rollback"),
                        h.layout.releases(),
                        fleet.name
                    ),
                };
                h.failed(&e);
                lacking.push(e);
            }
            if !lacking.is_empty() {
                return Err(first_failure(lacking, fleet, nothing));
            }
            id
        }
        None => {
            let common = hosts
                .iter()
                .map(|h| h.survey.as_ref().expect("surveyed").releases.clone())
                .reduce(|a, b| a.into_iter().filter(|r| b.contains(r)).collect())
                .unwrap_or_default();
            common
                .into_iter()
                .filter(|r| *r < newest_live)
                .max()
                .ok_or_else(|| {
                    if single {
                        anyhow!(
                            "{}: release {newest_live} is the oldest one kept; there is no earlier release to roll back to",
                            fleet.stage("rollback")
                        )
                    } else {
                        anyhow!(
                            "{}: no release older than {newest_live} is on every host (see cutover releases {}: it lists which host has which); roll back one host with --host, or to a release every host has with --to",
                            fleet.stage("rollback"),
                            fleet.name
                        )
                    }
                })?
        }
    };
    let moving: Vec<usize> = (0..hosts.len()).filter(|&i| lives[i] != to).collect();
    for (i, h) in hosts.iter_mut().enumerate() {
        h.report.release = Some(to.to_string());
        h.report.previous = Some(lives[i].to_string());
        if lives[i] == to {
            h.report.status = Status::Unchanged;
        }
    }
    if moving.is_empty() {
        return Ok(Status::Unchanged);
    }
    let pipelined = moving.len() == 1 && single;
    let prepared = futures::future::join_all(
        hosts
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| moving.contains(i))
            .map(|(i, h)| {
                let from = lives[i].clone();
                let to = to.clone();
                async move {
                    let r = h.prepare_rollback(&from, &to, pipelined).await;
                    if let Err(e) = &r {
                        h.failed(e);
                    }
                    r
                }
            }),
    )
    .await;
    let failures: Vec<anyhow::Error> = prepared.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failures.into_iter().next() {
        futures::future::join_all(hosts.iter_mut().map(|h| h.call_off())).await;
        return Err(first.context(format!(
            "target {}: rollback not done; current is untouched everywhere",
            fleet.name
        )));
    }
    let mut movers: Vec<HostDeploy> = Vec::new();
    let mut stay: Vec<HostDeploy> = Vec::new();
    for (i, h) in std::mem::take(hosts).into_iter().enumerate() {
        if moving.contains(&i) {
            movers.push(h);
        } else {
            stay.push(h);
        }
    }
    let result = crate::deploy::switch(
        &mut movers,
        fleet,
        crate::deploy::Purpose::Rollback,
        single,
        out,
    )
    .await;
    hosts.extend(movers);
    hosts.extend(stay);
    result
}
