//! How a deploy ended, per host and for the whole target: the summary lines, the table of a
//! fleet, and the `--json` document (schema in the README, "JSON output").

use serde::Serialize;

use crate::config::Fleet;
use crate::output::{bytes, Output};

/// How a host (or the whole target) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The new release is live (and committed).
    Live,
    /// Nothing changed: no release was built; the live one stays.
    Unchanged,
    /// The deploy failed before the switch: `current` is untouched.
    #[default]
    Failed,
    /// The switch happened and was undone: `current` is as it was.
    Reverted,
    /// Unknown, or split: the host may be on either release (see its error).
    Unknown,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Unchanged => "unchanged",
            Status::Failed => "failed",
            Status::Reverted => "reverted",
            Status::Unknown => "unknown",
        }
    }
}

/// One host's part of a deploy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    pub destination: String,
    /// The release this deploy built (or, unchanged, the live one).
    pub release: Option<String>,
    /// The release that was live before.
    pub previous: Option<String>,
    pub status: Status,
    pub uploaded: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub bytes_sent: u64,
    pub shared_links: u64,
    pub seconds: f64,
    /// Round-trip time of the connection, in milliseconds (none locally): the switch's own,
    /// `go` sent → `cutover-swapped` seen (the rename included); before the switch, the
    /// survey's time divided by its flights of requests.
    pub rtt_ms: Option<f64>,
    pub warnings: Vec<String>,
    /// How many warnings the script counted (shared walk, leftovers, …).
    #[serde(skip)]
    pub script_warnings: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Milliseconds since the command started when `current` was switched (fleets: the spread
    /// of these is the mixed-version window).
    pub switched_at_ms: Option<f64>,
    /// Milliseconds since the command started when `current` was switched back.
    pub reverted_at_ms: Option<f64>,
}

/// The whole deploy.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub release: Option<String>,
    pub previous: Option<String>,
    pub status: Status,
    pub uploaded: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub bytes_sent: u64,
    pub seconds: f64,
    pub warnings: Vec<String>,
    pub hosts: Vec<HostReport>,
    /// Do the lines printed for people name their host? (See `Fleet::names_hosts`.)
    #[serde(skip)]
    pub names_hosts: bool,
}

impl Report {
    pub fn new(fleet: &Fleet, hosts: Vec<HostReport>, status: Status, seconds: f64) -> Report {
        let first = hosts.first();
        let release = first.and_then(|h| h.release.clone());
        let previous = first.and_then(|h| h.previous.clone());
        let sum = |f: fn(&HostReport) -> usize| hosts.iter().map(f).sum();
        let many = hosts.len() > 1;
        Report {
            target: fleet.name.clone(),
            names_hosts: fleet.names_hosts(),
            release,
            previous,
            status,
            uploaded: sum(|h| h.uploaded),
            deleted: sum(|h| h.deleted),
            unchanged: sum(|h| h.unchanged),
            bytes_sent: hosts.iter().map(|h| h.bytes_sent).sum(),
            seconds,
            warnings: hosts
                .iter()
                .flat_map(|h| {
                    h.warnings.iter().map(|w| {
                        if many {
                            format!("[{}] {w}", h.host)
                        } else {
                            w.clone()
                        }
                    })
                })
                .collect(),
            hosts,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// How far apart the hosts switched `current`, in milliseconds.
    pub fn switch_spread_ms(&self) -> Option<f64> {
        let times: Vec<f64> = self.hosts.iter().filter_map(|h| h.switched_at_ms).collect();
        let min = times.iter().cloned().reduce(f64::min)?;
        let max = times.iter().cloned().reduce(f64::max)?;
        Some(max - min)
    }

    /// After a switch that was undone: from the first host's switch to the last host's switch
    /// back, in milliseconds (the time some hosts served the new release and some the old).
    pub fn mixed_window_ms(&self) -> Option<f64> {
        let first = self
            .hosts
            .iter()
            .filter_map(|h| h.switched_at_ms)
            .reduce(f64::min)?;
        let last = self
            .hosts
            .iter()
            .filter_map(|h| h.reverted_at_ms)
            .reduce(f64::max)?;
        Some(last - first)
    }

    /// The table of a fleet: one row per host.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "host".to_string(),
            "release".into(),
            "previous".into(),
            "uploaded".into(),
            "time".into(),
            "result".into(),
            "rtt".into(),
        ]];
        for h in &self.hosts {
            rows.push([
                h.host.clone(),
                h.release.clone().unwrap_or_else(|| "-".into()),
                h.previous.clone().unwrap_or_else(|| "-".into()),
                format!("{} ({})", h.uploaded, bytes(h.bytes_sent)),
                format!("{:.1} s", h.seconds),
                match h.status {
                    // Failed here, or stopped because another host failed.
                    Status::Failed if h.error.is_none() => "called off".to_string(),
                    other => other.word().to_string(),
                },
                h.rtt_ms
                    .map(|r| format!("{r:.0} ms"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// `t: release ID is live: 3 uploaded, 0 deleted, …` — the line scripts and people read.
pub fn live_line(target: &str, h: &HostReport, verb: &str) -> String {
    format!(
        "{target}: release {} {verb}: {} uploaded, {} deleted, {} unchanged, {} sent, {} shared links, {} warnings, {:.1} s",
        h.release.as_deref().unwrap_or("?"),
        h.uploaded,
        h.deleted,
        h.unchanged,
        bytes(h.bytes_sent),
        h.shared_links,
        // every warning printed for this host: the script's count, or the lines seen
        // (survey notes and the source scan's are not the script's)
        h.warnings.len().max(h.script_warnings as usize),
        h.seconds
    )
}

/// Print the end of a deploy for people (the JSON document is printed by the caller).
pub fn print(report: &Report, out: &Output) {
    let single = report.hosts.len() == 1;
    for h in &report.hosts {
        let o = out.for_member(report.names_hosts, &h.host);
        match h.status {
            Status::Live => o.summary(live_line(&report.target, h, "is live")),
            Status::Unchanged => o.summary(format!(
                "{}: nothing changed: release {} stays live",
                report.target,
                h.release.as_deref().unwrap_or("?")
            )),
            _ => {}
        }
    }
    if !single {
        out.summary(format!("\n{}", report.table().trim_end()));
        if let Some(line) = switch_line(report) {
            out.summary(line);
        }
    }
}

/// `20/20 hosts switched within 12 ms`; after a switch that was undone, how it was undone.
pub fn switch_line(report: &Report) -> Option<String> {
    let spread = report.switch_spread_ms()?;
    let count = |s: Status| report.hosts.iter().filter(|h| h.status == s).count();
    let switched = report
        .hosts
        .iter()
        .filter(|h| h.switched_at_ms.is_some())
        .count();
    let mut line = format!(
        "{switched}/{} hosts switched within {spread:.0} ms",
        report.hosts.len()
    );
    if count(Status::Live) < switched {
        line.push_str(&format!(
            ", then {} switched back{}",
            count(Status::Reverted),
            match count(Status::Unknown) {
                0 => String::new(),
                n => format!(" and {n} may not have"),
            }
        ));
        if let Some(window) = report.mixed_window_ms() {
            line.push_str(&format!(
                "; the hosts ran different releases for {window:.0} ms"
            ));
        }
    }
    Some(line)
}
