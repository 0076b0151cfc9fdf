//! The deploy lock: `.cutover/lock/`, a directory because mkdir is atomic on every file system
//! and over SFTP, with an `info` file saying who holds it. The deploy script releases it; the
//! client releases it itself only when it stops before the script runs.

use anyhow::{bail, Context, Result};

use crate::config::Target;
use crate::layout::{Layout, ReleaseId};
use crate::remote::{OpenFile, Session, SmallFile};

/// A lock this process took, for one release.
pub struct Held {
    pub release: ReleaseId,
}

impl Held {
    /// Name another release in the lock's info: the lock was taken under a name chosen before
    /// `releases/` was listed, and the listing showed that name taken (a release in the same
    /// second, or a server clock ahead of ours).
    pub async fn rename(
        &mut self,
        session: &Session,
        layout: &Layout,
        target: &Target,
        release: &ReleaseId,
        command: &str,
    ) -> Result<()> {
        let info = info_file(layout, release, command);
        session
            .write_file(&info.path, &info.bytes, info.mode)
            .await
            .with_context(|| format!("target {}, stage lock", target.name))?;
        self.release = release.clone();
        Ok(())
    }
}

/// A lock being prepared: `.cutover/lock.new-PID-NANOS/` with its `info` file open, which
/// becomes `.cutover/lock` by one rename once the info is written. So a lock never exists
/// without saying who holds it, and a refused deploy can always name the holder.
pub struct Pending {
    dir: String,
    info: OpenFile,
}

/// Create the pending lock directory and open its info file in one flight of requests (with a
/// MKDIR of `.cutover/staging/`, where uploads go, which usually exists already). On a new
/// server, where `.cutover/` is missing, the directories are made first.
pub async fn prepare(session: &Session, layout: &Layout, target: &Target) -> Result<Pending> {
    let ctx = || format!("target {}, stage lock", target.name);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Unique among clients: deploys from two machines can have the same pid.
    let dir = format!("{}/lock.new-{}-{nanos}", layout.state(), std::process::id());
    let info_path = format!("{dir}/info");
    let staging_root = layout.staging_root();
    let (_, made, opened) = tokio::join!(
        session.try_create_dir(&staging_root),
        session.try_create_dir(&dir),
        session.create_file(&info_path, 0o644),
    );
    match (made, opened) {
        (Ok(()), Ok(info)) => return Ok(Pending { dir, info }),
        (Err(_), Ok(info)) => {
            let _ = session.finish_file(info, b"").await;
        }
        _ => {}
    }
    // A new server: once more with a MKDIR for every ancestor, top down, in the same flight
    // ("exists" answers are expected for most of them).
    let mut dirs = crate::layout::ancestors(&staging_root);
    dirs.push(dir.clone());
    let (made, opened) = tokio::join!(
        futures::future::join_all(dirs.iter().map(|d| session.try_create_dir(d))),
        session.create_file(&info_path, 0o644),
    );
    match (made.last(), opened) {
        (Some(Ok(())), Ok(info)) => Ok(Pending { dir, info }),
        (_, opened) => {
            if let Ok(info) = opened {
                let _ = session.finish_file(info, b"").await;
            }
            // Say why, as create_dir_all tells it (a file in the way, no permission, ...).
            session
                .create_dir_all(&staging_root)
                .await
                .with_context(ctx)?;
            session.create_dir_all(&dir).await.with_context(ctx)?;
            let info = session
                .create_file(&info_path, 0o644)
                .await
                .with_context(ctx)?;
            Ok(Pending { dir, info })
        }
    }
}

impl Pending {
    /// Write the info and rename the directory to `.cutover/lock` (which fails when a lock, a
    /// directory with its info inside, is already there): one flight of requests, which the
    /// server carries out in order.
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
        let lock = layout.lock();
        let (written, renamed) = tokio::join!(
            session.finish_file(self.info, &info.bytes),
            session.rename_dir(&self.dir, &lock),
        );
        match (written, renamed) {
            (Ok(()), Ok(())) => {}
            (Err(e), Ok(())) => {
                // The lock is ours but says nothing: give it back.
                let _ = self::release(session, layout).await;
                return Err(e).with_context(ctx);
            }
            (written, Err(_)) => {
                let _ = session.remove_tree(&self.dir).await;
                if let Err(e) = written {
                    return Err(e).with_context(ctx);
                }
                let holder = describe_holder(session, layout).await;
                bail!(
                    "target {}, stage lock: {} is locked by another deploy ({holder}). If no deploy is running (one was killed), \
                     run `cutover unlock {}`",
                    target.name,
                    layout.root(),
                    target.name
                );
            }
        }
        Ok(Held {
            release: release.clone(),
        })
    }

    /// Remove the pending directory (best effort).
    pub async fn discard(self, session: &Session) {
        let _ = session.finish_file(self.info, b"").await;
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
