//! The deploy lock: `.cutover/lock/`, a directory (mkdir and rename of a directory are atomic on
//! every file system and over SFTP) with an `info` file saying who holds it.
//!
//! Everything about the lock lives here: its `info` format (one writer, [`LockInfo::render`],
//! and one reader, [`LockInfo::parse`]; the shell's `take_lock` in `templates/partials/lib.sh.hbs`
//! writes the same keys for a script run by hand), taking it, describing its holder, and giving
//! it back.
//!
//! The lock is taken without a release name: every lock carries a random `token`, and the deploy
//! script goes on only when the lock it finds carries the token of the client that uploaded its
//! release. So the release name can be chosen once every host of a fleet has been surveyed, and a
//! client that reconnects after a dropped connection removes the lock only when it is still its
//! own.
//!
//! ```text
//! holder=deploy@laptop
//! pid=4242
//! started=2026-11-26T12:00:00Z
//! command=cutover deploy
//! token=5f0c…(32 hex digits)
//! ```

use std::os::unix::ffi::OsStrExt;

use anyhow::{anyhow, Context, Result};

use crate::layout::{self, Layout};
use crate::remote::{OpenFile, PathKind, Session};

/// What a lock's `info` file says. Fields missing from the file are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockInfo {
    /// `user@machine`
    pub holder: String,
    pub pid: String,
    /// ISO time, UTC.
    pub started: String,
    pub command: String,
    pub token: String,
}

impl LockInfo {
    /// The lock info for this process, about to run `command`.
    pub fn ours(command: &str) -> LockInfo {
        LockInfo {
            holder: format!("{}@{}", crate::config::local_user_name(), machine_name()),
            pid: std::process::id().to_string(),
            started: layout::iso(layout::now()),
            command: command.to_string(),
            token: new_token(),
        }
    }

    /// Is the holder a cutover that still runs on this machine? (Its deploy is not over: its
    /// lock is not a killed one's.) The pid alone could have been reused: it must still be a
    /// cutover process.
    pub fn held_by_a_running_cutover_here(&self) -> bool {
        let Some((_, machine)) = self.holder.rsplit_once('@') else {
            return false;
        };
        let Ok(pid) = self.pid.parse::<u32>() else {
            return false;
        };
        if machine != machine_name() || pid == std::process::id() {
            return false;
        }
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
            cmd.split(|b| *b == 0)
                .next()
                .and_then(|argv0| {
                    std::path::Path::new(std::ffi::OsStr::from_bytes(argv0)).file_name()
                })
                .is_some_and(|name| name.to_string_lossy().starts_with("cutover"))
        })
    }

    pub fn render(&self) -> String {
        format!(
            "holder={}\npid={}\nstarted={}\ncommand={}\ntoken={}\n",
            one_line(&self.holder),
            one_line(&self.pid),
            one_line(&self.started),
            one_line(&self.command),
            one_line(&self.token)
        )
    }

    /// Read an info file. Unknown keys and malformed lines are skipped: the file is on the
    /// server and may have been written by anything.
    pub fn parse(text: &str) -> LockInfo {
        let mut info = LockInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.chars().take(200).collect::<String>();
            match key {
                "holder" => info.holder = value,
                "pid" => info.pid = value,
                "started" => info.started = value,
                "command" => info.command = value,
                "token" => info.token = value,
                _ => {}
            }
        }
        info
    }

    /// `held by deploy@laptop pid 4242 (cutover deploy), started 2026-…Z, 3 min ago`.
    pub fn describe(&self) -> String {
        let or = |s: &str| {
            if s.is_empty() {
                "?".to_string()
            } else {
                s.to_string()
            }
        };
        let age = layout::parse_iso(&self.started)
            .map(|t| {
                format!(
                    ", {} ago",
                    layout::human_age((layout::now() - t).num_seconds())
                )
            })
            .unwrap_or_default();
        format!(
            "held by {} pid {} ({}), started {}{age}",
            or(&self.holder),
            or(&self.pid),
            or(&self.command),
            or(&self.started)
        )
    }
}

/// Control characters would break the line format (and could forge a `token=` line).
fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// 128 random bits as hex: what makes a lock this client's own.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness source: time and pid still tell two clients apart.
        let nanos = layout::now().timestamp_nanos_opt().unwrap_or(0) as u128;
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lock is held by someone else.
#[derive(Debug, thiserror::Error)]
#[error("{path} is locked by another deploy ({holder})")]
pub struct LockHeld {
    pub path: String,
    /// What the lock's info file says, in words.
    pub holder: String,
    /// The holder's token (empty when unknown): a fleet whose two entries are one deploy
    /// path finds its own lock here.
    pub token: String,
}

/// A lock this process holds on one host. Dropping it does nothing: giving it back needs the
/// connection, so it is done explicitly ([`HeldLock::release`]) or by the deploy script.
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub info: LockInfo,
}

impl HeldLock {
    pub fn token(&self) -> &str {
        &self.info.token
    }

    /// Give the lock back: remove its info file and the directory.
    pub async fn release(&self, session: &Session, layout: &Layout) -> Result<()> {
        // It holds exactly the info file we wrote: REMOVE and RMDIR in one flight. Anything
        // else in it (someone's file) makes the RMDIR fail, and the careful walk takes over.
        let (info, dir) = (layout.lock_info(), layout.lock());
        let (_, removed) = tokio::join!(session.remove_file(&info), session.remove_dir(&dir));
        match removed {
            Ok(()) => Ok(()),
            Err(_) => remove(session, layout).await,
        }
    }

    /// Give the lock back only if it still carries our token (after a reconnect: someone may
    /// have run `cutover unlock` and started another deploy meanwhile).
    pub async fn release_if_ours(&self, session: &Session, layout: &Layout) -> Result<bool> {
        match read(session, layout).await? {
            Some(info) if info.token == self.info.token => {
                remove(session, layout).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Take the lock of `layout` for `command`, in two flights of requests:
///
/// ```text
/// flight 1: mkdir .cutover/lock.new-MACHINE-PID-NANOS + open its info (+ mkdir staging)
/// flight 2: write the info + close, rename lock.new-… → lock
/// ```
///
/// The lock directory never exists without its info, so a refused deploy can always name the
/// holder. On a new server, where `.cutover/` is missing, the directories are made first.
pub async fn acquire(session: &Session, layout: &Layout, command: &str) -> Result<HeldLock> {
    prepare(session, layout, command)
        .await?
        .take(session, layout)
        .await
}

/// A lock half taken: its directory made under a name of its own, its info file open. Flight
/// 1 of [`acquire`]; [`Pending::take`] is flight 2, and [`Pending::abandon`] takes it back in
/// one flight instead (a deploy that turned out to change nothing).
pub struct Pending {
    info: LockInfo,
    /// `.cutover/lock.new-MACHINE-PID-NANOS`
    dir: String,
    file: OpenFile,
}

pub async fn prepare(session: &Session, layout: &Layout, command: &str) -> Result<Pending> {
    let info = LockInfo::ours(command);
    let nanos = layout::now().timestamp_subsec_nanos();
    // Unique among clients (deploys from two machines can have the same pid), and telling the
    // deploy script on the same machine whether its maker still runs: a killed client's
    // pending lock is removed as soon as its process is gone, not a day later.
    let machine: String = machine_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = format!(
        "{}/lock.new-{machine}-{}-{nanos}",
        layout.state(),
        std::process::id()
    );
    let info_path = format!("{dir}/info");
    let file = open_pending(session, layout, &dir, &info_path).await?;
    Ok(Pending { info, dir, file })
}

impl Pending {
    /// Write the info and rename the directory to `.cutover/lock`: ours, or refused with who
    /// holds it.
    pub async fn take(self, session: &Session, layout: &Layout) -> Result<HeldLock> {
        let Pending { info, dir, file } = self;
        let lock = layout.lock();
        let text = info.render();
        let (written, renamed) = tokio::join!(
            session.finish_file(file, text.as_bytes()),
            session.rename_dir(&dir, &lock),
        );
        match (written, renamed) {
            (Ok(()), Ok(())) => Ok(HeldLock { info }),
            (Err(e), Ok(())) => {
                // The lock is ours but says nothing: give it back.
                let _ = remove(session, layout).await;
                Err(e).context("cannot write the lock's info file")
            }
            (written, Err(_)) => {
                let _ = session.remove_tree(&dir).await;
                written.context("cannot write the lock's info file")?;
                let (holder, info) =
                    tokio::join!(describe_holder(session, layout), read(session, layout));
                let token = info.ok().flatten().map(|i| i.token).unwrap_or_default();
                Err(LockHeld {
                    path: lock,
                    holder,
                    token,
                }
                .into())
            }
        }
    }

    /// Remove it again, never having held the lock: close the info file, remove it and the
    /// directory, in one flight.
    pub async fn abandon(self, session: &Session) -> Result<()> {
        let info_path = format!("{}/info", self.dir);
        let (_, _, removed) = tokio::join!(
            session.discard_file(self.file),
            session.remove_file(&info_path),
            session.remove_dir(&self.dir),
        );
        match removed {
            Ok(()) => Ok(()),
            Err(_) => session.remove_tree(&self.dir).await,
        }
    }
}

async fn open_pending(
    session: &Session,
    layout: &Layout,
    pending: &str,
    info_path: &str,
) -> Result<OpenFile> {
    let staging_root = layout.staging_root();
    let (_, made, opened) = tokio::join!(
        session.try_create_dir(&staging_root),
        session.try_create_dir(pending),
        session.create_file(info_path, 0o644),
    );
    match (made, opened) {
        (Ok(()), Ok(info)) => return Ok(info),
        (Err(_), Ok(info)) => {
            let _ = session.finish_file(info, b"").await;
        }
        _ => {}
    }
    // A new server: once more with a MKDIR for every ancestor, top down, in the same flight
    // ("exists" answers are expected for most of them).
    let mut dirs = layout::ancestors(&staging_root);
    dirs.push(pending.to_string());
    let (made, opened) = tokio::join!(
        futures::future::join_all(dirs.iter().map(|d| session.try_create_dir(d))),
        session.create_file(info_path, 0o644),
    );
    match (made.last(), opened) {
        (Some(Ok(())), Ok(info)) => Ok(info),
        (_, opened) => {
            if let Ok(info) = opened {
                let _ = session.finish_file(info, b"").await;
            }
            // Say why, as create_dir_all tells it (a file in the way, no permission, ...).
            session.create_dir_all(&staging_root).await?;
            session.create_dir_all(pending).await?;
            session.create_file(info_path, 0o644).await
        }
    }
}

/// The lock's info, when there is a lock with a readable info file. A lock or info that is a
/// symbolic link is not read (its target could be any file): it reads as an unknown holder.
pub async fn read(session: &Session, layout: &Layout) -> Result<Option<LockInfo>> {
    let (lock_path, info_path) = (layout.lock(), layout.lock_info());
    let (lock_kind, info_kind) =
        tokio::join!(session.path_kind(&lock_path), session.path_kind(&info_path));
    if lock_kind? != PathKind::Dir || info_kind? != PathKind::File {
        return Ok(None);
    }
    Ok(session
        .read_file(&layout.lock_info(), 64 * 1024)
        .await?
        .map(|bytes| LockInfo::parse(&String::from_utf8_lossy(&bytes))))
}

/// `held by …`, or what is known when the info file is missing or unreadable.
pub async fn describe_holder(session: &Session, layout: &Layout) -> String {
    // A lock taken a moment ago by a script run by hand may not have its info file yet: look a
    // few times.
    for attempt in 0..5 {
        if let Ok(Some(info)) = read(session, layout).await {
            if !info.holder.is_empty() {
                return info.describe();
            }
        }
        if attempt < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    }
    match session.path_kind(&layout.lock()).await {
        Ok(PathKind::Dir) => {
            "holder unknown: the lock has no info file (a deploy that was killed as it started)"
                .into()
        }
        Ok(PathKind::Missing) => "it was released a moment ago".into(),
        Ok(_) => "holder unknown: .cutover/lock is not a directory (not made by cutover)".into(),
        Err(e) => format!("holder unknown: {e:#}"),
    }
}

/// Remove the lock, whoever holds it (`cutover unlock`, or our own). A lock that is a symbolic
/// link is removed as a link: its target is never touched.
pub async fn remove(session: &Session, layout: &Layout) -> Result<()> {
    session
        .remove_tree(&layout.lock())
        .await
        .map_err(|e| anyhow!("cannot remove the lock {}: {e:#}", layout.lock()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_and_ignores_what_it_does_not_know() {
        let info = LockInfo::ours("cutover deploy");
        assert_eq!(info.token.len(), 32);
        assert_eq!(LockInfo::parse(&info.render()), info);
        let odd = LockInfo::parse("junk\nholder=a@b\nx=y\npid=1\n");
        assert_eq!(odd.holder, "a@b");
        assert_eq!(odd.token, "");
    }

    #[test]
    fn a_newline_in_a_field_cannot_forge_a_token() {
        let mut info = LockInfo::ours("cutover deploy\ntoken=forged");
        info.token = "real".into();
        assert_eq!(LockInfo::parse(&info.render()).token, "real");
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(
            LockInfo::ours("x").token,
            LockInfo::ours("x").token,
            "a token is what tells two clients' locks apart"
        );
    }

    #[test]
    fn the_holder_is_described_in_words() {
        let info = LockInfo::parse(
            "holder=alice@laptop\npid=4242\nstarted=2026-01-02T03:04:05Z\ncommand=cutover deploy\n",
        );
        let d = info.describe();
        assert!(
            d.starts_with(
                "held by alice@laptop pid 4242 (cutover deploy), started 2026-01-02T03:04:05Z, "
            ),
            "{d}"
        );
        assert!(d.ends_with("ago"), "{d}");
    }
}
