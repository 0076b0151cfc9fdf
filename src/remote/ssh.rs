//! One SSH connection per command: host key verified before anything is sent, public-key
//! authentication, an SFTP channel for files and one exec channel for the script.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use russh::client::{self, AuthResult, Handle};
use russh::keys::{self, ssh_key, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;

use super::known_hosts::{self, HostKeyQuery, Verdict};
use super::sftp::Sftp;
use super::ScriptExit;
use crate::config::{home_dir, Host, HostKeyChecking, Target};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct SshSession {
    handle: Handle<Client>,
    pub sftp: Sftp,
    pub description: String,
}

/// What the host key check decided, kept outside the handler (which `connect` consumes) so a
/// refusal can be explained after the handshake fails.
#[derive(Default)]
struct HostKeyOutcome {
    refusal: Option<String>,
}

struct Client {
    host: String,
    port: u16,
    files: Vec<PathBuf>,
    user_file: PathBuf,
    mode: HostKeyChecking,
    outcome: Arc<Mutex<HostKeyOutcome>>,
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
        let name = display_name(&self.host, self.port);
        let refusal = match verdict {
            Ok(Verdict::Known) => None,
            Ok(Verdict::Unknown) if self.mode == HostKeyChecking::AcceptNew => {
                match known_hosts::append(&self.user_file, &query, &key) {
                    Ok(()) => {
                        eprintln!("cutover: added {name} ({} {fp}) to {}", key.algorithm(), self.user_file.display());
                        None
                    }
                    Err(e) => Some(format!("cannot record the host key of {name} in {}: {e}", self.user_file.display())),
                }
            }
            Ok(Verdict::Unknown) => Some(format!(
                "the host key of {name} is not known ({} {fp}); nothing was sent.\n\
                 If this is the right server, add its key: ssh-keyscan -p {} {} >> {}\n\
                 (check the fingerprint with the server's administrator), or set host_key_checking = \"accept-new\"",
                key.algorithm(),
                self.port,
                self.host,
                self.user_file.display()
            )),
            Ok(Verdict::Changed { known }) => {
                let mut msg = format!(
                    "HOST KEY CHANGED for {name}: the server offered {} {fp}, but known_hosts has:",
                    key.algorithm()
                );
                for k in known {
                    msg.push_str(&format!("\n  {} {} ({}:{})", k.algorithm, k.fingerprint, k.file.display(), k.line));
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
}

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

/// A connection whose host key was accepted, not yet authenticated.
pub struct Handshake {
    handle: Handle<Client>,
    pub name: String,
}

impl Handshake {
    /// Resolve, connect over TCP, and run the SSH handshake; the host key is checked against
    /// known_hosts before anything else is sent.
    pub async fn start(target: &Target) -> Result<Handshake, ConnectError> {
        let Host::Ssh { host, port, .. } = &target.host else {
            unreachable!("local targets do not use SSH")
        };
        let name = display_name(host, *port);
        let addrs: Vec<std::net::SocketAddr> =
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    return Err(ConnectError::Dns {
                        host: host.clone(),
                        detail: e.to_string(),
                    })
                }
            };
        if addrs.is_empty() {
            return Err(ConnectError::Dns {
                host: host.clone(),
                detail: "no address".into(),
            });
        }
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(classify_io(&e, &name)),
                Err(_) => {
                    last = Some(ConnectError::Timeout {
                        name: name.clone(),
                        secs: CONNECT_TIMEOUT.as_secs(),
                    })
                }
            }
        }
        let Some(stream) = stream else {
            return Err(last.expect("at least one address was tried"));
        };
        let _ = stream.set_nodelay(true);

        let user_file = target
            .known_hosts
            .clone()
            .unwrap_or_else(|| home_dir().join(".ssh/known_hosts"));
        let files = vec![user_file.clone(), PathBuf::from("/etc/ssh/ssh_known_hosts")];
        let preferred = prefer_known_key_types(&files, host, *port);
        let outcome = Arc::new(Mutex::new(HostKeyOutcome::default()));
        let handler = Client {
            host: host.clone(),
            port: *port,
            files,
            user_file,
            mode: target.host_key_checking,
            outcome: outcome.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            nodelay: true,
            window_size: 16 * 1024 * 1024,
            preferred,
            ..Default::default()
        });
        let handshake = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client::connect_stream(config, stream, handler),
        )
        .await;
        match handshake {
            Err(_) => Err(ConnectError::Timeout {
                name,
                secs: CONNECT_TIMEOUT.as_secs(),
            }),
            Ok(Err(e)) => {
                if let Some(refusal) = outcome.lock().unwrap().refusal.take() {
                    return Err(ConnectError::HostKey(refusal));
                }
                Err(ConnectError::Other {
                    name,
                    detail: e.to_string(),
                })
            }
            Ok(Ok(handle)) => Ok(Handshake { handle, name }),
        }
    }

    /// Public-key authentication; returns how it succeeded ("key ~/.ssh/id_ed25519", …).
    pub async fn authenticate(&mut self, target: &Target) -> Result<String> {
        let Host::Ssh { user, .. } = &target.host else {
            unreachable!("local targets do not use SSH")
        };
        authenticate(&mut self.handle, user, target)
            .await
            .with_context(|| format!("authentication as {user} on {} failed", self.name))
    }

    /// Open the SFTP channel: the session is ready for a deploy.
    pub async fn into_session(self) -> Result<SshSession> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .context("cannot open an SSH channel for SFTP")?;
        let sftp = Sftp::start(channel).await?;
        Ok(SshSession {
            handle: self.handle,
            sftp,
            description: self.name,
        })
    }
}

/// Ask for a host key type known_hosts already has for this host, as OpenSSH does: a server
/// recorded only by its ECDSA key would otherwise offer Ed25519 and look like a changed key.
fn prefer_known_key_types(files: &[PathBuf], host: &str, port: u16) -> russh::Preferred {
    let mut preferred = russh::Preferred::default();
    let known =
        known_hosts::known_algorithms(files, &HostKeyQuery { host, port }).unwrap_or_default();
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

fn classify_io(e: &std::io::Error, name: &str) -> ConnectError {
    use std::io::ErrorKind::*;
    match (e.kind(), e.raw_os_error()) {
        (ConnectionRefused, _) => ConnectError::Refused { name: name.into() },
        (TimedOut, _) => ConnectError::Timeout {
            name: name.into(),
            secs: CONNECT_TIMEOUT.as_secs(),
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
            eprintln!("cutover: connected to {} ({method})", handshake.name);
        }
        handshake.into_session().await
    }

    /// Run `sh SCRIPT` in one exec call, passing its stderr through.
    pub async fn run_script(&self, script_path: &str, quiet: bool) -> Result<ScriptExit> {
        self.exec(
            &format!("sh {}", crate::shell::quote(script_path)),
            None,
            quiet,
        )
        .await
    }

    /// Run `sh -s` in one exec call with `script` on its stdin.
    pub async fn run_script_text(&self, script: &str, quiet: bool) -> Result<ScriptExit> {
        self.exec("sh -s", Some(script), quiet).await
    }

    async fn exec(&self, command: &str, stdin: Option<&str>, quiet: bool) -> Result<ScriptExit> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .context("cannot open an SSH channel for the script")?;
        channel
            .exec(true, command)
            .await
            .context("the server refused to run the script")?;
        if let Some(text) = stdin {
            channel
                .data(text.as_bytes())
                .await
                .context("cannot send the script")?;
            channel.eof().await.context("cannot send the script")?;
        }
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
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    eprintln!("cutover: the deploy script was killed by signal {signal_name:?}");
                }
                _ => {}
            }
        }
        if quiet && code != Some(0) {
            eprint!("{}", String::from_utf8_lossy(&stderr));
        }
        Ok(ScriptExit {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
        })
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// identity_file, then every ssh-agent key, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa.
async fn authenticate(handle: &mut Handle<Client>, user: &str, target: &Target) -> Result<String> {
    let mut tried = Vec::new();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();

    if let Some(path) = &target.identity_file {
        let key = load_key(path)?;
        if try_key(handle, user, key, rsa_hash).await? {
            return Ok(format!("key {}", path.display()));
        }
        tried.push(format!("key {}", path.display()));
    }

    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                let identities = agent.request_identities().await.unwrap_or_default();
                for id in identities {
                    let keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    let hash = if key.algorithm().is_rsa() {
                        rsa_hash
                    } else {
                        None
                    };
                    let ok = handle
                        .authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                        .await;
                    if let Ok(AuthResult::Success) = ok {
                        return Ok(format!("ssh-agent key {comment}"));
                    }
                    tried.push(format!("ssh-agent key {} {}", key.algorithm(), comment));
                }
            }
            Err(e) => tried.push(format!("ssh-agent (cannot connect: {e})")),
        }
    }

    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let path = home_dir().join(".ssh").join(name);
        if !path.exists() || target.identity_file.as_ref() == Some(&path) {
            continue;
        }
        match load_key(&path) {
            Ok(key) => {
                if try_key(handle, user, key, rsa_hash).await? {
                    return Ok(format!("key {}", path.display()));
                }
                tried.push(format!("key {}", path.display()));
            }
            Err(e) => tried.push(format!("key {} (unusable: {e:#})", path.display())),
        }
    }

    if tried.is_empty() {
        bail!("no key to offer: set identity_file, load a key into ssh-agent, or create ~/.ssh/id_ed25519");
    }
    bail!("the server accepted none of: {}", tried.join(", "))
}

async fn try_key(
    handle: &mut Handle<Client>,
    user: &str,
    key: ssh_key::PrivateKey,
    rsa_hash: Option<ssh_key::HashAlg>,
) -> Result<bool> {
    let hash = if key.algorithm().is_rsa() {
        rsa_hash.or(Some(ssh_key::HashAlg::Sha256))
    } else {
        None
    };
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
    let result = handle
        .authenticate_publickey(user, key)
        .await
        .context("the connection failed during authentication")?;
    Ok(matches!(result, AuthResult::Success))
}

/// Load a private key; an encrypted one is unlocked with `CUTOVER_SSH_PASSPHRASE`. The
/// passphrase is never printed, not even in errors.
fn load_key(path: &std::path::Path) -> Result<ssh_key::PrivateKey> {
    match keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(keys::Error::KeyIsEncrypted) => {
            let Ok(pass) = std::env::var("CUTOVER_SSH_PASSPHRASE") else {
                bail!(
                    "{} is encrypted: set CUTOVER_SSH_PASSPHRASE or load the key into ssh-agent",
                    path.display()
                );
            };
            keys::load_secret_key(path, Some(&pass)).map_err(|_| {
                anyhow!(
                    "cannot decrypt {} with CUTOVER_SSH_PASSPHRASE",
                    path.display()
                )
            })
        }
        Err(e) => Err(anyhow!("cannot load the key {}: {e}", path.display())),
    }
}
