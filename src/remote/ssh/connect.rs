//! Reaching a server: TCP (or a `direct-tcpip` channel through the jump host before it), the
//! SSH handshake under the host key policy, and the errors a user acts on differently.
//!
//! Jump hosts (`ProxyJump`) are reached in order: a TCP connection to the first, then for each
//! next host a channel on the previous one, over which a new SSH session runs end to end, so
//! every hop's host key is checked exactly like the target's and nothing is sent to a host
//! before its key is trusted. Every wait (TCP, jump channel, handshake) is bounded by
//! `ConnectTimeout`: russh's `connect` has none of its own.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use russh::client::{self, DisconnectReason, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::ChannelOpenFailure;
use tokio::io::{AsyncRead, AsyncWrite};

use super::auth;
use super::display_name;
use super::host_key::{HostKeyOutcome, HostKeyPolicy};
use super::session::{Lost, SshSession};
use crate::config::{Host, Target};
use crate::remote::sftp::Sftp;
use crate::remote::ssh_config::{self, Endpoint};

/// The russh handler of one connection: host key policy, and the reason the connection ended.
pub(super) struct Client {
    policy: HostKeyPolicy,
    outcome: Arc<Mutex<HostKeyOutcome>>,
    lost: Lost,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let refusal = self.policy.judge(offered);
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
            auth::authenticate(&mut handle, hop)
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
        auth::authenticate(&mut self.handle, &self.endpoint)
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
    let policy = HostKeyPolicy::new(ep, role);
    let preferred = policy.preferred();
    let outcome = Arc::new(Mutex::new(HostKeyOutcome::default()));
    let lost = Lost::default();
    let handler = Client {
        policy,
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
