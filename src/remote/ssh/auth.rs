//! Logging in with public keys, in the order `ssh` would offer them, and a failure that says
//! what was tried and what the server would have taken.
//!
//! Order: the key in `$CUTOVER_SSH_KEY` (a private key's text, as CI secrets arrive: parsed in
//! memory, never written anywhere); the identity files (cutover.toml's `identity_file`, else the
//! ssh config's `IdentityFile`s), signing through ssh-agent when it holds the same key so an
//! encrypted file needs no passphrase; then the agent's other keys (none of them with
//! `IdentitiesOnly yes`); then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` when no identity is
//! configured at all, as `ssh` does. A key is offered once, however many ways lead to it.
//!
//! User certificates, as `ssh` finds them: `KEY-cert.pub` beside a key file, the ssh config's
//! `CertificateFile`s, and the certificates an agent holds. A certificate goes first, with the
//! key it certifies (servers that trust a user CA often have no authorized_keys at all); the
//! plain key follows, for a certificate the server refuses (expired, another principal).
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

use russh::client::{self, AuthResult, Handle};
use russh::keys::{self, ssh_key, PrivateKeyWithHashAlg};
use russh::MethodSet;
use ssh_key::{public::KeyData, Certificate, HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use super::Peer;
use crate::config::home_dir;
use crate::remote::ssh_config::{Agent, Endpoint};

/// Environment variable holding the passphrase of an encrypted identity file (or of the key in
/// [`KEY_ENV`]).
pub const PASSPHRASE_ENV: &str = "CUTOVER_SSH_PASSPHRASE";

/// Environment variable holding a private key's text, offered before every other key.
pub const KEY_ENV: &str = "CUTOVER_SSH_KEY";

/// How many times the terminal prompt asks before giving up on a key, as `ssh`.
const PROMPT_ATTEMPTS: usize = 3;

type AgentClient = keys::agent::client::AgentClient<tokio::net::UnixStream>;

/// One key offered (or meant to be), and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// "key /home/me/.ssh/id_ed25519", "ssh-agent key ssh-ed25519 me@laptop", "ssh-agent".
    pub key: String,
    /// "rejected", "no such file", "encrypted, and no passphrase: ...".
    pub why: String,
}

/// How the login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailureReason {
    /// Not one key could be offered.
    NoKeys,
    /// Keys were offered; the server took none.
    NoneAccepted,
    /// A key was accepted, but the server wants another method as well.
    PartialSuccess,
    /// The server hung up after this many keys (its `MaxAuthTries`, usually).
    Closed { after: usize },
}

/// No key logged in: who, where, every key tried and why it failed, and what the server takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct AuthFailure {
    pub peer: Peer,
    pub user: String,
    pub tried: Vec<Tried>,
    /// The methods the server said it would still accept; None when it never said.
    pub server_methods: Option<Vec<String>>,
    pub reason: AuthFailureReason,
}

impl AuthFailure {
    fn message(&self) -> String {
        let mut msg = format!(
            "authentication as {} on {} failed: {}",
            self.user,
            self.peer,
            match &self.reason {
                AuthFailureReason::NoKeys => "no usable key to offer".to_string(),
                AuthFailureReason::NoneAccepted => "the server accepted none of the keys".into(),
                AuthFailureReason::PartialSuccess =>
                    "the key was accepted, but the server requires \
                    another method as well (cutover logs in with a key only)"
                        .into(),
                AuthFailureReason::Closed { after } => format!(
                    "the server closed the connection after {after} key(s) (its MaxAuthTries?)"
                ),
            }
        );
        if !self.tried.is_empty() {
            msg.push_str("; tried:");
            for t in &self.tried {
                msg.push_str(&format!("\n  - {}: {}", t.key, t.why));
            }
        }
        if let Some(methods) = &self.server_methods {
            msg.push_str(&format!(
                "\nthe server accepts: {}",
                if methods.is_empty() {
                    "nothing more".to_string()
                } else {
                    methods.join(", ")
                }
            ));
            if !methods.iter().any(|m| m == "publickey") {
                msg.push_str(" (no public keys: cutover logs in with keys only)");
            }
        }
        msg
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        let user = &self.user;
        match self.reason {
            AuthFailureReason::Closed { .. } => {
                "name the right key with identity_file in cutover.toml, or set IdentitiesOnly yes in \
                 ~/.ssh/config so fewer keys are offered"
                    .into()
            }
            AuthFailureReason::PartialSuccess => format!(
                "let {user} log in with a key alone (AuthenticationMethods in the server's sshd_config), \
                 or deploy as another user"
            ),
            AuthFailureReason::NoKeys => format!(
                "give cutover a key that {user} may log in with: identity_file in cutover.toml, IdentityFile \
                 in ~/.ssh/config, a key in ssh-agent, or {KEY_ENV} (a private key's text, for CI)"
            ),
            AuthFailureReason::NoneAccepted => format!(
                "authorize one of these keys for {user} on {} (its .pub goes into ~/.ssh/authorized_keys \
                 there, e.g. with ssh-copy-id), set identity_file in cutover.toml (or IdentityFile in \
                 ~/.ssh/config), or add the key to ssh-agent with ssh-add",
                self.peer
            ),
        }
    }
}

/// What happened to one offered key.
enum Outcome {
    Accepted,
    Rejected,
    /// The server closed the connection (too many attempts, usually).
    Closed(String),
}

/// The record of one login attempt, for the failure.
struct Attempts {
    tried: Vec<Tried>,
    offered: Vec<KeyData>,
    /// Certificates offered (each once, however many ways lead to it).
    certificates: Vec<Certificate>,
    remaining: Option<MethodSet>,
    partial: bool,
}

impl Attempts {
    /// True the first time `cert` is about to be offered (and remembered as offered).
    fn first_offer_of(&mut self, cert: &Certificate) -> bool {
        if self.certificates.contains(cert) {
            return false;
        }
        self.certificates.push(cert.clone());
        true
    }

    fn note(&mut self, key: impl Into<String>, why: impl Into<String>) {
        self.tried.push(Tried {
            key: key.into(),
            why: why.into(),
        });
    }
}

/// The server hung up in the middle of the login: nothing more can be tried.
struct HungUp;

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
/// `jump` says whether `ep` is a jump host, for the failure's wording.
pub(super) async fn authenticate<H: client::Handler>(
    handle: &mut Handle<H>,
    ep: &Endpoint,
    jump: bool,
) -> Result<String, AuthFailure> {
    let mut log = Attempts {
        tried: Vec::new(),
        offered: Vec::new(),
        certificates: Vec::new(),
        remaining: None,
        partial: false,
    };
    let result = offer_keys(handle, ep, &mut log).await;
    let reason = match result {
        Ok(Some(how)) => return Ok(how),
        Err(HungUp) => AuthFailureReason::Closed {
            after: log.offered.len() + log.certificates.len(),
        },
        Ok(None) if log.offered.is_empty() && log.certificates.is_empty() => {
            AuthFailureReason::NoKeys
        }
        Ok(None) if log.partial => AuthFailureReason::PartialSuccess,
        Ok(None) => AuthFailureReason::NoneAccepted,
    };
    if log.remaining.is_none() && !matches!(reason, AuthFailureReason::Closed { .. }) {
        // Nothing was offered: ask what the server would take, as `ssh` does first.
        if let Ok(AuthResult::Failure {
            remaining_methods, ..
        }) = handle.authenticate_none(ep.user.as_str()).await
        {
            log.remaining = Some(remaining_methods);
        }
    }
    Err(AuthFailure {
        peer: Peer {
            host: ep.host.clone(),
            port: ep.port,
            jump,
        },
        user: ep.user.clone(),
        tried: log.tried,
        server_methods: log.remaining.map(|methods| {
            methods
                .iter()
                .map(|m| <&str>::from(m).to_string())
                .collect()
        }),
        reason,
    })
}

/// Every key in order until one logs in: Some(how it worked), or None when none did.
async fn offer_keys<H: client::Handler>(
    handle: &mut Handle<H>,
    ep: &Endpoint,
    log: &mut Attempts,
) -> Result<Option<String>, HungUp> {
    let user = ep.user.as_str();
    let mut rsa_hash = RsaHash::default();

    // 0. the key in the environment, for CI
    let env_key = env_key_text();
    if let Some(text) = &env_key {
        let label = format!("key ${KEY_ENV}");
        match unlock(text, &label).await {
            Ok(key) => {
                let what = format!(
                    "{label} ({} {})",
                    key.algorithm(),
                    key.fingerprint(HashAlg::Sha256)
                );
                if offer_private_key(handle, user, Arc::new(key), &mut rsa_hash, &what, log).await?
                {
                    return Ok(Some(what));
                }
            }
            Err(why) => log.note(label, why),
        }
    }

    let (mut agent, agent_keys, agent_certificates) = match connect_agent(&ep.agent).await {
        Ok(Some(mut agent)) => match agent.request_identities().await {
            Ok(ids) => {
                let mut keys: Vec<(PublicKey, String)> = Vec::new();
                let mut certificates: Vec<(Certificate, String)> = Vec::new();
                for id in ids {
                    match id {
                        keys::agent::AgentIdentity::PublicKey { key, comment } => {
                            keys.push((key, comment))
                        }
                        keys::agent::AgentIdentity::Certificate {
                            certificate,
                            comment,
                        } => certificates.push((certificate, comment)),
                    }
                }
                (Some(agent), keys, certificates)
            }
            Err(e) => {
                log.note("ssh-agent", format!("cannot list its keys ({e})"));
                (None, Vec::new(), Vec::new())
            }
        },
        Ok(None) => (None, Vec::new(), Vec::new()),
        Err(e) => {
            log.note("ssh-agent", e);
            (None, Vec::new(), Vec::new())
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
                for (file, cert) in certificates_for(Some(path), public, ep, log) {
                    let what = format!("certificate {} via ssh-agent", file.display());
                    if offer_agent_certificate(handle, user, cert, agent, &what, log).await? {
                        return Ok(Some(what));
                    }
                }
                let what = format!("key {} via ssh-agent", path.display());
                match offer_agent_key(handle, user, public, &mut rsa_hash, agent, &what, log)
                    .await?
                {
                    true => return Ok(Some(what)),
                    false => continue,
                }
            }
        }
        let what = format!("key {}", path.display());
        if !path.exists() {
            log.note(what, "no such file");
            continue;
        }
        let key = match load_private_key(path).await {
            Ok(k) => k,
            Err(why) => {
                log.note(what, why);
                continue;
            }
        };
        let key = Arc::new(key);
        for (file, cert) in certificates_for(Some(path), key.public_key(), ep, log) {
            let what = format!("certificate {}", file.display());
            if offer_certificate(handle, user, key.clone(), cert, &what, log).await? {
                return Ok(Some(what));
            }
        }
        if offer_private_key(handle, user, key, &mut rsa_hash, &what, log).await? {
            return Ok(Some(what));
        }
    }

    // 2. the agent's certificates, then its other keys
    if let Some(agent) = agent.as_mut() {
        // (IdentitiesOnly: only those of an identity file's key, as `ssh`)
        let identities: Vec<KeyData> = ep
            .identity_files
            .iter()
            .filter_map(|f| identity_public_key(f))
            .map(|k| k.key_data().clone())
            .collect();
        for (cert, comment) in &agent_certificates {
            let what = format!("ssh-agent certificate {} {comment}", cert.algorithm());
            if ep.identities_only && !identities.contains(cert.public_key()) {
                log.note(what, "not offered (IdentitiesOnly)");
                continue;
            }
            if offer_agent_certificate(handle, user, cert.clone(), agent, &what, log).await? {
                return Ok(Some(what));
            }
        }
        for (key, comment) in &agent_keys {
            if log.offered.contains(key.key_data()) {
                continue;
            }
            let what = format!("ssh-agent key {} {comment}", key.algorithm());
            if ep.identities_only {
                log.note(what, "not offered (IdentitiesOnly)");
                continue;
            }
            if offer_agent_key(handle, user, key, &mut rsa_hash, agent, &what, log).await? {
                return Ok(Some(what));
            }
        }
    }

    // 3. the default key files, when no identity is configured
    if ep.identity_files.is_empty() && env_key.is_none() {
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
            let what = format!("key {}", path.display());
            let key = match load_private_key(&path).await {
                Ok(k) => k,
                Err(why) => {
                    log.note(what, why);
                    continue;
                }
            };
            let key = Arc::new(key);
            for (file, cert) in certificates_for(Some(&path), key.public_key(), ep, log) {
                let what = format!("certificate {}", file.display());
                if offer_certificate(handle, user, key.clone(), cert, &what, log).await? {
                    return Ok(Some(what));
                }
            }
            if offer_private_key(handle, user, key, &mut rsa_hash, &what, log).await? {
                return Ok(Some(what));
            }
        }
    }
    Ok(None)
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
    key: Arc<PrivateKey>,
    rsa_hash: &mut RsaHash,
    what: &str,
    log: &mut Attempts,
) -> Result<bool, HungUp> {
    let data = key.public_key().key_data().clone();
    if log.offered.contains(&data) {
        return Ok(false);
    }
    log.offered.push(data);
    let hash = rsa_hash.for_key(handle, key.algorithm()).await;
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await;
    let outcome = match result {
        Ok(r) => outcome(r, log),
        Err(e) => Outcome::Closed(e.to_string()),
    };
    record(outcome, what, log)
}

#[allow(clippy::too_many_arguments)]
async fn offer_agent_key<H: client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: &PublicKey,
    rsa_hash: &mut RsaHash,
    agent: &mut AgentClient,
    what: &str,
    log: &mut Attempts,
) -> Result<bool, HungUp> {
    if log.offered.contains(key.key_data()) {
        return Ok(false);
    }
    log.offered.push(key.key_data().clone());
    let hash = rsa_hash.for_key(handle, key.algorithm()).await;
    let result = handle
        .authenticate_publickey_with(user, key.clone(), hash, agent)
        .await;
    signed_by_agent(result, handle.is_closed(), what, log)
}

/// The user certificates for `key`, as `ssh` finds them: `FILE-cert.pub` beside its key file
/// `FILE` (or beside `FILE` without `.pub`, for an IdentityFile naming the public half), then the
/// ssh config's `CertificateFile`s; only those that certify this very key. A certificate file
/// that cannot be read as one is noted, not offered.
fn certificates_for(
    file: Option<&Path>,
    key: &PublicKey,
    ep: &Endpoint,
    log: &mut Attempts,
) -> Vec<(PathBuf, Certificate)> {
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(file) = file {
        let stem = match file.to_str().and_then(|f| f.strip_suffix(".pub")) {
            Some(stem) => PathBuf::from(stem),
            None => file.to_path_buf(),
        };
        let mut beside = stem.into_os_string();
        beside.push("-cert.pub");
        // (beside a key: only when there; a configured CertificateFile must be there)
        candidates.push((PathBuf::from(beside), false));
    }
    candidates.extend(ep.certificate_files.iter().map(|f| (f.clone(), true)));
    let mut found = Vec::new();
    for (path, configured) in candidates {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                if configured && e.kind() == std::io::ErrorKind::NotFound {
                    log.note(format!("certificate {}", path.display()), "no such file");
                }
                continue;
            }
        };
        match Certificate::from_openssh(text.trim()) {
            Ok(cert) if cert.public_key() == key.key_data() => found.push((path, cert)),
            Ok(_) => {} // another key's
            Err(e) => log.note(
                format!("certificate {}", path.display()),
                format!("not a usable OpenSSH certificate ({e})"),
            ),
        }
    }
    found
}

/// Offer `cert` with the private key it certifies.
async fn offer_certificate<H: client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: Arc<PrivateKey>,
    cert: Certificate,
    what: &str,
    log: &mut Attempts,
) -> Result<bool, HungUp> {
    if !log.first_offer_of(&cert) {
        return Ok(false);
    }
    let result = handle.authenticate_openssh_cert(user, key, cert).await;
    let outcome = match result {
        Ok(r) => outcome(r, log),
        Err(e) => Outcome::Closed(e.to_string()),
    };
    record(outcome, what, log)
}

/// Offer `cert`, signed by the agent that holds its key.
async fn offer_agent_certificate<H: client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    cert: Certificate,
    agent: &mut AgentClient,
    what: &str,
    log: &mut Attempts,
) -> Result<bool, HungUp> {
    if !log.first_offer_of(&cert) {
        return Ok(false);
    }
    // RSA certificates sign with SHA-512, which every OpenSSH that takes them supports.
    let hash = cert.algorithm().is_rsa().then_some(HashAlg::Sha512);
    let result = handle
        .authenticate_certificate_with(user, cert, hash, agent)
        .await;
    signed_by_agent(result, handle.is_closed(), what, log)
}

/// The end of an offer the agent signs: an error with the connection still open is the agent's
/// (it does not hold the key, or declined): noted, and the next key goes on.
fn signed_by_agent<E: std::fmt::Display>(
    result: Result<AuthResult, E>,
    closed: bool,
    what: &str,
    log: &mut Attempts,
) -> Result<bool, HungUp> {
    let outcome = match result {
        Ok(r) => outcome(r, log),
        Err(e) if closed => Outcome::Closed(e.to_string()),
        Err(e) => {
            log.note(what, format!("the agent did not sign ({e})"));
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

/// True when accepted; [`HungUp`] when the server closed the connection.
fn record(outcome: Outcome, what: &str, log: &mut Attempts) -> Result<bool, HungUp> {
    match outcome {
        Outcome::Accepted => Ok(true),
        Outcome::Rejected => {
            log.note(what, "rejected");
            Ok(false)
        }
        Outcome::Closed(why) => {
            log.note(what, format!("the server closed the connection ({why})"));
            Err(HungUp)
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
    // IdentityFile naming the public key itself (its private half lives in an agent, as
    // 1Password's and Secretive's do): as OpenSSH, the agent's key it names is offered.
    PublicKey::from_openssh(text.trim()).ok()
}

/// Loads a private key (OpenSSH or PEM format), unlocking it when encrypted. The error is the
/// reason to show in the list of tried keys; it never contains the passphrase.
async fn load_private_key(path: &Path) -> Result<PrivateKey, String> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("cannot read it ({e})"))?);
    unlock(&text, &format!("key '{}'", path.display())).await
}

/// `$CUTOVER_SSH_KEY`, tidied the ways CI secrets get mangled: CRLF line ends, surrounding blank
/// space, and a key pasted as one line with literal `\n`s. None when unset or blank.
fn env_key_text() -> Option<Zeroizing<String>> {
    let raw = Zeroizing::new(std::env::var(KEY_ENV).ok()?);
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    let mut text = Zeroizing::new(trimmed.replace("\r\n", "\n"));
    if !text.contains('\n') && text.contains("\\n") {
        text = Zeroizing::new(text.replace("\\n", "\n"));
    }
    text.push('\n');
    Some(text)
}

/// Decodes a private key's text (OpenSSH or PEM format), unlocking it when encrypted; `label`
/// names the key in the terminal prompt. The error is the reason to show in the list of tried
/// keys; it never contains the key or the passphrase.
async fn unlock(text: &Zeroizing<String>, label: &str) -> Result<PrivateKey, String> {
    // PKCS#8 and legacy PEM encryption are only visible in the armour.
    let armoured_encrypted = text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED");
    match keys::decode_secret_key(text, None) {
        Ok(key) => return Ok(key),
        Err(keys::Error::KeyIsEncrypted) => {}
        Err(_) if armoured_encrypted => {}
        Err(e) => return Err(format!("not a usable private key ({e})")),
    }
    // (set but empty is unset, as CI systems leave a missing secret)
    if let Some(pass) = std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty()) {
        let pass = Zeroizing::new(pass);
        return keys::decode_secret_key(text, Some(&pass))
            .map_err(|_| format!("encrypted, and {PASSPHRASE_ENV} does not decrypt it"));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "encrypted, and no passphrase: set {PASSPHRASE_ENV}, add the key to ssh-agent (ssh-add), \
             or run cutover in a terminal to be asked"
        ));
    }
    for _ in 0..PROMPT_ATTEMPTS {
        let prompt = format!("Enter passphrase for {label}: ");
        let answer = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
            .await
            .map_err(|e| format!("cannot ask for the passphrase ({e})"))?
            .map_err(|e| format!("cannot ask for the passphrase ({e})"))?;
        let pass = Zeroizing::new(answer);
        if pass.is_empty() {
            return Err("encrypted; skipped (empty passphrase)".into());
        }
        match keys::decode_secret_key(text, Some(&pass)) {
            Ok(key) => return Ok(key),
            Err(_) => eprintln!("cutover: wrong passphrase for {label}"),
        }
    }
    Err("encrypted; wrong passphrase".into())
}
