//! Whether to trust the key a server offers: the policy behind russh's
//! `Handler::check_server_key`, and the words for a refusal.
//!
//! russh hands the handler the server's key once its signature over the exchange is verified;
//! trust is ours to decide. The decision follows known_hosts ([`crate::remote::known_hosts`]:
//! `$CUTOVER_KNOWN_HOSTS` first, then the files) and the endpoint's `host_key_checking`: a
//! known key passes, an unknown one is refused or (with accept-new) recorded, a changed or
//! revoked one is always refused. It lives apart from the connection code because it is the
//! one place where a wrong answer means deploying to an impostor, and because its refusals are
//! what a user acts on: each is a [`HostKeyRefusal`] variant with its own message and fix,
//! which `cutover check` reports without reading any text back.

use std::path::PathBuf;

use russh::keys::{ssh_key, PublicKey, PublicKeyOrCertificate};

use super::Peer;
use crate::config::{home_dir, HostKeyChecking};
use crate::remote::known_hosts::{self, HostKeyQuery, KnownKey, Source, Verdict};
use crate::remote::ssh_config::Endpoint;
use crate::shell::quote;

/// System-wide known_hosts files, read after the user's (as `ssh` does).
const GLOBAL_KNOWN_HOSTS: [&str; 2] = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// The key a server offered, as the user will compare it: `ssh-ed25519 SHA256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedKey {
    pub algorithm: String,
    pub fingerprint: String,
}

impl OfferedKey {
    fn of(key: &PublicKey) -> OfferedKey {
        OfferedKey {
            algorithm: key.algorithm().as_str().to_owned(),
            fingerprint: known_hosts::fingerprint(key),
        }
    }
}

impl std::fmt::Display for OfferedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.algorithm, self.fingerprint)
    }
}

/// Why a server's host key was not trusted. Nothing was sent to that server (or through it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyRefusal {
    /// Nothing is recorded for the host, and checking is strict.
    #[error("the host key of {peer} is not known ({key}); nothing was sent")]
    Unknown {
        peer: Peer,
        key: OfferedKey,
        /// Where the key would go (the first known_hosts file).
        known_hosts: PathBuf,
    },
    /// accept-new, but `UserKnownHostsFile none` leaves nowhere to record the key.
    #[error(
        "the host key of {peer} is not known ({key}) and there is no known_hosts file to record \
         it in (UserKnownHostsFile none); nothing was sent"
    )]
    NowhereToRecord { peer: Peer, key: OfferedKey },
    /// accept-new, but writing the key failed.
    #[error("cannot record the host key of {peer} ({key}) in {}: {error}; nothing was sent", file.display())]
    CannotRecord {
        peer: Peer,
        key: OfferedKey,
        file: PathBuf,
        error: String,
    },
    /// The host is recorded, but never with this key.
    #[error("{}", changed_message(peer, offered, known))]
    Changed {
        peer: Peer,
        offered: OfferedKey,
        known: Vec<KnownKey>,
    },
    /// A `@revoked` line carries the key (or the CA that signed its certificate).
    #[error(
        "the host key of {peer} ({key}) is marked @revoked in {origin}:{line}; refusing to connect"
    )]
    Revoked {
        peer: Peer,
        key: OfferedKey,
        origin: Source,
        line: usize,
    },
    /// A known_hosts file exists but cannot be read: it might hold a revocation, so no guess.
    #[error("cannot check the host key of {peer}: {error}")]
    Unreadable { peer: Peer, error: String },
}

fn changed_message(peer: &Peer, offered: &OfferedKey, known: &[KnownKey]) -> String {
    let mut msg =
        format!("HOST KEY CHANGED for {peer}: the server offered {offered}, but known_hosts has:");
    for k in known {
        msg.push_str(&format!(
            "\n  {} {} ({}:{})",
            k.algorithm, k.fingerprint, k.source, k.line
        ));
    }
    msg.push_str(
        "\nThis can be an attack (someone in the middle) or a reinstalled server; nothing was sent",
    );
    msg
}

impl HostKeyRefusal {
    pub fn peer(&self) -> &Peer {
        match self {
            HostKeyRefusal::Unknown { peer, .. }
            | HostKeyRefusal::NowhereToRecord { peer, .. }
            | HostKeyRefusal::CannotRecord { peer, .. }
            | HostKeyRefusal::Changed { peer, .. }
            | HostKeyRefusal::Revoked { peer, .. }
            | HostKeyRefusal::Unreadable { peer, .. } => peer,
        }
    }

    /// What to do about it, as one line a user can copy from.
    pub fn hint(&self) -> String {
        match self {
            HostKeyRefusal::Unknown {
                peer, known_hosts, ..
            } => format!(
                "if this is the right server (compare the fingerprint with its administrator's), add its key: \
                 {}; or set host_key_checking = \"accept-new\"",
                keyscan(peer, known_hosts)
            ),
            HostKeyRefusal::NowhereToRecord { .. } => "set known_hosts in cutover.toml (or \
                UserKnownHostsFile in ~/.ssh/config) to a file cutover may add the key to"
                .into(),
            HostKeyRefusal::CannotRecord { peer, file, .. } => format!(
                "make {} writable, or add the key yourself: {}",
                file.display(),
                keyscan(peer, file)
            ),
            HostKeyRefusal::Changed { peer, known, .. } => {
                let mut files: Vec<String> = Vec::new();
                for k in known {
                    let edit = match k.source.file() {
                        Some(file) => format!(
                            "ssh-keygen -R {} -f {}",
                            quote(&peer.address()),
                            quote(&file.to_string_lossy())
                        ),
                        None => format!("edit {}", k.source),
                    };
                    if !files.contains(&edit) {
                        files.push(edit);
                    }
                }
                format!(
                    "if the server was reinstalled (confirm the new fingerprint with its administrator), remove \
                     the old key ({}), then add the new one",
                    files.join("; ")
                )
            }
            HostKeyRefusal::Revoked { .. } => {
                "the key was revoked on purpose: get the server's current key from its administrator".into()
            }
            HostKeyRefusal::Unreadable { .. } => {
                "make the known_hosts file readable, or set known_hosts in cutover.toml to another file"
                    .into()
            }
        }
    }
}

/// The command that adds the host's keys to `file`, quoted for a shell.
fn keyscan(peer: &Peer, file: &std::path::Path) -> String {
    format!(
        "ssh-keyscan -p {} {} >> {}",
        peer.port,
        quote(&peer.host),
        quote(&file.to_string_lossy())
    )
}

/// The known_hosts sources and the rules for one host.
pub(super) struct HostKeyPolicy {
    peer: Peer,
    /// `$CUTOVER_KNOWN_HOSTS`, the user's files, the system's.
    sources: Vec<Source>,
    /// Where accept-new records a key; None with `UserKnownHostsFile none`.
    user_file: Option<PathBuf>,
    mode: HostKeyChecking,
}

impl HostKeyPolicy {
    pub(super) fn new(ep: &Endpoint, jump: bool) -> HostKeyPolicy {
        let sources = Source::from_env()
            .into_iter()
            .chain(ep.known_hosts.iter().cloned().map(Source::File))
            .chain(GLOBAL_KNOWN_HOSTS.iter().map(|f| Source::File(f.into())))
            .collect();
        HostKeyPolicy {
            peer: Peer {
                host: ep.host.clone(),
                port: ep.port,
                jump,
            },
            sources,
            user_file: ep.known_hosts.first().cloned(),
            mode: ep.host_key_checking,
        }
    }

    fn query(&self) -> HostKeyQuery<'_> {
        HostKeyQuery {
            host: &self.peer.host,
            port: self.peer.port,
        }
    }

    /// Whether to trust `offered`: Ok with the file accept-new recorded it in (None when it was
    /// known already), or why not.
    pub(super) fn judge(
        &self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<Option<PathBuf>, Box<HostKeyRefusal>> {
        let query = self.query();
        let key = offered.public_key();
        let verdict = match offered.certificate() {
            Some(cert) => known_hosts::check_certificate(&self.sources, &query, cert),
            None => known_hosts::check(&self.sources, &query, &key),
        };
        let peer = self.peer.clone();
        let offered_key = OfferedKey::of(&key);
        match verdict {
            Ok(Verdict::Known) => Ok(None),
            Ok(Verdict::Unknown) if self.mode == HostKeyChecking::AcceptNew => {
                let Some(file) = &self.user_file else {
                    return Err(Box::new(HostKeyRefusal::NowhereToRecord {
                        peer,
                        key: offered_key,
                    }));
                };
                match known_hosts::append(file, &query, &key) {
                    Ok(()) => {
                        eprintln!(
                            "cutover: added {peer} ({offered_key}) to {}",
                            file.display()
                        );
                        Ok(Some(file.clone()))
                    }
                    Err(e) => Err(Box::new(HostKeyRefusal::CannotRecord {
                        peer,
                        key: offered_key,
                        file: file.clone(),
                        error: match e {
                            known_hosts::KnownHostsError::Write { error, .. } => error.to_string(),
                            other => other.to_string(),
                        },
                    })),
                }
            }
            Ok(Verdict::Unknown) => Err(Box::new(HostKeyRefusal::Unknown {
                peer,
                key: offered_key,
                known_hosts: self
                    .user_file
                    .clone()
                    .unwrap_or_else(|| home_dir().join(".ssh/known_hosts")),
            })),
            Ok(Verdict::Changed { known }) => Err(Box::new(HostKeyRefusal::Changed {
                peer,
                offered: offered_key,
                known,
            })),
            Ok(Verdict::Revoked { source, line }) => Err(Box::new(HostKeyRefusal::Revoked {
                peer,
                key: offered_key,
                origin: source,
                line,
            })),
            Err(e) => Err(Box::new(HostKeyRefusal::Unreadable {
                peer,
                error: e.to_string(),
            })),
        }
    }

    /// Ask for a host key type known_hosts already has for this host, as OpenSSH does: a server
    /// recorded only by its ECDSA key would otherwise offer Ed25519 and look like a changed key.
    ///
    /// Also: never `ssh-rsa` (SHA-1) host key signatures, as OpenSSH 8.8+; and host certificates
    /// first when an `@cert-authority` line vouches for this host, also as OpenSSH.
    pub(super) fn preferred(&self) -> russh::Preferred {
        let files = &self.sources;
        let mut preferred = russh::Preferred::default();
        let query = self.query();
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
}
