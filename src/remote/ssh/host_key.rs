//! Whether to trust the key a server offers: the policy behind russh's
//! `Handler::check_server_key`, and the words for a refusal.
//!
//! russh hands the handler the server's key once its signature over the exchange is verified;
//! trust is ours to decide. The decision follows known_hosts ([`super::super::known_hosts`]) and
//! the endpoint's `host_key_checking`: a known key passes, an unknown one is refused or (with
//! accept-new) recorded, a changed or revoked one is always refused. It lives apart from the
//! connection code because it is the one place where a wrong answer means deploying to an
//! impostor, and because its messages are what a user acts on.

use std::path::PathBuf;

use russh::keys::{ssh_key, PublicKeyOrCertificate};

use super::display_name;
use crate::config::HostKeyChecking;
use crate::remote::known_hosts::{self, HostKeyQuery, Verdict};
use crate::remote::ssh_config::Endpoint;

/// System-wide known_hosts files, read after the user's (as `ssh` does).
const GLOBAL_KNOWN_HOSTS: [&str; 2] = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// What the host key check decided, kept outside the handler (which `connect` consumes) so a
/// refusal can be explained after the handshake fails.
#[derive(Default)]
pub(super) struct HostKeyOutcome {
    pub refusal: Option<String>,
}

/// The known_hosts files and the rules for one host.
pub(super) struct HostKeyPolicy {
    host: String,
    port: u16,
    /// "jump host " for a ProxyJump hop, "" for the target: said in every message.
    role: &'static str,
    files: Vec<PathBuf>,
    /// Where accept-new records a key; None with `UserKnownHostsFile none`.
    user_file: Option<PathBuf>,
    mode: HostKeyChecking,
}

impl HostKeyPolicy {
    pub(super) fn new(ep: &Endpoint, role: &'static str) -> HostKeyPolicy {
        let mut files = ep.known_hosts.clone();
        files.extend(GLOBAL_KNOWN_HOSTS.iter().map(PathBuf::from));
        HostKeyPolicy {
            host: ep.host.clone(),
            port: ep.port,
            role,
            files,
            user_file: ep.known_hosts.first().cloned(),
            mode: ep.host_key_checking,
        }
    }

    /// None when `offered` is trusted (recording it first under accept-new), else why not.
    pub(super) fn judge(&self, offered: &PublicKeyOrCertificate) -> Option<String> {
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
        refusal
    }

    /// Ask for a host key type known_hosts already has for this host, as OpenSSH does: a server
    /// recorded only by its ECDSA key would otherwise offer Ed25519 and look like a changed key.
    ///
    /// Also: never `ssh-rsa` (SHA-1) host key signatures, as OpenSSH 8.8+; and host certificates
    /// first when an `@cert-authority` line vouches for this host, also as OpenSSH.
    pub(super) fn preferred(&self) -> russh::Preferred {
        let files = &self.files;
        let mut preferred = russh::Preferred::default();
        let query = HostKeyQuery {
            host: &self.host,
            port: self.port,
        };
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
