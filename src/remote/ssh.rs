//! One SSH connection per command: the route from `~/.ssh/config` (jump hosts included), each
//! host key verified before anything is sent to that host, public-key authentication, an SFTP
//! channel for files and one exec channel for the script.
//!
//! Jump hosts (`ProxyJump`) are reached in order: a TCP connection to the first, then for each
//! next host a `direct-tcpip` channel on the previous one, over which a new SSH session runs end
//! to end, so every hop's host key is checked against known_hosts exactly like the target's.
//!
//! A connection that drops later is reported as lost (with the reason when russh saw one) by
//! [`SshSession::explain`], which the session wraps around every remote operation.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use russh::client::{self, DisconnectReason, Handle};
use russh::keys::{ssh_key, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncWrite};

use super::known_hosts::{self, HostKeyQuery, Verdict};
use super::sftp::Sftp;
use super::ssh_auth;
use super::ssh_config::{self, Endpoint};
use super::ScriptExit;
use crate::config::{Host, HostKeyChecking, Target};

/// System-wide known_hosts files, read after the user's (as `ssh` does).
const GLOBAL_KNOWN_HOSTS: [&str; 2] = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

pub struct SshSession {
    handle: Handle<Client>,
    /// The jump hosts' connections, which carry this one: kept open as long as it is.
    _jumps: Vec<Handle<Client>>,
    lost: Lost,
    pub sftp: Sftp,
    /// A session channel opened together with the SFTP one, so the exec call costs no round
    /// trip for opening its channel. Taken by the first exec.
    exec_channel: tokio::sync::Mutex<Option<russh::Channel<client::Msg>>>,
    /// The exec call started ahead of time (`sh`, waiting for its input).
    shell: tokio::sync::Mutex<Option<russh::Channel<client::Msg>>>,
    /// A second SFTP channel, also opened with the first, for the second archive part of an
    /// upload: it can start at once instead of two round trips later.
    spare_sftp: tokio::sync::Mutex<Option<Sftp>>,
    pub description: String,
}

/// Why the connection ended, as russh reported it to the handler.
type Lost = Arc<Mutex<Option<String>>>;

/// What the host key check decided, kept outside the handler (which `connect` consumes) so a
/// refusal can be explained after the handshake fails.
#[derive(Default)]
struct HostKeyOutcome {
    refusal: Option<String>,
}

pub(super) struct Client {
    host: String,
    port: u16,
    /// "jump host " for a ProxyJump hop, "" for the target: said in every message.
    role: &'static str,
    files: Vec<PathBuf>,
    /// Where accept-new records a key; None with `UserKnownHostsFile none`.
    user_file: Option<PathBuf>,
    mode: HostKeyChecking,
    outcome: Arc<Mutex<HostKeyOutcome>>,
    lost: Lost,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let query = HostKeyQuery {
            host: &self.host,
            port: self.port,
        };
        let key = offered.public_key();
        let verdict = match offered.certificate() {
            Some(cert) => known_hosts::check_certificate(&self.files, &query, cert),
            None => known_hosts::check(&self.files, &query, &key),
        };
        let fp = known_hosts::fingerprint(&key);
        let name = format!("{}{}", self.role, display_name(&self.host, self.port));
        let user_file = self
            .user_file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        let refusal = match verdict {
            Ok(Verdict::Known) => None,
            Ok(Verdict::Unknown) if self.mode == HostKeyChecking::AcceptNew => {
                match &self.user_file {
                    Some(file) => match known_hosts::append(file, &query, &key) {
                        Ok(()) => {
                            eprintln!(
                                "cutover: added {name} ({} {fp}) to {}",
                                key.algorithm(),
                                file.display()
                            );
                            None
                        }
                        Err(e) => Some(format!(
                            "cannot record the host key of {name} in {}: {e}",
                            file.display()
                        )),
                    },
                    None => Some(format!(
                        "the host key of {name} is not known ({} {fp}) and there is no known_hosts file                          to record it in (UserKnownHostsFile none); nothing was sent",
                        key.algorithm()
                    )),
                }
            }
            Ok(Verdict::Unknown) => Some(format!(
                "the host key of {name} is not known ({} {fp}); nothing was sent.\n\
                 If this is the right server, add its key: ssh-keyscan -p {} {} >> {}\n\
                 (check the fingerprint with the server's administrator), or set host_key_checking = \"accept-new\"",
                key.algorithm(),
                self.port,
                self.host,
                user_file
            )),
            Ok(Verdict::Changed { known }) => {
                let mut msg = format!(
                    "HOST KEY CHANGED for {name}: the server offered {} {fp}, but known_hosts has:",
                    key.algorithm()
                );
                for k in known {
                    msg.push_str(&format!(
                        "\n  {} {} ({}:{})",
                        k.algorithm,
                        k.fingerprint,
                        k.file.display(),
                        k.line
                    ));
                }
                msg.push_str("\nThis can be an attack (someone in the middle) or a reinstalled server. Nothing was sent. \
                              If the change is expected, remove the old line(s) and add the new key.");
                Some(msg)
            }
            Ok(Verdict::Revoked { file, line }) => Some(format!(
                "the host key of {name} ({} {fp}) is marked @revoked in {}:{line}; refusing to connect",
                key.algorithm(),
                file.display()
            )),
            Err(e) => Some(format!("cannot check the host key of {name}: {e}")),
        };
        let accepted = refusal.is_none();
        self.outcome.lock().unwrap().refusal = refusal;
        Ok(accepted)
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let why = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => format!(
                "the server disconnected: {:?} {}",
                info.reason_code,
                info.message.trim()
            ),
            DisconnectReason::Error(e) => e.to_string(),
        };
        self.lost.lock().unwrap().get_or_insert(why);
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// The server answered the exec request with a refusal: nothing ran.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server refused to run the script (is this an SFTP-only account? `cutover check` tells)"
)]
pub struct ExecRefused;

fn display_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Why a connection could not be made, in the categories a user acts on differently.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve the host name {host}: {detail}")]
    Dns { host: String, detail: String },
    #[error("connection to {name} refused: is sshd running, and is the port right?")]
    Refused { name: String },
    #[error("connecting to {name} timed out after {secs} s: a firewall may be dropping packets")]
    Timeout { name: String, secs: u64 },
    #[error("no route to {name}: {detail}")]
    NoRoute { name: String, detail: String },
    /// The host key was refused; the message says why and what to do.
    #[error("{0}")]
    HostKey(String),
    #[error("cannot connect to {name}: {detail}")]
    Other { name: String, detail: String },
}

/// A connection whose host key was accepted, not yet authenticated. Jump hosts on the way are
/// connected and authenticated already.
pub struct Handshake {
    handle: Handle<Client>,
    pub name: String,
    endpoint: Endpoint,
    jumps: Vec<Handle<Client>>,
    /// "via jump host X, Y" (empty without jump hosts), for messages.
    pub via: String,
    lost: Lost,
}

impl Handshake {
    /// Work out the route (cutover.toml, then `~/.ssh/config`), connect through any jump hosts,
    /// and run the SSH handshake; each host key is checked against known_hosts before anything
    /// else is sent to that host.
    pub async fn start(target: &Target) -> Result<Handshake, ConnectError> {
        let Host::Ssh { host, .. } = &target.host else {
            unreachable!("local targets do not use SSH")
        };
        let route = ssh_config::route(target).map_err(|e| ConnectError::Other {
            name: host.clone(),
            detail: format!("{e:#}"),
        })?;
        for warning in &route.warnings {
            eprintln!("cutover: warning: {warning}");
        }
        let mut jumps: Vec<Handle<Client>> = Vec::new();
        let mut via = Vec::new();
        for hop in &route.jumps {
            let (mut handle, _) = connect(hop, jumps.last(), "jump host ").await?;
            let name = display_name(&hop.host, hop.port);
            ssh_auth::authenticate(&mut handle, hop)
                .await
                .map_err(|e| ConnectError::Other {
                    name: format!("jump host {name}"),
                    detail: format!("authentication as {} failed: {e:#}", hop.user),
                })?;
            via.push(name);
            jumps.push(handle);
        }
        let (handle, lost) = connect(&route.target, jumps.last(), "").await?;
        Ok(Handshake {
            handle,
            name: display_name(&route.target.host, route.target.port),
            endpoint: route.target,
            jumps,
            via: if via.is_empty() {
                String::new()
            } else {
                format!("via jump host {}", via.join(", "))
            },
            lost,
        })
    }

    /// Public-key authentication; returns how it succeeded ("key ~/.ssh/id_ed25519", …).
    /// The user and keys are the route's (cutover.toml, then `~/.ssh/config`).
    pub async fn authenticate(&mut self, _target: &Target) -> Result<String> {
        let user = self.endpoint.user.clone();
        ssh_auth::authenticate(&mut self.handle, &self.endpoint)
            .await
            .with_context(|| format!("authentication as {user} on {} failed", self.name))
    }

    /// Open the SFTP channel, and alongside it the channel for the exec call: the session is
    /// ready for a deploy.
    pub async fn into_session(self) -> Result<SshSession> {
        let (channel, exec_channel, spare) = tokio::join!(
            self.handle.channel_open_session(),
            self.handle.channel_open_session(),
            self.handle.channel_open_session()
        );
        let channel = channel.context("cannot open an SSH channel for SFTP")?;
        let spare = async {
            match spare {
                Ok(c) => Sftp::start(c).await.ok(),
                Err(_) => None,
            }
        };
        let (sftp, spare) = tokio::join!(Sftp::start(channel), spare);
        let sftp = sftp?;
        Ok(SshSession {
            handle: self.handle,
            _jumps: self.jumps,
            lost: self.lost,
            sftp,
            exec_channel: tokio::sync::Mutex::new(exec_channel.ok()),
            spare_sftp: tokio::sync::Mutex::new(spare),
            shell: tokio::sync::Mutex::new(None),
            description: self.name,
        })
    }
}

/// TCP (or a channel through `via`), then the SSH handshake with `ep`'s host key rules.
async fn connect(
    ep: &Endpoint,
    via: Option<&Handle<Client>>,
    role: &'static str,
) -> Result<(Handle<Client>, Lost), ConnectError> {
    let name = format!("{role}{}", display_name(&ep.host, ep.port));
    let secs = ep.connect_timeout.as_secs();
    let Some(jump) = via else {
        let stream = tcp_connect(ep, &name).await?;
        return handshake(ep, stream, role, &name).await;
    };
    let opened = tokio::time::timeout(
        ep.connect_timeout,
        jump.channel_open_direct_tcpip(ep.host.clone(), u32::from(ep.port), "127.0.0.1", 0),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        name: name.clone(),
        secs,
    })?;
    let channel = opened.map_err(|e| ConnectError::Other {
        name: name.clone(),
        detail: match e {
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited) => {
                "the jump host refused to forward the connection (its sshd needs AllowTcpForwarding yes)"
                    .to_string()
            }
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => {
                "the jump host could not connect to it (refused, unreachable, or the name does not resolve there)"
                    .to_string()
            }
            e => format!("the jump host could not open a connection to it: {e}"),
        },
    })?;
    handshake(ep, channel.into_stream(), role, &name).await
}

async fn tcp_connect(ep: &Endpoint, name: &str) -> Result<tokio::net::TcpStream, ConnectError> {
    let secs = ep.connect_timeout.as_secs();
    let lookup = tokio::time::timeout(
        ep.connect_timeout,
        tokio::net::lookup_host((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        name: name.to_string(),
        secs,
    })?;
    let addrs: Vec<std::net::SocketAddr> = match lookup {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(ConnectError::Dns {
                host: ep.host.clone(),
                detail: e.to_string(),
            })
        }
    };
    if addrs.is_empty() {
        return Err(ConnectError::Dns {
            host: ep.host.clone(),
            detail: "no address".into(),
        });
    }
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(ep.connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(classify_io(&e, name, secs)),
            Err(_) => {
                last = Some(ConnectError::Timeout {
                    name: name.to_string(),
                    secs,
                })
            }
        }
    }
    Err(last.expect("at least one address was tried"))
}

async fn handshake<S>(
    ep: &Endpoint,
    stream: S,
    role: &'static str,
    name: &str,
) -> Result<(Handle<Client>, Lost), ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut files = ep.known_hosts.clone();
    files.extend(GLOBAL_KNOWN_HOSTS.iter().map(PathBuf::from));
    let preferred = prefer_known_key_types(&files, &ep.host, ep.port);
    let outcome = Arc::new(Mutex::new(HostKeyOutcome::default()));
    let lost = Lost::default();
    let handler = Client {
        host: ep.host.clone(),
        port: ep.port,
        role,
        files,
        user_file: ep.known_hosts.first().cloned(),
        mode: ep.host_key_checking,
        outcome: outcome.clone(),
        lost: lost.clone(),
    };
    let config = Arc::new(client::Config {
        keepalive_interval: ep.keepalive,
        keepalive_max: ep.keepalive_max,
        nodelay: true,
        window_size: 16 * 1024 * 1024,
        preferred,
        ..Default::default()
    });
    let result = tokio::time::timeout(
        ep.connect_timeout,
        client::connect_stream(config, stream, handler),
    )
    .await;
    match result {
        Err(_) => Err(ConnectError::Timeout {
            name: name.to_string(),
            secs: ep.connect_timeout.as_secs(),
        }),
        Ok(Err(e)) => {
            if let Some(refusal) = outcome.lock().unwrap().refusal.take() {
                return Err(ConnectError::HostKey(refusal));
            }
            Err(ConnectError::Other {
                name: name.to_string(),
                detail: e.to_string(),
            })
        }
        Ok(Ok(handle)) => Ok((handle, lost)),
    }
}

/// Ask for a host key type known_hosts already has for this host, as OpenSSH does: a server
/// recorded only by its ECDSA key would otherwise offer Ed25519 and look like a changed key.
///
/// Also: never `ssh-rsa` (SHA-1) host key signatures, as OpenSSH 8.8+; and host certificates
/// first when an `@cert-authority` line vouches for this host, also as OpenSSH.
fn prefer_known_key_types(files: &[PathBuf], host: &str, port: u16) -> russh::Preferred {
    let mut preferred = russh::Preferred::default();
    let query = HostKeyQuery { host, port };
    let sha2_only: Vec<ssh_key::Algorithm> = preferred
        .key
        .iter()
        .filter(|a| **a != ssh_key::Algorithm::Rsa { hash: None })
        .cloned()
        .collect();
    preferred.key = std::borrow::Cow::Owned(sha2_only);
    if known_hosts::has_cert_authority(files, &query).unwrap_or(false) {
        preferred.host_key_certificates = preferred.key.clone();
    }
    let known = known_hosts::known_algorithms(files, &query).unwrap_or_default();
    if known.is_empty() {
        return preferred;
    }
    let mut first: Vec<ssh_key::Algorithm> = Vec::new();
    for alg in &known {
        if alg.clone().is_rsa() {
            // an `ssh-rsa` line is the same key whichever SHA-2 signature the server makes
            first.push(ssh_key::Algorithm::Rsa {
                hash: Some(ssh_key::HashAlg::Sha512),
            });
            first.push(ssh_key::Algorithm::Rsa {
                hash: Some(ssh_key::HashAlg::Sha256),
            });
        } else {
            first.push(alg.clone());
        }
    }
    let mut order: Vec<ssh_key::Algorithm> = preferred
        .key
        .iter()
        .filter(|a| first.contains(a))
        .cloned()
        .collect();
    order.extend(preferred.key.iter().filter(|a| !first.contains(a)).cloned());
    preferred.key = std::borrow::Cow::Owned(order);
    preferred
}

fn classify_io(e: &std::io::Error, name: &str, secs: u64) -> ConnectError {
    use std::io::ErrorKind::*;
    match (e.kind(), e.raw_os_error()) {
        (ConnectionRefused, _) => ConnectError::Refused { name: name.into() },
        (TimedOut, _) => ConnectError::Timeout {
            name: name.into(),
            secs,
        },
        (_, Some(113)) | (_, Some(101)) | (HostUnreachable, _) | (NetworkUnreachable, _) => {
            ConnectError::NoRoute {
                name: name.into(),
                detail: e.to_string(),
            }
        }
        _ => ConnectError::Other {
            name: name.into(),
            detail: e.to_string(),
        },
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
    /// [`super::shell`]).
    pub async fn open_shell(&self, stderr: super::Stderr) -> Result<super::Shell> {
        let channel = self.take_exec_channel().await?;
        super::Shell::over_ssh(channel, stderr).await
    }

    /// Start the deploy's one exec call ahead of time: `sh`, which waits for its input.
    /// sshd opens a session channel's window only once its command has started, and starts a
    /// session slowly (the login shell and its start-up files, then `sh`): started while the
    /// plan is still being made, the shell takes the script the moment it is ready. A shell
    /// that is never given a script gets end-of-input and runs nothing.
    pub async fn start_shell(&self) -> Result<()> {
        let channel = self.launch_shell().await?;
        *self.shell.lock().await = Some(channel);
        Ok(())
    }

    /// The exec call `sh`: with no operands, a POSIX shell reads its commands from stdin (`-s`
    /// is implied; posh even refuses it spelled out).
    async fn launch_shell(&self) -> Result<russh::Channel<client::Msg>> {
        let channel = self.take_exec_channel().await?;
        channel
            .exec(true, "sh")
            .await
            .context("the server refused to run a shell")?;
        Ok(channel)
    }

    /// Run `script` with `sh` (the shell [`SshSession::start_shell`] started, else a new
    /// exec call), sending it as one brace group; stderr is passed through.
    pub async fn run_script(&self, script: &str, quiet: bool) -> Result<ScriptExit> {
        let started = self.shell.lock().await.take();
        let channel = match started {
            Some(c) => c,
            None => self.launch_shell().await?,
        };
        channel
            .data(crate::script::for_stdin(script).as_bytes())
            .await
            .context("cannot send the script")?;
        channel.eof().await.context("cannot send the script")?;
        self.collect(channel, quiet).await
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
                .context("cannot open an SSH channel for the script"),
        }
    }

    /// The script's output (stderr passed through unless `quiet`) and exit status.
    async fn collect(
        &self,
        mut channel: russh::Channel<client::Msg>,
        quiet: bool,
    ) -> Result<ScriptExit> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut code = None;
        // OpenSSH sends the exit status after EOF: read until the channel closes.
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => {
                    if quiet {
                        stderr.extend_from_slice(&data);
                    } else {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(&data);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                // The answer to the exec request: the server will not run it (a ForceCommand,
                // a restricted account). Nothing ran.
                ChannelMsg::Failure => return Err(ExecRefused.into()),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    eprintln!("cutover: the deploy script was killed by signal {signal_name:?}");
                }
                _ => {}
            }
        }
        if quiet && code != Some(0) {
            eprint!("{}", String::from_utf8_lossy(&stderr));
        }
        if code.is_none() {
            if let Some(why) = self.lost_reason().await {
                eprintln!(
                    "cutover: the SSH connection to {} was lost ({why})",
                    self.description
                );
            }
        }
        Ok(ScriptExit {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            refused: false,
        })
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

    /// Upload archive parts side by side (see [`super::Session::upload_archives`]): the first
    /// over the session's SFTP channel, each other part over an SFTP channel of its own (one
    /// channel's window caps its throughput).
    pub async fn upload_archives(
        &self,
        first: (super::OpenFile, crate::archive::Chunks),
        rest: Vec<(String, crate::archive::Chunks)>,
        progress: &dyn super::Progress,
    ) -> Result<u64> {
        let (super::OpenFile::Ssh { handle, path }, chunks) = first else {
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
                sftp.upload_stream(&path, chunks, progress).await
            }
        });
        let others = async {
            let sent = futures::future::try_join_all(uploads).await?;
            Ok::<u64, anyhow::Error>(sent.into_iter().sum())
        };
        let (first, others) = tokio::join!(
            self.sftp.stream_into(handle, &path, chunks, progress),
            others
        );
        Ok(first? + others?)
    }

    /// Runs a remote operation, giving up as soon as the connection is gone: russh-sftp would
    /// otherwise wait out its request timeout for answers that can no longer come.
    pub async fn guard<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let result = tokio::select! {
            result = op => result,
            () = self.connection_closed() => Err(anyhow::anyhow!("no answer from the server")),
        };
        self.explain(result).await
    }

    async fn connection_closed(&self) {
        while !self.handle.is_closed() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Why the connection ended, once it has: None while it is open (or when russh said nothing).
    pub async fn lost_reason(&self) -> Option<String> {
        // The session task notices a dropped connection a moment after a channel does.
        for _ in 0..4 {
            if self.handle.is_closed() || self.lost.lock().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.lost.lock().unwrap().clone()
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
        let lost = self.lost_reason().await;
        if !self.handle.is_closed() && lost.is_none() {
            return Err(e);
        }
        let why = lost.map(|w| format!(" ({w})")).unwrap_or_default();
        Err(e.context(format!(
            "the SSH connection to {} was lost{why}",
            self.description
        )))
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
