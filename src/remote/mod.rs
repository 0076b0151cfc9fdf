//! Talking to a target: an SSH connection (SFTP for files, one exec for the script) or, for
//! `host = "local"`, this machine's file system and `/bin/sh`.
//!
//! Both kinds offer the same small set of operations, so a deploy runs the same stages, the
//! same plan and the same script whichever it talks to.

pub mod known_hosts;
pub mod local;
mod pattern;
pub mod sftp;
pub mod shell;
pub mod ssh;
pub mod ssh_config;

use anyhow::Result;

use crate::config::{Host, Target};

pub use shell::{Shell, Stderr};

/// A file created for writing whose content follows later, so that its OPEN can travel in an
/// earlier flight of requests than its data.
pub enum OpenFile {
    Ssh { handle: String, path: String },
    Local { path: String, mode: u32 },
}

/// A file opened for reading whose content is read later.
pub enum OpenedRead {
    Ssh {
        handle: String,
        size: u64,
        path: String,
    },
    Local {
        path: String,
    },
}

/// What is at a remote path, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Dir,
    File,
    Symlink,
    Other,
}

/// One entry of a directory listing, as LSTAT sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: PathKind,
    pub size: u64,
    /// Permission bits (0o7777 at most).
    pub mode: u32,
}

/// How a script run to its end went (see [`Session::run_script`]).
#[derive(Debug)]
pub struct ScriptExit {
    /// Exit status; None when the process was killed or the connection dropped.
    pub code: Option<u32>,
    pub stdout: String,
    /// The server refused to run a command at all.
    pub refused: bool,
}

/// Where progress of an upload is reported.
pub trait Progress: Send + Sync {
    fn advance(&self, bytes: u64);
}

/// A connection to a target. Cloned cheaply (an SSH connection is shared): an upload runs on a
/// task of its own while the rest of a deploy goes on over the same connection.
#[derive(Clone)]
pub enum Session {
    Ssh(std::sync::Arc<ssh::SshSession>),
    Local(local::LocalSession),
}

impl Session {
    pub async fn open(target: &Target, verbose: bool) -> Result<Session> {
        match &target.host {
            Host::Local => Ok(Session::Local(local::LocalSession)),
            Host::Ssh { .. } => Ok(Session::Ssh(std::sync::Arc::new(
                ssh::SshSession::connect(target, verbose).await?,
            ))),
        }
    }

    /// The target of the symlink at `path`; None when nothing is there.
    pub async fn read_link(&self, path: &str) -> Result<Option<String>> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.read_link(path)).await,
            Session::Local(s) => s.read_link(path),
        }
    }

    /// Open a file to read it later ([`Session::read_opened`]): one round trip, so the open can
    /// travel before it is known whether the content will be wanted. None when it is missing.
    pub async fn open_read(&self, path: &str) -> Result<Option<OpenedRead>> {
        match self {
            Session::Ssh(s) => Ok(s
                .guard(s.sftp.open_read(path))
                .await?
                .map(|(handle, size)| OpenedRead::Ssh {
                    handle,
                    size,
                    path: path.to_string(),
                })),
            Session::Local(_) => Ok(std::fs::metadata(path).is_ok().then(|| OpenedRead::Local {
                path: path.to_string(),
            })),
        }
    }

    /// The content of a file opened by [`Session::open_read`]; refuses more than `limit` bytes.
    pub async fn read_opened(&self, file: OpenedRead, limit: u64) -> Result<Vec<u8>> {
        match (self, file) {
            (Session::Ssh(s), OpenedRead::Ssh { handle, size, path }) => {
                s.guard(s.sftp.read_opened(handle, &path, size, limit))
                    .await
            }
            (Session::Local(s), OpenedRead::Local { path }) => Ok(s
                .read_file(&path, limit)?
                .ok_or_else(|| anyhow::anyhow!("{path} is gone"))?),
            _ => unreachable!("a file is read by the session that opened it"),
        }
    }

    /// Let go of a file opened by [`Session::open_read`] without reading it.
    pub fn discard_read(&self, file: OpenedRead) {
        if let (Session::Ssh(s), OpenedRead::Ssh { handle, .. }) = (self, file) {
            s.sftp.discard_read(handle);
        }
    }

    /// The file's content when it exists; refuses files larger than `limit` bytes.
    pub async fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.read_file(path, limit)).await,
            Session::Local(s) => s.read_file(path, limit),
        }
    }

    pub async fn path_kind(&self, path: &str) -> Result<PathKind> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.path_kind(path)).await,
            Session::Local(s) => s.path_kind(path),
        }
    }

    /// Remove a tree, never following a symbolic link (one at `path` itself is removed as a
    /// link).
    pub async fn remove_tree(&self, path: &str) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.remove_tree(path)).await,
            Session::Local(s) => s.remove_tree(path),
        }
    }

    /// The entries of a directory with their kinds (a symbolic link is a link), sorted by
    /// name; None when it does not exist.
    pub async fn list_dir(&self, path: &str) -> Result<Option<Vec<DirEntry>>> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.list_dir(path)).await,
            Session::Local(s) => s.list_dir(path),
        }
    }

    /// Create `path` and its missing parents.
    pub async fn create_dir_all(&self, path: &str) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.create_dir_all(path)).await,
            Session::Local(s) => s.create_dir_all(path),
        }
    }

    /// One MKDIR and nothing else (no parents, no check of what is there on failure).
    pub async fn try_create_dir(&self, path: &str) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.try_create_dir(path)).await,
            Session::Local(s) => s.try_create_dir(path),
        }
    }

    /// Create (or truncate) `path` for writing; [`Session::finish_file`] writes and closes it.
    pub async fn create_file(&self, path: &str, mode: u32) -> Result<OpenFile> {
        match self {
            Session::Ssh(s) => Ok(OpenFile::Ssh {
                handle: s.guard(s.sftp.create(path, mode)).await?,
                path: path.to_string(),
            }),
            Session::Local(_) => Ok(OpenFile::Local {
                path: path.to_string(),
                mode,
            }),
        }
    }

    /// Write the whole content of a file from [`Session::create_file`] and close it.
    pub async fn finish_file(&self, file: OpenFile, data: &[u8]) -> Result<()> {
        match (self, file) {
            (Session::Ssh(s), OpenFile::Ssh { handle, path }) => {
                s.guard(s.sftp.finish(handle, &path, data)).await
            }
            (Session::Local(s), OpenFile::Local { path, mode }) => s.write_file(&path, data, mode),
            _ => unreachable!("a file is finished by the session that created it"),
        }
    }

    /// Let go of a file from [`Session::create_file`] that nothing is written into: over SSH
    /// its handle is closed (the empty file stays until staging is removed); locally nothing
    /// was created yet, so nothing is.
    pub async fn discard_file(&self, file: OpenFile) -> Result<()> {
        match (self, file) {
            (Session::Ssh(s), OpenFile::Ssh { handle, path }) => {
                s.guard(s.sftp.finish(handle, &path, b"")).await
            }
            (Session::Local(_), OpenFile::Local { .. }) => Ok(()),
            _ => unreachable!("a file is let go of by the session that created it"),
        }
    }

    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.write_file(path, data, mode)).await,
            Session::Local(s) => s.write_file(path, data, mode),
        }
    }

    pub async fn remove_file(&self, path: &str) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.remove_file(path)).await,
            Session::Local(s) => s.remove_file(path),
        }
    }

    pub async fn remove_dir(&self, path: &str) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.remove_dir(path)).await,
            Session::Local(s) => s.remove_dir(path),
        }
    }

    /// Rename a directory to a name that must not exist yet (how the lock is taken).
    pub async fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        match self {
            Session::Ssh(s) => s.guard(s.sftp.rename(from, to)).await,
            Session::Local(s) => s.rename_dir(from, to),
        }
    }

    /// Create the staging directory `dir` and open `files` (path, mode) in it for writing, in
    /// one flight: the server takes the MKDIR before the OPENs behind it.
    pub async fn open_staging(&self, dir: &str, files: &[(String, u32)]) -> Result<Vec<OpenFile>> {
        match self {
            Session::Ssh(s) => {
                let opened = s.guard(s.open_staging(dir, files)).await?;
                Ok(files
                    .iter()
                    .zip(opened)
                    .map(|((path, _), handle)| OpenFile::Ssh {
                        handle,
                        path: path.clone(),
                    })
                    .collect())
            }
            Session::Local(s) => {
                s.create_dir_all(dir)?;
                Ok(files
                    .iter()
                    .map(|(path, mode)| OpenFile::Local {
                        path: path.clone(),
                        mode: *mode,
                    })
                    .collect())
            }
        }
    }

    /// Upload archive parts side by side: the first into a file opened ahead (see
    /// [`Session::open_staging`]), each other one (remote path, stream of chunks) over SSH on
    /// an SFTP channel of its own, each with up to `max_in_flight` bytes written and not yet
    /// acknowledged. Returns the bytes sent.
    pub async fn upload_archives(
        &self,
        first: (OpenFile, crate::archive::Chunks),
        rest: Vec<(String, crate::archive::Chunks)>,
        max_in_flight: usize,
        progress: &dyn Progress,
    ) -> Result<u64> {
        match self {
            Session::Ssh(s) => {
                s.guard(s.upload_archives(first, rest, max_in_flight, progress))
                    .await
            }
            Session::Local(s) => {
                let (OpenFile::Local { path, .. }, chunks) = first else {
                    unreachable!("a file is written by the session that opened it")
                };
                let mut sent = s.upload_stream(&path, chunks, progress).await?;
                for (path, chunks) in rest {
                    sent += s.upload_stream(&path, chunks, progress).await?;
                }
                Ok(sent)
            }
        }
    }

    /// Start `sh` on the target (over SSH: the session's one exec call), ready to be given a
    /// script; its stderr goes to `stderr`.
    pub async fn open_shell(&self, stderr: Stderr) -> Result<Shell> {
        match self {
            Session::Ssh(s) => s.explain(s.open_shell(stderr).await).await,
            Session::Local(_) => Shell::local(stderr),
        }
    }

    /// Run `script` to its end with no conversation (the check script): its stdout, and
    /// its stderr passed through (or kept back and shown on failure when `quiet`).
    pub async fn run_script(&self, script: &str, quiet: bool) -> Result<ScriptExit> {
        let mut shell = self.open_shell(Stderr::new("", quiet)).await?;
        shell.send_script(script).await?;
        shell.close_input().await;
        let code = shell.wait().await;
        if quiet && code != Some(0) {
            eprint!("{}", shell.kept_stderr());
        }
        Ok(ScriptExit {
            code,
            stdout: shell.stdout.join("\n"),
            refused: shell.refused(),
        })
    }

    /// Up to `n` SFTP channels side by side, for a deploy done with SFTP alone (an SSH target
    /// only: a local one has none).
    pub async fn sftp_channels(&self, n: usize) -> Result<sftp::Channels> {
        match self {
            Session::Ssh(s) => Ok(sftp::Channels::new(s.sftp_channels(n).await)),
            Session::Local(_) => anyhow::bail!("a local target has no SFTP channels"),
        }
    }

    /// Open a second SFTP channel now, for an upload in parts (see
    /// [`ssh::SshSession::open_spare_sftp`]); nothing locally.
    pub async fn open_spare_sftp(&self) {
        if let Session::Ssh(s) = self {
            s.open_spare_sftp().await;
        }
    }

    /// Did the server's SFTP subsystem offer the extension `name`? (Never locally.) An error
    /// when the server's SFTP never started.
    pub async fn sftp_offers(&self, name: &str) -> Result<bool> {
        match self {
            Session::Ssh(s) => {
                s.sftp.ready().await?;
                Ok(s.sftp.offers(name).await)
            }
            Session::Local(_) => Ok(false),
        }
    }

    /// Is the server's SFTP subsystem read-only (see [`sftp::Sftp::read_only`])? Never locally.
    pub async fn sftp_read_only(&self) -> Result<bool> {
        match self {
            Session::Ssh(s) => {
                s.sftp.ready().await?;
                Ok(s.sftp.read_only().await)
            }
            Session::Local(_) => Ok(false),
        }
    }

    /// Run `op`, ending it as soon as the connection is lost, and name a lost connection as the
    /// cause of its error (see [`ssh::SshSession::guard`]).
    pub async fn guard<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match self {
            Session::Ssh(s) => s.guard(op).await,
            Session::Local(_) => op.await,
        }
    }

    /// Why the connection was lost, once it has been (None locally, or while it is up).
    pub async fn lost(&self) -> Option<String> {
        match self {
            Session::Ssh(s) => s.lost_reason().await,
            Session::Local(_) => None,
        }
    }

    /// The user and port this session logged in with (None locally).
    pub fn login(&self) -> Option<(String, u16)> {
        match self {
            Session::Ssh(s) => Some(s.login.clone()),
            Session::Local(_) => None,
        }
    }

    /// `user@host:port`, or `this machine`.
    pub fn describe(&self) -> String {
        match self {
            Session::Ssh(s) => s.description.clone(),
            Session::Local(_) => "this machine".into(),
        }
    }

    pub async fn close(self) {
        if let Session::Ssh(s) = self {
            s.close().await;
        }
    }
}

/// What `nologin` (`/usr/sbin/nologin`, `/sbin/nologin`) says for an account whose login shell
/// it is, in words for an error, when `said` (what a command run over SSH printed) is that.
pub fn no_login_shell(said: &str) -> Option<String> {
    said.contains("This account is currently not available").then(|| {
        format!("has no login shell (nologin: {said:?}): it runs no commands, so the deploy script cannot run")
    })
}

/// The fix for [`no_login_shell`]: a shell for `user`, or SFTP alone (which needs sshd's
/// internal-sftp: a `Subsystem sftp /usr/lib/openssh/sftp-server` is started through the login
/// shell too).
pub fn no_login_shell_fix(user: Option<&str>) -> String {
    format!(
        "give the account a shell (as root: usermod -s /bin/sh {}), or set sftp_only = true to deploy with SFTP requests alone (that needs `Subsystem sftp internal-sftp` in sshd_config: any other sftp subsystem is started through the login shell too)",
        crate::shell::quote(user.unwrap_or("USER"))
    )
}
