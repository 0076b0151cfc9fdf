//! Logging in with public keys, in the order `ssh` would offer them, and a failure that says
//! what was tried and what the server would have taken.
//!
//! Order: the identity files (cutover.toml's `identity_file`, else the ssh config's
//! `IdentityFile`s), signing through ssh-agent when it holds the same key so an encrypted file
//! needs no passphrase; then the agent's other keys (none of them with `IdentitiesOnly yes`); then
//! `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` when no identity file is configured at all, as `ssh`
//! does. A key is offered once, however many ways lead to it.
//!
//! RSA keys always sign with rsa-sha2-512 or rsa-sha2-256 (what the server announces in
//! `server-sig-algs`, else SHA-256): never with SHA-1 `ssh-rsa`, which OpenSSH 8.8+ refuses anyway.
//!
//! An encrypted key file is unlocked with `CUTOVER_SSH_PASSPHRASE`, else by asking on the
//! terminal (with echo off, via `rpassword`) when stdin is one, else it is skipped with a reason.
//! The passphrase is kept in zeroed-on-drop memory and never printed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use russh::client::{self, AuthResult, Handle};
use russh::keys::{self, ssh_key, PrivateKeyWithHashAlg};
use russh::MethodSet;
use ssh_key::{public::KeyData, HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::config::home_dir;
use crate::remote::ssh_config::{Agent, Endpoint};

/// Environment variable holding the passphrase of an encrypted identity file.
pub const PASSPHRASE_ENV: &str = "CUTOVER_SSH_PASSPHRASE";

/// How many times the terminal prompt asks before giving up on a key, as `ssh`.
const PROMPT_ATTEMPTS: usize = 3;

type AgentClient = keys::agent::client::AgentClient<tokio::net::UnixStream>;

/// What happened to one offered key.
enum Outcome {
    Accepted,
    Rejected,
    /// The server closed the connection (too many attempts, usually).
    Closed(String),
}

/// The record of one login attempt, for the failure message.
struct Attempts {
    tried: Vec<String>,
    offered: Vec<KeyData>,
    remaining: Option<MethodSet>,
    partial: bool,
}

/// The hash an RSA key signs with, asked of the server only when an RSA key is offered: russh
/// waits up to a second for the server's `server-sig-algs` before answering, which a server that
/// sends none would otherwise cost every login.
#[derive(Default)]
struct RsaHash(Option<HashAlg>);

impl RsaHash {
    async fn for_key<H: client::Handler>(
        &mut self,
        handle: &Handle<H>,
        algorithm: ssh_key::Algorithm,
    ) -> Option<HashAlg> {
        if !algorithm.is_rsa() {
            return None;
        }
        if self.0.is_none() {
            self.0 = Some(match handle.best_supported_rsa_hash().await {
                Ok(Some(Some(hash))) => hash,
                // Nothing announced, or only SHA-1: SHA-2 anyway, never ssh-rsa.
                _ => HashAlg::Sha256,
            });
        }
        self.0
    }
}

/// Log in as `ep.user`; returns how it worked ("key ~/.ssh/id_ed25519", "ssh-agent key ...").
pub(super) async fn authenticate<H: client::Handler>(
    handle: &mut Handle<H>,
    ep: &Endpoint,
) -> Result<String> {
    let user = ep.user.as_str();
    let mut rsa_hash = RsaHash::default();
    let mut log = Attempts {
        tried: Vec::new(),
        offered: Vec::new(),
        remaining: None,
        partial: false,
    };

    let (mut agent, agent_keys) = match connect_agent(&ep.agent).await {
        Ok(Some(mut agent)) => match agent.request_identities().await {
            Ok(ids) => {
                let keys: Vec<(PublicKey, String)> = ids
                    .into_iter()
                    .filter_map(|id| match id {
                        keys::agent::AgentIdentity::PublicKey { key, comment } => {
                            Some((key, comment))
                        }
                        _ => None,
                    })
                    .collect();
                (Some(agent), keys)
            }
            Err(e) => {
                log.tried
                    .push(format!("ssh-agent: cannot list its keys ({e})"));
                (None, Vec::new())
            }
        },
        Ok(None) => (None, Vec::new()),
        Err(e) => {
            log.tried.push(format!("ssh-agent: {e}"));
            (None, Vec::new())
        }
    };

    // 1. identity files
    for path in &ep.identity_files {
        let public = identity_public_key(path);
        if let (Some(public), Some(agent)) = (&public, agent.as_mut()) {
            if agent_keys
                .iter()
                .any(|(k, _)| k.key_data() == public.key_data())
            {
                let what = format!("key {} via ssh-agent", path.display());
                match offer_agent_key(handle, user, public, &mut rsa_hash, agent, &what, &mut log)
                    .await?
                {
                    true => return Ok(what),
                    false => continue,
                }
            }
        }
        if !path.exists() {
            log.tried
                .push(format!("key {}: no such file", path.display()));
            continue;
        }
        let key = match load_private_key(path).await {
            Ok(k) => k,
            Err(why) => {
                log.tried.push(format!("key {}: {why}", path.display()));
                continue;
            }
        };
        let what = format!("key {}", path.display());
        if offer_private_key(handle, user, key, &mut rsa_hash, &what, &mut log).await? {
            return Ok(what);
        }
    }

    // 2. the agent's other keys
    if let Some(agent) = agent.as_mut() {
        for (key, comment) in &agent_keys {
            if log.offered.contains(key.key_data()) {
                continue;
            }
            if ep.identities_only {
                log.tried.push(format!(
                    "ssh-agent key {} {comment}: not offered (IdentitiesOnly)",
                    key.algorithm()
                ));
                continue;
            }
            let what = format!("ssh-agent key {} {comment}", key.algorithm());
            if offer_agent_key(handle, user, key, &mut rsa_hash, agent, &what, &mut log).await? {
                return Ok(what);
            }
        }
    }

    // 3. the default key files, when no identity file is configured
    if ep.identity_files.is_empty() {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let path = home_dir().join(".ssh").join(name);
            if !path.exists() {
                continue;
            }
            if let Some(public) = identity_public_key(&path) {
                if log.offered.contains(public.key_data()) {
                    continue;
                }
            }
            let key = match load_private_key(&path).await {
                Ok(k) => k,
                Err(why) => {
                    log.tried.push(format!("key {}: {why}", path.display()));
                    continue;
                }
            };
            let what = format!("key {}", path.display());
            if offer_private_key(handle, user, key, &mut rsa_hash, &what, &mut log).await? {
                return Ok(what);
            }
        }
    }

    if log.remaining.is_none() {
        // Nothing was offered: ask what the server would take, as `ssh` does first.
        if let Ok(AuthResult::Failure {
            remaining_methods, ..
        }) = handle.authenticate_none(user).await
        {
            log.remaining = Some(remaining_methods);
        }
    }
    bail!("{}", failure_message(&log, ep))
}

fn failure_message(log: &Attempts, ep: &Endpoint) -> String {
    let mut msg = if log.offered.is_empty() {
        "no usable key to offer".to_string()
    } else if log.partial {
        "the key was accepted, but the server requires another method as well (cutover logs in with a key only)"
            .to_string()
    } else {
        "the server accepted none of the keys".to_string()
    };
    if !log.tried.is_empty() {
        msg.push_str("; tried:");
        for t in &log.tried {
            msg.push_str("\n  - ");
            msg.push_str(t);
        }
    }
    if let Some(methods) = &log.remaining {
        let names: Vec<&str> = methods.iter().map(<&str>::from).collect();
        msg.push_str(&format!(
            "\nthe server accepts: {}",
            if names.is_empty() {
                "nothing more".to_string()
            } else {
                names.join(", ")
            }
        ));
        if !methods.contains(&russh::MethodKind::PublicKey) {
            msg.push_str(" (no public keys: cutover logs in with keys only)");
        }
    }
    msg.push_str(&format!(
        "\nfix: authorize one of these keys for {} on the server, set identity_file in cutover.toml \
         (or IdentityFile in ~/.ssh/config), or add the key to ssh-agent with ssh-add",
        ep.user
    ));
    msg
}

/// The agent the endpoint uses; `Ok(None)` when there is none.
async fn connect_agent(agent: &Agent) -> Result<Option<AgentClient>, String> {
    let path = match agent {
        Agent::Disabled => return Ok(None),
        Agent::Env => match std::env::var_os("SSH_AUTH_SOCK") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Ok(None),
        },
        Agent::Socket(p) => p.clone(),
    };
    AgentClient::connect_uds(&path)
        .await
        .map(Some)
        .map_err(|e| format!("cannot connect to {} ({e})", path.display()))
}

async fn offer_private_key<H: client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: PrivateKey,
    rsa_hash: &mut RsaHash,
    what: &str,
    log: &mut Attempts,
) -> Result<bool> {
    let data = key.public_key().key_data().clone();
    if log.offered.contains(&data) {
        return Ok(false);
    }
    log.offered.push(data);
    let hash = rsa_hash.for_key(handle, key.algorithm()).await;
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await;
    let outcome = match result {
        Ok(r) => outcome(r, log),
        Err(e) => Outcome::Closed(e.to_string()),
    };
    record(outcome, what, log)
}

async fn offer_agent_key<H: client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: &PublicKey,
    rsa_hash: &mut RsaHash,
    agent: &mut AgentClient,
    what: &str,
    log: &mut Attempts,
) -> Result<bool> {
    if log.offered.contains(key.key_data()) {
        return Ok(false);
    }
    log.offered.push(key.key_data().clone());
    let hash = rsa_hash.for_key(handle, key.algorithm()).await;
    let result = handle
        .authenticate_publickey_with(user, key.clone(), hash, agent)
        .await;
    let outcome = match result {
        Ok(r) => outcome(r, log),
        Err(e) if handle.is_closed() => Outcome::Closed(e.to_string()),
        Err(e) => {
            log.tried
                .push(format!("{what}: the agent did not sign ({e})"));
            return Ok(false);
        }
    };
    record(outcome, what, log)
}

fn outcome(result: AuthResult, log: &mut Attempts) -> Outcome {
    match result {
        AuthResult::Success => Outcome::Accepted,
        AuthResult::Failure {
            remaining_methods,
            partial_success,
        } => {
            log.remaining = Some(remaining_methods);
            log.partial |= partial_success;
            Outcome::Rejected
        }
    }
}

/// True when accepted; an error when the server hung up, since nothing else can be tried.
fn record(outcome: Outcome, what: &str, log: &mut Attempts) -> Result<bool> {
    match outcome {
        Outcome::Accepted => Ok(true),
        Outcome::Rejected => {
            log.tried.push(format!("{what}: rejected"));
            Ok(false)
        }
        Outcome::Closed(why) => {
            log.tried
                .push(format!("{what}: the server closed the connection ({why})"));
            bail!(
                "the server closed the connection after {} key(s) (its MaxAuthTries?); tried:\n  - {}\n\
                 fix: name the right key with identity_file, or IdentitiesOnly yes in ~/.ssh/config",
                log.offered.len(),
                log.tried.join("\n  - ")
            )
        }
    }
}

/// The public half of an identity file: `FILE.pub`, or the public key an OpenSSH-format private
/// key carries in clear even when encrypted.
fn identity_public_key(path: &Path) -> Option<PublicKey> {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    if let Ok(text) = std::fs::read_to_string(PathBuf::from(pub_path)) {
        if let Ok(key) = PublicKey::from_openssh(text.trim()) {
            return Some(key);
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    if text.contains("BEGIN OPENSSH PRIVATE KEY") {
        return PrivateKey::from_openssh(text.trim())
            .ok()
            .map(|k| k.public_key().clone());
    }
    None
}

/// Loads a private key (OpenSSH or PEM format), unlocking it when encrypted. The error is the
/// reason to show in the list of tried keys; it never contains the passphrase.
async fn load_private_key(path: &Path) -> Result<PrivateKey, String> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("cannot read it ({e})"))?);
    // PKCS#8 and legacy PEM encryption are only visible in the armour.
    let armoured_encrypted = text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED");
    match keys::decode_secret_key(&text, None) {
        Ok(key) => return Ok(key),
        Err(keys::Error::KeyIsEncrypted) => {}
        Err(_) if armoured_encrypted => {}
        Err(e) => return Err(format!("not a usable private key ({e})")),
    }
    if let Ok(pass) = std::env::var(PASSPHRASE_ENV) {
        let pass = Zeroizing::new(pass);
        return keys::decode_secret_key(&text, Some(&pass))
            .map_err(|_| format!("encrypted, and {PASSPHRASE_ENV} does not decrypt it"));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "encrypted, and no passphrase: set {PASSPHRASE_ENV}, add the key to ssh-agent (ssh-add), \
             or run cutover in a terminal to be asked"
        ));
    }
    for _ in 0..PROMPT_ATTEMPTS {
        let prompt = format!("Enter passphrase for key '{}': ", path.display());
        let answer = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
            .await
            .map_err(|e| format!("cannot ask for the passphrase ({e})"))?
            .map_err(|e| format!("cannot ask for the passphrase ({e})"))?;
        let pass = Zeroizing::new(answer);
        if pass.is_empty() {
            return Err("encrypted; skipped (empty passphrase)".into());
        }
        match keys::decode_secret_key(&text, Some(&pass)) {
            Ok(key) => return Ok(key),
            Err(_) => eprintln!("cutover: wrong passphrase for {}", path.display()),
        }
    }
    Err("encrypted; wrong passphrase".into())
}
