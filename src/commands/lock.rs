//! The deploy lock: `.cutover/lock/`, a directory because mkdir is atomic on every file system
//! and over SFTP, with an `info` file saying who holds it. The deploy script releases it; the
//! client releases it itself only when it stops before the script runs.

use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::config::Target;
use crate::layout::{Layout, ReleaseId};
use crate::remote::{Session, SmallFile};

/// A lock this process took.
pub struct Held {
    /// The release the lock was taken for, once known (its staging is ours to remove).
    pub release: Mutex<Option<ReleaseId>>,
}

pub async fn acquire(session: &Session, layout: &Layout, target: &Target) -> Result<Held> {
    let ctx = || format!("target {}, stage lock", target.name);
    // Usually .cutover/ exists: one request. On a new server, create it and try again.
    let taken = match session.create_dir_exclusive(&layout.lock()).await {
        Ok(taken) => taken,
        Err(_) => {
            session
                .create_dir_all(&layout.state())
                .await
                .with_context(ctx)?;
            session
                .create_dir_exclusive(&layout.lock())
                .await
                .with_context(ctx)?
        }
    };
    if !taken {
        let holder = describe_holder(session, layout).await;
        bail!(
            "target {}, stage lock: {} is locked by another deploy ({holder}). If no deploy is running (one was killed), \
             run `cutover unlock {}`",
            target.name,
            layout.root(),
            target.name
        );
    }
    Ok(Held {
        release: Mutex::new(None),
    })
}

/// The lock's `info` file: who holds it, since when, for which release.
pub fn info_file(layout: &Layout, release: &ReleaseId, command: &str) -> SmallFile {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into());
    let info = format!(
        "holder={}@{host}\npid={}\nstarted={}\nrelease={release}\ncommand={command}\n",
        crate::config::local_user_name(),
        std::process::id(),
        now_iso(),
    );
    SmallFile {
        path: layout.lock_info(),
        bytes: info.into_bytes(),
        mode: 0o644,
    }
}

pub async fn release(session: &Session, layout: &Layout) -> Result<()> {
    let _ = session.remove_file(&layout.lock_info()).await;
    session.remove_dir(&layout.lock()).await
}

/// `holder=… started=…`, or what is known when the info file is missing or unreadable.
pub async fn describe_holder(session: &Session, layout: &Layout) -> String {
    match session.read_file(&layout.lock_info(), 64 * 1024).await {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .unwrap_or("?")
                    .to_string()
            };
            let started = field("started");
            let age = age_of(&started)
                .map(|s| format!(", {s} ago"))
                .unwrap_or_default();
            format!(
                "held by {} pid {}, started {started}{age}, release {}",
                field("holder"),
                field("pid"),
                field("release")
            )
        }
        _ => "holder unknown: the lock has no info file".into(),
    }
}

pub fn now_iso() -> String {
    let id = ReleaseId::from_unix(unix_now());
    let s = id.as_str();
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..14]
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// "3 min" for an ISO time written by [`now_iso`].
fn age_of(iso: &str) -> Option<String> {
    let digits: String = iso.chars().filter(|c| c.is_ascii_digit()).collect();
    let then = ReleaseId::parse(&digits)?.unix();
    Some(human_age(unix_now() - then))
}

pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{} s", s.max(0)),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}
