//! A connected, logged-in SSH session: the SFTP channels for files, the one exec call for the
//! script, and the wrapper that names a dropped connection as such.
//!
//! Channels are opened ahead of need (the exec channel alongside the first SFTP one, a spare
//! SFTP channel during the survey when the source is large enough to be uploaded in parts, `sh`
//! started while the plan is still being made) because every open is a round trip, and sshd
//! starts a session slowly. Every remote operation goes through
//! [`SshSession::guard`] / [`SshSession::explain`], so an error caused by a lost connection
//! says so instead of reporting whatever request happened to be waiting.

use std::time::Duration;

use anyhow::{Context, Result};
use russh::client::{self, Handle};
use tokio::sync::watch;

use super::connect::{Client, Handshake};
use crate::config::Target;
use crate::remote::sftp::Sftp;

pub struct SshSession {
    pub(super) handle: Handle<Client>,
    /// The jump hosts' connections, which carry this one: kept open as long as it is.
    pub(super) _jumps: Vec<Handle<Client>>,
    pub(super) link: Link,
    pub sftp: Sftp,
    /// A session channel opened together with the SFTP one, so the exec call costs no round
    /// trip for opening its channel. Taken by the first exec.
    pub(super) exec_channel: tokio::sync::Mutex<Option<russh::Channel<client::Msg>>>,
    /// A second SFTP channel, opened while the survey travels when the source is large
    /// enough to be uploaded in parts, for the second part: it can start at once instead of
    /// two round trips later.
    pub(super) spare_sftp: tokio::sync::Mutex<Option<Sftp>>,
    pub description: String,
    /// Who logged in, on which port: what cutover.toml and `~/.ssh/config` resolved to.
    pub login: (String, u16),
}

/// How long an error waits for the session task to report a dropped connection.
const LOST_REASON_WAIT: Duration = Duration::from_millis(100);

/// News of the connection's end, from the russh handler to whoever is waiting on the session:
/// `Some(reason)` once russh reported why, and the channel closed once the session task is over
/// (the handler, holding the sender, is dropped with it; russh skips `disconnected` on some
/// paths, e.g. when shutting down the socket fails, but never skips the drop).
#[derive(Clone)]
pub(super) struct Link(watch::Receiver<Option<String>>);

/// The handler's end of a [`Link`].
pub(super) struct LinkSender(watch::Sender<Option<String>>);

impl Link {
    pub(super) fn new() -> (LinkSender, Link) {
        let (tx, rx) = watch::channel(None);
        (LinkSender(tx), Link(rx))
    }

    /// Returns once the connection has ended.
    async fn closed(&self) {
        let mut rx = self.0.clone();
        // Err: the sender is gone, so the session task has ended; either way it is over.
        let _ = rx.wait_for(Option::is_some).await;
    }

    fn is_closed(&self) -> bool {
        self.0.borrow().is_some() || self.0.has_changed().is_err()
    }

    fn reason(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

impl LinkSender {
    /// Records why the connection ended; the first reason wins.
    pub(super) fn lost(&self, why: String) {
        self.0.send_if_modified(|reason| {
            if reason.is_some() {
                return false;
            }
            *reason = Some(why);
            true
        });
    }
}

impl SshSession {
    pub async fn connect(target: &Target, verbose: bool) -> Result<SshSession> {
        let mut handshake = Handshake::start(target).await?;
        let method = handshake.authenticate(target).await?;
        if verbose {
            let via = if handshake.via.is_empty() {
                String::new()
            } else {
                format!(" {}", handshake.via)
            };
            eprintln!("cutover: connected to {}{via} ({method})", handshake.name);
        }
        handshake.into_session().await
    }

    /// Start `sh` in the session's one exec call, ready to be given a script (see
    /// [`crate::remote::shell`]). With no operands a POSIX shell reads its commands from stdin
    /// (`-s` is implied; posh even refuses it spelled out). sshd opens a session channel's
    /// window only once its command has started: a script sent earlier waits in the channel.
    pub async fn open_shell(&self, stderr: crate::remote::Stderr) -> Result<crate::remote::Shell> {
        let channel = self.take_exec_channel().await?;
        crate::remote::Shell::over_ssh(channel, stderr).await
    }

    /// The session channel opened at connect, or a new one.
    async fn take_exec_channel(&self) -> Result<russh::Channel<client::Msg>> {
        let opened = self.exec_channel.lock().await.take();
        match opened {
            Some(c) => Ok(c),
            None => self
                .handle
                .channel_open_session()
                .await
                .context(crate::error::with_hint(
                    "cannot open an SSH channel for the script",
                    "a deploy needs two sessions on one connection (SFTP and the script): the server \
                     may allow only one (MaxSessions 1 in sshd_config); raise it, or set sftp_only = true",
                )),
        }
    }

    /// MKDIR of staging and the OPENs of `files` in it, in one flight; the handles in order.
    pub async fn open_staging(&self, dir: &str, files: &[(String, u32)]) -> Result<Vec<String>> {
        let (made, opened) = tokio::join!(
            self.sftp.try_create_dir(dir),
            futures::future::join_all(
                files
                    .iter()
                    .map(|(path, mode)| self.sftp.create(path, *mode))
            )
        );
        let opened: Result<Vec<String>> = opened.into_iter().collect();
        match (made, opened) {
            (_, Ok(handles)) => Ok(handles),
            (Ok(()), Err(e)) => Err(e),
            // The OPENs failed behind a failed MKDIR: create_dir_all says why (a file in the
            // way, no permission); if it manages after all, open again.
            (Err(_), Err(_)) => {
                self.sftp.create_dir_all(dir).await?;
                futures::future::try_join_all(
                    files
                        .iter()
                        .map(|(path, mode)| self.sftp.create(path, *mode)),
                )
                .await
            }
        }
    }

    /// Upload archive parts side by side (see [`crate::remote::Session::upload_archives`]): the first
    /// over the session's SFTP channel, each other part over an SFTP channel of its own (one
    /// channel's window caps its throughput). Each part has up to `max_in_flight` bytes in
    /// flight.
    pub async fn upload_archives(
        &self,
        first: (crate::remote::OpenFile, crate::archive::Chunks),
        rest: Vec<(String, crate::archive::Chunks)>,
        max_in_flight: usize,
        progress: &dyn crate::remote::Progress,
    ) -> Result<u64> {
        let (crate::remote::OpenFile::Ssh { handle, path }, chunks) = first else {
            unreachable!("a file is written by the session that opened it")
        };
        // Each further part starts as soon as its channel is ready: the spare at once.
        let mut spare = self.spare_sftp.lock().await.take();
        let uploads = rest.into_iter().map(|(path, chunks)| {
            let ready = spare.take();
            async move {
                let sftp = match ready {
                    Some(sftp) => sftp,
                    None => {
                        let channel = self
                            .handle
                            .channel_open_session()
                            .await
                            .context("cannot open another SSH channel for SFTP")?;
                        Sftp::start(channel).await?
                    }
                };
                sftp.upload_stream(&path, chunks, max_in_flight, progress)
                    .await
            }
        });
        let others = async {
            let sent = futures::future::try_join_all(uploads).await?;
            Ok::<u64, anyhow::Error>(sent.into_iter().sum())
        };
        let (first, others) = tokio::join!(
            self.sftp
                .stream_into(handle, &path, chunks, max_in_flight, progress),
            others
        );
        Ok(first? + others?)
    }

    /// Up to `n` SFTP channels to use side by side (see [`crate::remote::sftp::Channels`]): the
    /// session's own, the spare, the exec channel opened at connect (an SFTP-only deploy runs no
    /// command, so it carries the SFTP subsystem instead), then new ones. A channel the server
    /// refuses (sshd's MaxSessions) is done without.
    /// Open the spare SFTP channel, unless it is open already. Best effort: an upload opens
    /// the channels it still lacks itself.
    pub async fn open_spare_sftp(&self) {
        let mut spare = self.spare_sftp.lock().await;
        if spare.is_none() {
            if let Ok(channel) = self.handle.channel_open_session().await {
                *spare = Sftp::start(channel).await.ok();
            }
        }
    }

    pub async fn sftp_channels(&self, n: usize) -> Vec<Sftp> {
        let mut all = vec![self.sftp.clone()];
        if n > 1 {
            if let Some(spare) = self.spare_sftp.lock().await.take() {
                all.push(spare);
            }
        }
        let mut exec = self.exec_channel.lock().await.take();
        let wanted = n.saturating_sub(all.len());
        let opened = futures::future::join_all((0..wanted).map(|_| {
            let ready = exec.take();
            async move {
                let channel = match ready {
                    Some(c) => c,
                    None => self.handle.channel_open_session().await.ok()?,
                };
                Sftp::start(channel).await.ok()
            }
        }))
        .await;
        all.extend(opened.into_iter().flatten());
        all
    }

    /// Runs a remote operation, giving up as soon as the connection is gone: russh-sftp would
    /// otherwise wait out its request timeout for answers that can no longer come.
    pub async fn guard<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        // Also as soon as the SFTP session is known never to have started: a request made
        // after its reader stopped (a stream spoiled by a login shell's greeting) is answered
        // by no one, not even with an error.
        let never_started = async {
            match self.sftp.ready().await {
                Err(why) => why,
                Ok(()) => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = op => result,
            () = self.connection_closed() => Err(anyhow::anyhow!("no answer from the server")),
            why = never_started => Err(why),
        };
        self.explain(result).await
    }

    async fn connection_closed(&self) {
        self.link.closed().await;
    }

    /// Why the connection ended, once it has: None while it is open (or when russh said nothing).
    pub async fn lost_reason(&self) -> Option<String> {
        // A channel sees a dropped connection a moment before the session task does, and the
        // reason comes from the session task: give it that moment, no more.
        let _ = tokio::time::timeout(LOST_REASON_WAIT, self.link.closed()).await;
        self.link.reason()
    }

    /// `result`, with "the SSH connection to X was lost" added to an error when that is why it
    /// failed, so every stage names a dropped connection as such.
    pub async fn explain<T>(&self, result: Result<T>) -> Result<T> {
        let Err(e) = result else { return result };
        // The server answered (no such file, permission denied, ...): the connection is fine,
        // and an error such as "not there yet" must cost no waiting.
        let answered = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<russh_sftp::client::error::Error>(),
                Some(russh_sftp::client::error::Error::Status(_))
            )
        });
        if answered {
            return Err(e);
        }
        // A server that refuses the SFTP subsystem closes the channel: the requests sent
        // behind INIT fail without a reason of their own, and INIT's is the one to tell.
        if let Ok(Err(refused)) = tokio::time::timeout(LOST_REASON_WAIT, self.sftp.ready()).await {
            return Err(refused);
        }
        let lost = self.lost_reason().await;
        if !self.handle.is_closed() && !self.link.is_closed() && lost.is_none() {
            return Err(e);
        }
        let why = lost.map(|w| format!(" ({w})")).unwrap_or_default();
        Err(e.context(format!(
            "the SSH connection to {} was lost{why}",
            self.description
        )))
    }

    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn soon<F: std::future::Future>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_secs(5), f).await.ok()
    }

    #[tokio::test]
    async fn a_reported_reason_wakes_the_waiters_and_the_first_one_stays() {
        let (sender, link) = Link::new();
        assert!(!link.is_closed());
        let waiter = tokio::spawn({
            let link = link.clone();
            async move { link.closed().await }
        });
        tokio::task::yield_now().await;
        sender.lost("Keepalive timeout".into());
        sender.lost("a later reason".into());
        assert!(soon(waiter).await.is_some(), "the waiter was not woken");
        assert!(link.is_closed());
        assert_eq!(link.reason().as_deref(), Some("Keepalive timeout"));
        // a waiter that comes after the news returns at once
        assert!(soon(link.closed()).await.is_some());
    }

    #[tokio::test]
    async fn the_handler_going_away_wakes_the_waiters_without_a_reason() {
        let (sender, link) = Link::new();
        let waiter = tokio::spawn({
            let link = link.clone();
            async move { link.closed().await }
        });
        tokio::task::yield_now().await;
        drop(sender);
        assert!(soon(waiter).await.is_some(), "the waiter was not woken");
        assert!(link.is_closed());
        assert_eq!(link.reason(), None);
    }
}
