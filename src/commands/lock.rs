//! The deploy lock: `.cutover/lock/`, a directory because mkdir is atomic on every file system
//! and over SFTP, with an `info` file saying who holds it. The deploy script releases it; the
//! client releases it itself only when it stops before the script runs.

use anyhow::{bail, Context, Result};

use crate::config::Target;
use crate::layout::{Layout, ReleaseId};
use crate::remote::{Session, SmallFile};

/// A lock this process took, for one release.
pub struct Held {
    pub release: ReleaseId,
}

/// A lock being prepared: `.cutover/lock.new-PID/`, which becomes `.cutover/lock` by one rename
/// once its `info` file is written. So a lock never exists without saying who holds it, and a
/// refused deploy can always name the holder.
pub struct Pending {
    dir: String,
}

/// Create the pending lock directory (and `.cutover/` on a new server).
pub async fn prepare(session: &Session, layout: &Layout, target: &Target) -> Result<Pending> {
    let ctx = || format!("target {}, stage lock", target.name);
    let dir = format!("{}/lock.new-{}", layout.state(), std::process::id());
    // Usually .cutover/ exists: one request. On a new server, create it and try again.
    if session.create_dir_exclusive(&dir).await.is_err() {
        session
            .create_dir_all(&layout.state())
            .await
            .with_context(ctx)?;
        let _ = session.remove_tree(&dir).await; // a leftover of a killed process with our pid
        session.create_dir_exclusive(&dir).await.with_context(ctx)?;
    }
    Ok(Pending { dir })
}

impl Pending {
    /// Write the info, then rename the directory to `.cutover/lock`: the rename fails when a
    /// lock (a directory with its info inside) is already there.
    pub async fn take(
        self,
        session: &Session,
        layout: &Layout,
        target: &Target,
        release: &ReleaseId,
        command: &str,
    ) -> Result<Held> {
        let ctx = || format!("target {}, stage lock", target.name);
        let info = info_file(layout, release, command);
        let written = session
            .write_file(&format!("{}/info", self.dir), &info.bytes, info.mode)
            .await;
        if let Err(e) = written {
            self.discard(session).await;
            return Err(e).with_context(ctx);
        }
        if session.rename_dir(&self.dir, &layout.lock()).await.is_ok() {
            return Ok(Held {
                release: release.clone(),
            });
        }
        self.discard(session).await;
        let holder = describe_holder(session, layout).await;
        bail!(
            "target {}, stage lock: {} is locked by another deploy ({holder}). If no deploy is running (one was killed), \
             run `cutover unlock {}`",
            target.name,
            layout.root(),
            target.name
        );
    }

    /// Remove the pending directory (best effort).
    pub async fn discard(self, session: &Session) {
        let _ = session.remove_tree(&self.dir).await;
    }
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
/// `holder=… started=…`, or what is known when the info file is missing or unreadable.
pub async fn describe_holder(session: &Session, layout: &Layout) -> String {
    // A lock taken a moment ago may not have its info file yet: look a few times.
    for attempt in 0..5 {
        if let Ok(Some(bytes)) = session.read_file(&layout.lock_info(), 64 * 1024).await {
            let text = String::from_utf8_lossy(&bytes);
            if text.contains("holder=") {
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
                return format!(
                    "held by {} pid {}, started {started}{age}, release {}",
                    field("holder"),
                    field("pid"),
                    field("release")
                );
            }
        }
        if attempt < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    }
    "holder unknown: the lock has no info file (a deploy that was killed as it started)".into()
}

/// Does the lock's info file name `release` (so the lock is this deploy's)?
pub async fn held_for(session: &Session, layout: &Layout, release: &ReleaseId) -> bool {
    match session.read_file(&layout.lock_info(), 64 * 1024).await {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes)
            .lines()
            .any(|l| l == format!("release={release}")),
        _ => false,
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
