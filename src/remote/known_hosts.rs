//! Host key verification against OpenSSH `known_hosts` files.
//!
//! Before cutover touches a server it must decide whether the host key that server just
//! presented is one the operator trusts. Operators already keep that trust for `ssh` in
//! `known_hosts` files, so the only acceptable answer is the one `ssh` itself would give: if we
//! trusted a key `ssh` rejects we could deploy to an impostor, and if we rejected keys `ssh`
//! accepts, people would learn to wave the warning through.
//!
//! We do not use `russh::keys::check_known_hosts` because it disagrees with `ssh` exactly where
//! it matters: it reads only `~/.ssh/known_hosts` (never `/etc/ssh/ssh_known_hosts`), compares
//! host names literally (no `*`/`?` wildcards, no `!` negation), and knows no markers, so a key
//! under `@revoked` is not refused and `@cert-authority` lines are useless. It also only splits
//! fields on single spaces.
//!
//! What we reproduce from OpenSSH (`hostfile.c`, `match.c`, `sshconnect.c`), each point
//! cross-checked against the `ssh` client of OpenSSH 9.2:
//!
//! * Hosts are looked up as `host` on port 22 and as `[host]:port` otherwise, lowercased.
//!   When *nothing* is recorded under `[host]:port`, `ssh` retries "without port identifier":
//!   a bare `host` line carrying exactly the offered key is accepted, while a different key
//!   under the bare name is not treated as a conflict.
//! * Every recorded key of the host counts, whatever its type: a host known only by its ECDSA
//!   key that now offers an Ed25519 key is [`Verdict::Changed`], not new. `ssh` avoids tripping
//!   over this by asking servers for key types it already knows first; [`known_algorithms`]
//!   lets the caller do the same with russh's preferred algorithm list.
//! * Lines that do not parse are skipped rather than failing the whole check, so one mangled
//!   line does not lock the user out of every host.
//!
//! Where we are deliberately stricter than `ssh`:
//!
//! * A key under `@revoked` is refused for every host, whatever the patterns on that line say
//!   (`ssh` only honours revocations whose patterns match the host). Someone revoked that key on
//!   purpose; a deploy tool has no business accepting it anywhere.
//! * A host certificate must list the host among its principals. `ssh` accepts a certificate
//!   with no principals for any host its CA is trusted for, which lets any server holding such a
//!   certificate impersonate all the others.
//!
//! Not covered: `CheckHostIP` (off by default since OpenSSH 8.5), `HostKeyAlias`,
//! `KnownHostsCommand`, key revocation lists (`RevokedHostKeys`) and `UpdateHostKeys`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::iter;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{
    self, certificate::CertType, known_hosts::HostPatterns, public::KeyData, Algorithm,
    Certificate, HashAlg, PublicKey,
};
use sha1::Sha1;

use super::pattern;

/// The port `ssh` leaves out of the name it files a host under.
const DEFAULT_PORT: u16 = 22;

/// Length of the salt in a hashed host name. OpenSSH ignores lines whose salt is any other
/// length, so we do too rather than matching lines `ssh` would not.
const HASHED_NAME_SALT_LEN: usize = 20;

/// The server we are about to trust, named as the user configured it (not a resolved address,
/// since that is not what `ssh` records): a host name or an IP address without brackets, plus
/// the port we connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostKeyQuery<'a> {
    pub host: &'a str,
    pub port: u16,
}

/// What the `known_hosts` files say about the key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host carries exactly this key (or, for [`check_certificate`], a CA
    /// trusted for this host issued a valid certificate), and nothing involved is revoked.
    Known,
    /// Nothing is recorded for this host: trusting the key is a first-contact decision.
    Unknown,
    /// The host is recorded, but never with this key. Either the server was re-keyed or someone
    /// is in the middle; `known` lists what we expected so the user can tell which.
    Changed { known: Vec<KnownKey> },
    /// A `@revoked` line carries this key (or, for certificates, the CA that signed it). Refuse,
    /// whatever else the files say.
    Revoked { source: Source, line: usize },
}

/// Where known_hosts lines come from: a file, or the `CUTOVER_KNOWN_HOSTS` environment variable
/// (CI secrets arrive as variables; writing them to a file first would only add a file to leak
/// and to clean up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Lines given in the environment, matched before every file.
    Env(String),
    File(PathBuf),
}

/// Environment variable holding known_hosts lines.
pub const KNOWN_HOSTS_ENV: &str = "CUTOVER_KNOWN_HOSTS";

impl Source {
    /// `$CUTOVER_KNOWN_HOSTS` as a source when it is set and not empty.
    pub fn from_env() -> Option<Source> {
        std::env::var(KNOWN_HOSTS_ENV)
            .ok()
            .filter(|lines| !lines.trim().is_empty())
            .map(Source::Env)
    }

    /// The file, for advice that edits it; None for the environment's lines.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Source::Env(_) => None,
            Source::File(path) => Some(path),
        }
    }
}

impl From<PathBuf> for Source {
    fn from(path: PathBuf) -> Source {
        Source::File(path)
    }
}

/// Names the source as messages do: the file's path, or `$CUTOVER_KNOWN_HOSTS`.
impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(_) => write!(f, "${KNOWN_HOSTS_ENV}"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A key recorded for a host, described the way `ssh` reports an "offending key", so the user
/// can find the line and compare fingerprints out of band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    pub source: Source,
    /// 1-based, counting every line of the source (comments and blank lines included).
    pub line: usize,
    /// `SHA256:...`, as printed by `ssh-keygen -l`.
    pub fingerprint: String,
    /// The key's algorithm name as written in the file, e.g. `ssh-ed25519`.
    pub algorithm: String,
}

/// Why the files could not give an answer, or a key could not be recorded.
///
/// The underlying cause is part of the message rather than a `source()`: these errors end up
/// in one-line refusals printed with `{}`, where "Permission denied" is the useful part.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// An existing file could not be read. Unlike a missing file this is not "no opinion":
    /// the file may hold the very revocation that should stop us, so we refuse to guess.
    #[error("cannot read known_hosts file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot add host key to {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    /// The host name would not read back as the same single literal name, e.g. because it
    /// contains whitespace, a newline or pattern characters.
    #[error("refusing to record host name {0:?} in known_hosts")]
    UnrecordableHost(String),
    #[error("cannot encode host key: {0}")]
    EncodeKey(ssh_key::Error),
}

/// Checks a plain host key against every source in `sources`; files that do not exist are
/// skipped.
/// `ssh` reads `~/.ssh/known_hosts`, `~/.ssh/known_hosts2`, `/etc/ssh/ssh_known_hosts` and
/// `/etc/ssh/ssh_known_hosts2` by default. The order only decides which line a verdict names.
///
/// `@cert-authority` lines play no part here: they vouch for certificates, not keys.
pub fn check(
    sources: &[Source],
    query: &HostKeyQuery,
    key: &PublicKey,
) -> Result<Verdict, KnownHostsError> {
    let entries = load(sources)?;
    Ok(key_verdict(&entries, query, key.key_data()))
}

/// Checks a host certificate: it is [`Verdict::Known`] when a `@cert-authority` line for this
/// host carries the CA that signed it and the certificate is a host certificate, valid now,
/// issued for this host name, with a good signature and no critical options.
///
/// A certificate that fails any of that is judged as the plain key inside it, exactly as `ssh`
/// does, so the verdict is then whatever [`check`] says about that key. Note that this means an
/// expired certificate for a host with no plain key recorded comes back [`Verdict::Unknown`];
/// only a caller that would accept an unknown key at first contact will accept it.
pub fn check_certificate(
    sources: &[Source],
    query: &HostKeyQuery,
    cert: &Certificate,
) -> Result<Verdict, KnownHostsError> {
    let entries = load(sources)?;
    if let Some(revoked) = find_revoked(&entries, &[cert.public_key(), cert.signature_key()]) {
        return Ok(revoked);
    }
    if certificate_is_trusted(&entries, query, cert) {
        return Ok(Verdict::Known);
    }
    Ok(key_verdict(&entries, query, cert.public_key()))
}

/// Records `key` for the host the way `ssh -o StrictHostKeyChecking=accept-new` does: one
/// plain (unhashed) line, `host` for port 22 and `[host]:port` otherwise, lowercased, without
/// a comment. A missing file is created `0600` and missing directories `0700`: the file lists
/// every server the user reaches, and `~/.ssh` is private anyway.
pub fn append(file: &Path, query: &HostKeyQuery, key: &PublicKey) -> Result<(), KnownHostsError> {
    if !is_recordable_host(query.host) {
        return Err(KnownHostsError::UnrecordableHost(query.host.to_owned()));
    }
    let key_text = PublicKey::from(key.key_data().clone())
        .to_openssh()
        .map_err(KnownHostsError::EncodeKey)?;
    let write_error = |error| KnownHostsError::Write {
        path: file.to_path_buf(),
        error,
    };

    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(write_error)?;
    }
    let mut out = open_private_for_append(file).map_err(write_error)?;
    // A last line without its newline (hand edits do that) would swallow ours.
    let separator = if ends_with_newline(&mut out).map_err(write_error)? {
        ""
    } else {
        "\n"
    };
    let record = format!("{separator}{} {key_text}\n", query.lookup_name());
    // One write, so concurrent appends through O_APPEND cannot interleave within a line.
    out.write_all(record.as_bytes()).map_err(write_error)
}

/// The fingerprint users compare against, in the `SHA256:<base64>` form `ssh` and
/// `ssh-keygen -l` print.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Algorithms of the plain keys recorded for this host, in file order, without repeats.
///
/// Every recorded key counts when judging the host (see the module docs), so a client that lets
/// the server pick an algorithm we have no key for gets [`Verdict::Changed`] from a perfectly
/// healthy server. `ssh` prevents that by offering known algorithms first; move these to the
/// front of russh's `Preferred::key`. These are key types: an `ssh-rsa` key is negotiated as
/// `rsa-sha2-512` or `rsa-sha2-256` (`Algorithm::Rsa { hash: Some(..) }`), so promote those.
pub fn known_algorithms(
    sources: &[Source],
    query: &HostKeyQuery,
) -> Result<Vec<Algorithm>, KnownHostsError> {
    let entries = load(sources)?;
    let algorithms_under = |name: &str| {
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for entry in recorded_keys(&entries, name) {
            let algorithm = entry.key.algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        algorithms
    };
    let algorithms = algorithms_under(&query.lookup_name());
    Ok(match query.name_without_port() {
        Some(bare) if algorithms.is_empty() => algorithms_under(&bare),
        _ => algorithms,
    })
}

/// True when an `@cert-authority` line vouches for this host. `ssh` then asks the server for a
/// host certificate first; without one, certificates stay unrequested, so a server's certificate
/// cannot displace the plain key known_hosts records for it.
pub fn has_cert_authority(
    sources: &[Source],
    query: &HostKeyQuery,
) -> Result<bool, KnownHostsError> {
    let entries = load(sources)?;
    let names: Vec<String> = iter::once(query.lookup_name())
        .chain(query.name_without_port())
        .collect();
    Ok(entries.iter().any(|entry| {
        entry.marker == Marker::CertAuthority
            && names.iter().any(|name| host_matches(&entry.hosts, name))
    }))
}

impl HostKeyQuery<'_> {
    /// The name `ssh` files this host under. Lowercased because `ssh` lowercases host names
    /// before matching and before hashing.
    fn lookup_name(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        if self.port == DEFAULT_PORT {
            host
        } else {
            format!("[{host}]:{}", self.port)
        }
    }

    /// The bare name `ssh` falls back to on a non-default port when nothing is recorded under
    /// `[host]:port`.
    fn name_without_port(&self) -> Option<String> {
        (self.port != DEFAULT_PORT).then(|| self.host.to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

/// One line of a `known_hosts` file that parsed.
struct Entry<'a> {
    source: &'a Source,
    line: usize,
    marker: Marker,
    hosts: String,
    key: KeyData,
}

impl Entry<'_> {
    fn known_key(&self) -> KnownKey {
        KnownKey {
            source: self.source.clone(),
            line: self.line,
            fingerprint: self.key.fingerprint(HashAlg::Sha256).to_string(),
            algorithm: self.key.algorithm().as_str().to_owned(),
        }
    }
}

fn load(sources: &[Source]) -> Result<Vec<Entry<'_>>, KnownHostsError> {
    let mut entries = Vec::new();
    for source in sources {
        let bytes = match source {
            Source::Env(lines) => lines.as_bytes().to_vec(),
            Source::File(file) => match fs::read(file) {
                Ok(bytes) => bytes,
                // Neither the user nor the system file has to exist.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(KnownHostsError::Read {
                        path: file.clone(),
                        error,
                    })
                }
            },
        };
        // Invalid UTF-8 only spoils the line it is on, as it would for `ssh`.
        let text = String::from_utf8_lossy(&bytes);
        for (index, line) in text.lines().enumerate() {
            if let Some((marker, hosts, key)) = parse_line(line) {
                entries.push(Entry {
                    source,
                    line: index + 1,
                    marker,
                    hosts: hosts.to_owned(),
                    key,
                });
            }
        }
    }
    Ok(entries)
}

/// Splits a line into marker, host patterns and key. We tokenize ourselves rather than use
/// `ssh_key::known_hosts`, which only accepts single spaces between fields while `ssh` takes
/// any run of spaces and tabs. Whatever follows the key is a comment.
fn parse_line(line: &str) -> Option<(Marker, &str, KeyData)> {
    let mut fields = line.split([' ', '\t']).filter(|field| !field.is_empty());
    let mut hosts = fields.next()?;
    if hosts.starts_with('#') {
        return None;
    }
    let marker = match hosts {
        "@cert-authority" => Marker::CertAuthority,
        "@revoked" => Marker::Revoked,
        _ => Marker::None,
    };
    if marker != Marker::None {
        hosts = fields.next()?;
    }
    // An unknown marker, or a second one: `ssh` ignores the line.
    if hosts.starts_with('@') {
        return None;
    }
    let algorithm = fields.next()?;
    let base64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{algorithm} {base64}")).ok()?;
    Some((marker, hosts, key.key_data().clone()))
}

fn key_verdict(entries: &[Entry], query: &HostKeyQuery, key: &KeyData) -> Verdict {
    if let Some(revoked) = find_revoked(entries, &[key]) {
        return revoked;
    }
    match plain_verdict(entries, &query.lookup_name(), key) {
        // `ssh`'s retry "without port identifier" can only turn unknown into known.
        Verdict::Unknown => match query.name_without_port() {
            Some(bare) if plain_verdict(entries, &bare, key) == Verdict::Known => Verdict::Known,
            _ => Verdict::Unknown,
        },
        verdict => verdict,
    }
}

/// The verdict from plain (unmarked) lines under one name, ignoring revocation.
fn plain_verdict(entries: &[Entry], name: &str, key: &KeyData) -> Verdict {
    let recorded: Vec<&Entry> = recorded_keys(entries, name).collect();
    if recorded.is_empty() {
        Verdict::Unknown
    } else if recorded.iter().any(|entry| entry.key == *key) {
        Verdict::Known
    } else {
        Verdict::Changed {
            known: recorded.iter().map(|entry| entry.known_key()).collect(),
        }
    }
}

fn recorded_keys<'e, 'f>(
    entries: &'e [Entry<'f>],
    name: &'e str,
) -> impl Iterator<Item = &'e Entry<'f>> {
    entries
        .iter()
        .filter(move |entry| entry.marker == Marker::None && host_matches(&entry.hosts, name))
}

/// Host patterns are deliberately ignored: see the module docs.
fn find_revoked(entries: &[Entry], keys: &[&KeyData]) -> Option<Verdict> {
    entries
        .iter()
        .find(|entry| entry.marker == Marker::Revoked && keys.contains(&&entry.key))
        .map(|entry| Verdict::Revoked {
            source: entry.source.clone(),
            line: entry.line,
        })
}

fn certificate_is_trusted(entries: &[Entry], query: &HostKeyQuery, cert: &Certificate) -> bool {
    let ca = cert.signature_key();
    let names: Vec<String> = iter::once(query.lookup_name())
        .chain(query.name_without_port())
        .collect();
    let ca_vouches_for_host = entries.iter().any(|entry| {
        entry.marker == Marker::CertAuthority
            && entry.key == *ca
            && names.iter().any(|name| host_matches(&entry.hosts, name))
    });
    // Principals name the host itself, never `[host]:port`; `ssh` compares them exactly with
    // the lowercased host name.
    let host = query.host.to_ascii_lowercase();
    ca_vouches_for_host
        && cert.cert_type() == CertType::Host
        && cert.valid_principals().contains(&host)
        // We understand no critical options, and a certificate that sets one we ignore would
        // be trusted for more than its issuer meant.
        && cert.critical_options().is_empty()
        // Verifies the CA's signature and that now is inside the validity window.
        && cert.validate([&ca.fingerprint(HashAlg::Sha256)]).is_ok()
}

/// OpenSSH's `match_hostname`. The field is either one hashed name, or a comma-separated list
/// of patterns where a matching `!pattern` vetoes the whole line, even if another pattern
/// matched. `name` must already be lowercase; patterns are lowercased.
fn host_matches(patterns: &str, name: &str) -> bool {
    if patterns.starts_with('|') {
        return hashed_name_matches(patterns, name);
    }
    pattern::list_matches(patterns.split(','), name, true)
}

/// A hashed entry `|1|salt|hash` stores HMAC-SHA1(salt, name) instead of the name, so the only
/// way to match it is to hash the name we are looking for with that line's salt.
fn hashed_name_matches(field: &str, name: &str) -> bool {
    let Ok(HostPatterns::HashedName { salt, hash }) = field.parse::<HostPatterns>() else {
        return false;
    };
    if salt.len() != HASHED_NAME_SALT_LEN {
        return false;
    }
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// Whether `host` reads back from a `known_hosts` line as this one literal name. Anything that
/// would end the field, start a new line or act as pattern or marker syntax would change what
/// the line means, or smuggle in a second one.
fn is_recordable_host(host: &str) -> bool {
    !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "*?!,|@#[]".contains(c))
}

fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

fn open_private_for_append(file: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::public::Ed25519PublicKey;
    use std::process::Command;
    use tempfile::TempDir;

    /// Real keys made with `ssh-keygen`, with the fingerprints it printed for them.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAs6SlXX08Ac1htdipbDgJOv5UIlpOYCW/jwim+XoRL9";
    const ED25519_FINGERPRINT: &str = "SHA256:76gd1CjQJEbuTlzmcpoXAERoGsQ0rOAxW1QvK0TYzc8";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBulGKNPBvAIPW85nyUEPFY4i2wpW4TD9FNte3N3sccLeZq0rvBYGQSM3+HW8/KwwFENujzVvNr4ZW+hKdmMlkA=";
    const ECDSA_FINGERPRINT: &str = "SHA256:re9EoWxWIX0/wqrRpSJiFHivRROihb+jYYUsSSLcUD8";

    /// `ssh-keygen -H` output for `deploy.example.com` and `[deploy.example.com]:2222`,
    /// both with the `ED25519` key.
    const HASHED_PORT_22: &str = "|1|MCcLfvD027vnpuHA19l01DURbFI=|zkO4ur4Mgh6GX4HTAVPY7EQRyCY=";
    const HASHED_PORT_2222: &str = "|1|Ohxx3QB6VD9L5DlE70NLQjJDQ0M=|yGDiceCMTrQttPofNJgqdkrNF6c=";

    fn parse(key: &str) -> PublicKey {
        PublicKey::from_openssh(key).unwrap()
    }

    /// A distinct, deterministic Ed25519 key per `seed`, for tests that only need "some key".
    fn ed25519(seed: u8) -> PublicKey {
        PublicKey::from(KeyData::Ed25519(Ed25519PublicKey([seed; 32])))
    }

    fn text(key: &PublicKey) -> String {
        key.to_openssh().unwrap()
    }

    fn sources(files: &[PathBuf]) -> Vec<Source> {
        files.iter().cloned().map(Source::File).collect()
    }

    // The functions under test, on files only (most tests need no other source).
    fn check(
        files: &[PathBuf],
        query: &HostKeyQuery,
        key: &PublicKey,
    ) -> Result<Verdict, KnownHostsError> {
        super::check(&sources(files), query, key)
    }

    fn check_certificate(
        files: &[PathBuf],
        query: &HostKeyQuery,
        cert: &Certificate,
    ) -> Result<Verdict, KnownHostsError> {
        super::check_certificate(&sources(files), query, cert)
    }

    fn known_algorithms(
        files: &[PathBuf],
        query: &HostKeyQuery,
    ) -> Result<Vec<Algorithm>, KnownHostsError> {
        super::known_algorithms(&sources(files), query)
    }

    fn at(host: &str, port: u16) -> HostKeyQuery<'_> {
        HostKeyQuery { host, port }
    }

    struct Dir(TempDir);

    impl Dir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.path(name);
            fs::write(&path, contents).unwrap();
            path
        }
    }

    /// Checks `key` against a single file holding `contents`.
    fn verdict(contents: &str, query: HostKeyQuery, key: &PublicKey) -> Verdict {
        let dir = Dir::new();
        let file = dir.file("known_hosts", contents);
        check(&[file], &query, key).unwrap()
    }

    fn changed_lines(verdict: Verdict) -> Vec<usize> {
        match verdict {
            Verdict::Changed { known } => known.iter().map(|known| known.line).collect(),
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    /// Runs `ssh-keygen` with `args` followed by `path`. Tests that need it fail loudly rather
    /// than skip, so a machine without OpenSSH cannot silently drop their coverage.
    fn ssh_keygen(args: &[&str], path: &Path) {
        let output = Command::new("ssh-keygen")
            .args(args)
            .arg(path)
            .output()
            .expect("ssh-keygen must be installed (openssh-client) to run these tests");
        assert!(
            output.status.success(),
            "ssh-keygen {args:?} {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn plain_entry_is_known() {
        let key = parse(ED25519);
        let file = format!("deploy.example.com {ED25519}\n");
        assert_eq!(
            verdict(&file, at("deploy.example.com", 22), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("other.example.com", 22), &key),
            Verdict::Unknown
        );
    }

    #[test]
    fn any_name_in_a_comma_list_matches() {
        let key = parse(ED25519);
        let file = format!("web1,deploy.example.com,192.0.2.7 {ED25519} comment\n");
        for host in ["web1", "deploy.example.com", "192.0.2.7"] {
            assert_eq!(verdict(&file, at(host, 22), &key), Verdict::Known, "{host}");
        }
        assert_eq!(verdict(&file, at("web", 22), &key), Verdict::Unknown);
    }

    #[test]
    fn other_ports_are_filed_as_bracketed_host_and_port() {
        let key = parse(ED25519);
        let file = format!("[deploy.example.com]:2222 {ED25519}\n");
        assert_eq!(
            verdict(&file, at("deploy.example.com", 2222), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("deploy.example.com", 22), &key),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&file, at("deploy.example.com", 2200), &key),
            Verdict::Unknown
        );
        // The brackets are literal, not a character class.
        let glob = format!("[deploy.example.com]:22* {ED25519}\n");
        assert_eq!(
            verdict(&glob, at("deploy.example.com", 2222), &key),
            Verdict::Known
        );
    }

    #[test]
    fn bare_host_line_only_vouches_for_its_exact_key_on_other_ports() {
        let key = parse(ED25519);
        let same = format!("deploy.example.com {ED25519}\n");
        assert_eq!(
            verdict(&same, at("deploy.example.com", 2222), &key),
            Verdict::Known
        );
        let different = format!("deploy.example.com {}\n", text(&ed25519(1)));
        assert_eq!(
            verdict(&different, at("deploy.example.com", 2222), &key),
            Verdict::Unknown
        );
        // Once the port has lines of its own, the bare name is not consulted.
        let both = format!(
            "[deploy.example.com]:2222 {}\ndeploy.example.com {ED25519}\n",
            text(&ed25519(1))
        );
        assert_eq!(
            changed_lines(verdict(&both, at("deploy.example.com", 2222), &key)),
            [1]
        );
    }

    #[test]
    fn hashed_names_from_ssh_keygen_match() {
        let key = parse(ED25519);
        let file = format!("{HASHED_PORT_22} {ED25519}\n{HASHED_PORT_2222} {ED25519}\n");
        assert_eq!(
            verdict(&file, at("deploy.example.com", 22), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("Deploy.Example.COM", 2222), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("deploy.example.org", 22), &key),
            Verdict::Unknown
        );
        // Only the port-22 line can answer for port 2200, through the bare-name fallback.
        let port_2222_only = format!("{HASHED_PORT_2222} {ED25519}\n");
        assert_eq!(
            verdict(&port_2222_only, at("deploy.example.com", 2200), &key),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&file, at("deploy.example.com", 2200), &key),
            Verdict::Known
        );
    }

    #[test]
    fn hashed_name_is_hmac_sha1_of_the_name_keyed_by_the_salt() {
        let salt = vec![7u8; HASHED_NAME_SALT_LEN];
        let hash = Hmac::<Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[db.internal]:2222")
            .finalize()
            .into_bytes();
        let field = HostPatterns::HashedName {
            salt,
            hash: hash.into(),
        }
        .to_string();
        assert!(field.starts_with("|1|"), "{field}");

        let key = parse(ED25519);
        let file = format!("{field} {ED25519}\n");
        assert_eq!(
            verdict(&file, at("db.internal", 2222), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("db.internal", 22), &key),
            Verdict::Unknown
        );
        assert_eq!(
            changed_lines(verdict(&file, at("db.internal", 2222), &ed25519(1))),
            [1]
        );
    }

    #[test]
    fn files_hashed_by_ssh_keygen_now_match() {
        let dir = Dir::new();
        let file = dir.file(
            "known_hosts",
            &format!("deploy.example.com {ED25519}\n[deploy.example.com]:2222 {ECDSA}\n"),
        );
        ssh_keygen(&["-H", "-f"], &file);
        let hashed = fs::read_to_string(&file).unwrap();
        assert!(!hashed.contains("deploy"), "not hashed: {hashed}");

        let files = [file];
        let known = |host, port, key: &str| check(&files, &at(host, port), &parse(key)).unwrap();
        assert_eq!(known("deploy.example.com", 22, ED25519), Verdict::Known);
        assert_eq!(known("deploy.example.com", 2222, ECDSA), Verdict::Known);
        assert_eq!(known("deploy.example.com", 2223, ECDSA), Verdict::Unknown);
    }

    #[test]
    fn star_matches_any_run_of_characters() {
        let key = parse(ED25519);
        let file = format!("*.example.com {ED25519}\n");
        assert_eq!(
            verdict(&file, at("web.example.com", 22), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("a.b.example.com", 22), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("example.com", 22), &key),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&file, at("web.example.community", 22), &key),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&format!("* {ED25519}\n"), at("anything", 4242), &key),
            Verdict::Known
        );
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        let key = parse(ED25519);
        let file = format!("web?.example.com {ED25519}\n");
        assert_eq!(
            verdict(&file, at("web1.example.com", 22), &key),
            Verdict::Known
        );
        assert_eq!(
            verdict(&file, at("web.example.com", 22), &key),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&file, at("web12.example.com", 22), &key),
            Verdict::Unknown
        );
    }

    #[test]
    fn a_matching_negation_vetoes_the_whole_line() {
        let key = parse(ED25519);
        for hosts in [
            "*.example.com,!db.example.com",
            "!db.example.com,*.example.com",
        ] {
            let file = format!("{hosts} {ED25519}\n");
            assert_eq!(
                verdict(&file, at("db.example.com", 22), &key),
                Verdict::Unknown,
                "{hosts}"
            );
            assert_eq!(
                verdict(&file, at("web.example.com", 22), &key),
                Verdict::Known,
                "{hosts}"
            );
        }
        // A negation alone never makes a line apply.
        let only_negated = format!("!db.example.com {ED25519}\n");
        assert_eq!(
            verdict(&only_negated, at("web.example.com", 22), &key),
            Verdict::Unknown
        );
        // A vetoed line does not count as a conflicting key either.
        let vetoed = format!("*,!db.example.com {}\n", text(&ed25519(1)));
        assert_eq!(
            verdict(&vetoed, at("db.example.com", 22), &key),
            Verdict::Unknown
        );
    }

    #[test]
    fn host_names_match_case_insensitively() {
        let key = parse(ED25519);
        let file = format!("Deploy.EXAMPLE.com {ED25519}\n");
        assert_eq!(
            verdict(&file, at("deploy.example.COM", 22), &key),
            Verdict::Known
        );
    }

    #[test]
    fn any_of_several_keys_is_known_and_all_are_listed_when_none_matches() {
        let (first, second) = (ed25519(1), ed25519(2));
        let file = format!(
            "deploy.example.com {}\ndeploy.example.com {}\ndeploy.example.com {ECDSA}\n",
            text(&first),
            text(&second)
        );
        let deploy = at("deploy.example.com", 22);
        assert_eq!(verdict(&file, deploy, &first), Verdict::Known);
        assert_eq!(verdict(&file, deploy, &second), Verdict::Known);
        assert_eq!(verdict(&file, deploy, &parse(ECDSA)), Verdict::Known);
        assert_eq!(
            changed_lines(verdict(&file, deploy, &ed25519(3))),
            [1, 2, 3]
        );
    }

    #[test]
    fn fields_may_be_separated_by_runs_of_spaces_and_tabs() {
        let key = parse(ED25519);
        let (algorithm, base64) = ED25519.split_once(' ').unwrap();
        let file =
            format!(" \t deploy.example.com\t\t{algorithm}  \t{base64}\tcomment with  spaces\r\n");
        assert_eq!(
            verdict(&file, at("deploy.example.com", 22), &key),
            Verdict::Known
        );
        let marked = format!("@revoked\tdeploy.example.com \t{algorithm}\t{base64}\n");
        assert!(matches!(
            verdict(&marked, at("deploy.example.com", 22), &key),
            Verdict::Revoked { line: 1, .. }
        ));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_but_still_counted() {
        let file = format!(
            "# deploy.example.com {ED25519}\n\n   \n\t# indented comment\ndeploy.example.com {ECDSA} # trailing\n"
        );
        let deploy = at("deploy.example.com", 22);
        assert_eq!(verdict(&file, deploy, &parse(ECDSA)), Verdict::Known);
        assert_eq!(changed_lines(verdict(&file, deploy, &parse(ED25519))), [5]);
    }

    #[test]
    fn changed_names_every_recorded_key_by_file_line_and_fingerprint() {
        let dir = Dir::new();
        let user = dir.file(
            "known_hosts",
            &format!("# mine\ndeploy.example.com {ED25519}\n"),
        );
        let system = dir.file(
            "ssh_known_hosts",
            &format!("other {ED25519}\n*.example.com {ECDSA}\n"),
        );
        let offered = ed25519(9);
        let verdict = check(
            &[user.clone(), system.clone()],
            &at("deploy.example.com", 22),
            &offered,
        )
        .unwrap();
        assert_eq!(
            verdict,
            Verdict::Changed {
                known: vec![
                    KnownKey {
                        source: Source::File(user),
                        line: 2,
                        fingerprint: ED25519_FINGERPRINT.into(),
                        algorithm: "ssh-ed25519".into(),
                    },
                    KnownKey {
                        source: Source::File(system),
                        line: 2,
                        fingerprint: ECDSA_FINGERPRINT.into(),
                        algorithm: "ecdsa-sha2-nistp256".into(),
                    },
                ]
            }
        );
    }

    #[test]
    fn a_host_known_only_by_another_key_type_has_changed() {
        // Verified against OpenSSH 9.2: "REMOTE HOST IDENTIFICATION HAS CHANGED ... Offending
        // ECDSA key", even with StrictHostKeyChecking=accept-new.
        let file = format!("deploy.example.com {ECDSA}\n");
        assert_eq!(
            changed_lines(verdict(
                &file,
                at("deploy.example.com", 22),
                &parse(ED25519)
            )),
            [1]
        );
    }

    #[test]
    fn unknown_when_no_line_is_for_this_host() {
        let file = format!("web.example.com {ED25519}\n[deploy.example.com]:2222 {ECDSA}\n");
        assert_eq!(
            verdict(&file, at("deploy.example.com", 22), &parse(ED25519)),
            Verdict::Unknown
        );
        assert_eq!(
            verdict("", at("deploy.example.com", 22), &parse(ED25519)),
            Verdict::Unknown
        );
    }

    #[test]
    fn revoked_beats_everything_and_ignores_host_patterns() {
        let key = parse(ED25519);
        let deploy = at("deploy.example.com", 22);
        let trusted_and_revoked =
            format!("deploy.example.com {ED25519}\n@revoked deploy.example.com {ED25519}\n");
        assert!(matches!(
            verdict(&trusted_and_revoked, deploy, &key),
            Verdict::Revoked { line: 2, .. }
        ));
        let revoked_elsewhere = format!("deploy.example.com {ED25519}\n@revoked other {ED25519}\n");
        assert!(matches!(
            verdict(&revoked_elsewhere, deploy, &key),
            Verdict::Revoked { line: 2, .. }
        ));
        // Revoking some other key of the host changes nothing for this one.
        let other_revoked = format!(
            "deploy.example.com {ED25519}\n@revoked * {}\n",
            text(&ed25519(1))
        );
        assert_eq!(verdict(&other_revoked, deploy, &key), Verdict::Known);
    }

    #[test]
    fn revocation_in_a_later_file_still_wins() {
        let dir = Dir::new();
        let user = dir.file("known_hosts", &format!("deploy.example.com {ED25519}\n"));
        let system = dir.file("ssh_known_hosts", &format!("@revoked * {ED25519}\n"));
        assert_eq!(
            check(
                &[user, system.clone()],
                &at("deploy.example.com", 22),
                &parse(ED25519)
            )
            .unwrap(),
            Verdict::Revoked {
                source: Source::File(system),
                line: 1
            }
        );
    }

    #[test]
    fn cert_authority_lines_do_not_vouch_for_plain_keys() {
        let file = format!("@cert-authority deploy.example.com {ED25519}\n");
        assert_eq!(
            verdict(&file, at("deploy.example.com", 22), &parse(ED25519)),
            Verdict::Unknown
        );
    }

    #[test]
    fn missing_files_are_skipped() {
        let dir = Dir::new();
        let present = dir.file("known_hosts", &format!("deploy.example.com {ED25519}\n"));
        let files = [dir.path("absent"), present, dir.path("no/such/dir/file")];
        assert_eq!(
            check(&files, &at("deploy.example.com", 22), &parse(ED25519)).unwrap(),
            Verdict::Known
        );
    }

    #[test]
    fn an_existing_file_that_cannot_be_read_is_an_error_naming_it() {
        let dir = Dir::new();
        let not_a_file = dir.path("known_hosts.d");
        fs::create_dir(&not_a_file).unwrap();
        let error = check(
            std::slice::from_ref(&not_a_file),
            &at("deploy.example.com", 22),
            &parse(ED25519),
        )
        .unwrap_err();
        assert!(matches!(&error, KnownHostsError::Read { path, .. } if *path == not_a_file));
        let message = error.to_string();
        assert!(message.contains("known_hosts.d"), "{message}");
        assert!(message.contains("directory"), "{message}");
    }

    #[test]
    fn malformed_lines_are_skipped_without_panicking() {
        let (algorithm, base64) = ED25519.split_once(' ').unwrap();
        let garbage = [
            "@",
            "@revoked",
            "@revoked deploy.example.com",
            "@bogus deploy.example.com {ED25519}",
            "@revoked @revoked deploy.example.com {ED25519}",
            "deploy.example.com",
            "deploy.example.com ssh-ed25519",
            "deploy.example.com ssh-ed25519 !!!not-base64!!!",
            "deploy.example.com ssh-rsa {base64}",
            "deploy.example.com {algorithm} {base64}#glued-comment",
            "deploy.example.com 2048 65537 1234567890",
            "|1| {ED25519}",
            "|1|bad|base64 {ED25519}",
            "|1|c2hvcnQ=|zkO4ur4Mgh6GX4HTAVPY7EQRyCY= {ED25519}",
            "|2|MCcLfvD027vnpuHA19l01DURbFI=|zkO4ur4Mgh6GX4HTAVPY7EQRyCY= {ED25519}",
            "\u{0}\u{7f}\u{fffd} ☃ ✓",
            ",,, {ED25519}",
        ]
        .map(|line| {
            line.replace("{ED25519}", &text(&ed25519(1)))
                .replace("{algorithm}", algorithm)
                .replace("{base64}", base64)
        });
        let mut file = garbage.join("\n");
        file.push_str(&format!("\ndeploy.example.com {ECDSA}\n"));
        let lines = garbage.len() + 1;

        let dir = Dir::new();
        let path = dir.file("known_hosts", &file);
        let mut with_invalid_utf8 = fs::read(&path).unwrap();
        with_invalid_utf8.extend_from_slice(b"\xff\xfe deploy.example.com\n");
        fs::write(&path, with_invalid_utf8).unwrap();

        let deploy = at("deploy.example.com", 22);
        let files = [path];
        assert_eq!(
            check(&files, &deploy, &parse(ECDSA)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            changed_lines(check(&files, &deploy, &parse(ED25519)).unwrap()),
            [lines]
        );
    }

    #[test]
    fn appended_keys_are_then_known() {
        let dir = Dir::new();
        let file = dir.path("home/.ssh/known_hosts");
        let key = parse(&format!("{ED25519} user@laptop"));

        append(&file, &at("Deploy.Example.com", 22), &key).unwrap();
        append(&file, &at("deploy.example.com", 2222), &parse(ECDSA)).unwrap();

        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("deploy.example.com {ED25519}\n[deploy.example.com]:2222 {ECDSA}\n")
        );
        let files = [file];
        assert_eq!(
            check(&files, &at("deploy.example.com", 22), &key).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&files, &at("deploy.example.com", 2222), &parse(ECDSA)).unwrap(),
            Verdict::Known
        );
    }

    #[cfg(unix)]
    #[test]
    fn append_creates_private_directories_and_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new();
        let ssh_dir = dir.path("home/.ssh");
        let file = ssh_dir.join("known_hosts");
        append(&file, &at("deploy.example.com", 22), &parse(ED25519)).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ssh_dir), 0o700);
        assert_eq!(mode(&dir.path("home")), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn append_starts_a_new_line_when_the_file_lacks_a_final_newline() {
        let dir = Dir::new();
        let file = dir.file("known_hosts", &format!("web.example.com {ECDSA}"));
        append(&file, &at("deploy.example.com", 22), &parse(ED25519)).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("web.example.com {ECDSA}\ndeploy.example.com {ED25519}\n")
        );
    }

    #[test]
    fn append_refuses_names_that_would_not_read_back_literally() {
        let dir = Dir::new();
        let file = dir.path("known_hosts");
        for host in [
            "",
            "two words",
            "evil\n* ssh-ed25519 AAAA",
            "a,b",
            "*.example.com",
            "!x",
            "@revoked",
            "|1|x|y",
            "#x",
            "[x]",
        ] {
            assert!(
                matches!(
                    append(&file, &at(host, 22), &parse(ED25519)),
                    Err(KnownHostsError::UnrecordableHost(_))
                ),
                "{host:?}"
            );
        }
        assert!(!file.exists());
        append(&file, &at("2001:db8::1", 2222), &parse(ED25519)).unwrap();
        assert_eq!(
            check(&[file], &at("2001:db8::1", 2222), &parse(ED25519)).unwrap(),
            Verdict::Known
        );
    }

    #[test]
    fn fingerprints_are_those_ssh_keygen_prints() {
        assert_eq!(fingerprint(&parse(ED25519)), ED25519_FINGERPRINT);
        assert_eq!(fingerprint(&parse(ECDSA)), ECDSA_FINGERPRINT);
    }

    #[test]
    fn known_algorithms_follow_the_same_lookup_as_verdicts() {
        let dir = Dir::new();
        let file = dir.file(
            "known_hosts",
            &format!(
                "deploy.example.com {ECDSA}\ndeploy.example.com {ED25519}\n*.example.com {}\n\
                 @cert-authority * {ECDSA}\n[db.example.com]:2222 {ECDSA}\n",
                text(&ed25519(1)),
            ),
        );
        let files = [file];
        let algorithms = |host, port| known_algorithms(&files, &at(host, port)).unwrap();
        let ecdsa = parse(ECDSA).algorithm();
        assert_eq!(
            algorithms("deploy.example.com", 22),
            [ecdsa.clone(), Algorithm::Ed25519]
        );
        // Nothing under `[deploy.example.com]:2222`, so the bare name applies, as for verdicts.
        assert_eq!(
            algorithms("deploy.example.com", 2222),
            [ecdsa.clone(), Algorithm::Ed25519]
        );
        assert_eq!(algorithms("db.example.com", 2222), [ecdsa]);
        // The `@cert-authority` line's ECDSA key is not a host key.
        assert_eq!(algorithms("db.example.com", 22), [Algorithm::Ed25519]);
        assert!(algorithms("elsewhere", 22).is_empty());
    }

    // Certificates. Made by `ssh-keygen`, so what we check is exactly what OpenSSH issues.

    /// A CA and a host key in a temporary directory.
    struct Pki {
        dir: Dir,
        ca: PublicKey,
        host_key: PublicKey,
    }

    impl Pki {
        fn new() -> Self {
            let dir = Dir::new();
            for name in ["ca", "host"] {
                ssh_keygen(
                    &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"],
                    &dir.path(name),
                );
            }
            let read = |name: &str| PublicKey::read_openssh_file(dir.path(name)).unwrap();
            let (ca, host_key) = (read("ca.pub"), read("host.pub"));
            Self { dir, ca, host_key }
        }

        /// Signs the host key; `principals` and `validity` as for `ssh-keygen -n` and `-V`.
        fn certificate(&self, principals: &str, validity: &str, host_cert: bool) -> Certificate {
            let ca = self.dir.path("ca");
            let mut args = vec![
                "-q",
                "-s",
                ca.to_str().unwrap(),
                "-I",
                "test",
                "-V",
                validity,
            ];
            if host_cert {
                args.push("-h");
            }
            if !principals.is_empty() {
                args.extend(["-n", principals]);
            }
            ssh_keygen(&args, &self.dir.path("host.pub"));
            Certificate::read_file(&self.dir.path("host-cert.pub")).unwrap()
        }

        fn host_certificate(&self, principals: &str) -> Certificate {
            self.certificate(principals, "always:forever", true)
        }

        fn known_hosts(&self, contents: &str) -> Vec<PathBuf> {
            vec![self.dir.file("known_hosts", contents)]
        }
    }

    #[test]
    fn certificate_signed_by_a_trusted_ca_is_known() {
        let pki = Pki::new();
        let cert = pki.host_certificate("web.example.com,deploy.example.com");
        let files = pki.known_hosts(&format!(
            "@cert-authority *.example.com {}\n",
            text(&pki.ca)
        ));
        // `*.example.com` cannot match `[deploy.example.com]:2222`; on port 2222 the CA is
        // found through the bare-name fallback, as `ssh` finds it.
        for query in [at("deploy.example.com", 22), at("Deploy.example.com", 2222)] {
            assert_eq!(
                check_certificate(&files, &query, &cert).unwrap(),
                Verdict::Known,
                "{query:?}"
            );
        }
        // The CA line is for this host only; the certificate would do for others.
        let narrow = pki.known_hosts(&format!(
            "@cert-authority web.example.com {}\n",
            text(&pki.ca)
        ));
        assert_eq!(
            check_certificate(&narrow, &at("deploy.example.com", 22), &cert).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn certificate_not_naming_the_host_is_judged_as_its_plain_key() {
        let pki = Pki::new();
        let cert = pki.host_certificate("web.example.com");
        let ca_line = format!("@cert-authority * {}\n", text(&pki.ca));
        let deploy = at("deploy.example.com", 22);
        assert_eq!(
            check_certificate(&pki.known_hosts(&ca_line), &deploy, &cert).unwrap(),
            Verdict::Unknown
        );
        let plain_known = format!("{ca_line}deploy.example.com {}\n", text(&pki.host_key));
        assert_eq!(
            check_certificate(&pki.known_hosts(&plain_known), &deploy, &cert).unwrap(),
            Verdict::Known
        );
        let plain_other = format!("{ca_line}deploy.example.com {}\n", text(&ed25519(1)));
        assert_eq!(
            changed_lines(
                check_certificate(&pki.known_hosts(&plain_other), &deploy, &cert).unwrap()
            ),
            [2]
        );
        // Principals name the host, never `[host]:port`.
        let bracketed = pki.host_certificate("[deploy.example.com]:2222");
        assert_eq!(
            check_certificate(
                &pki.known_hosts(&ca_line),
                &at("deploy.example.com", 2222),
                &bracketed
            )
            .unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn certificate_without_principals_is_not_trusted() {
        // OpenSSH would accept this for any host; see the module docs.
        let pki = Pki::new();
        let cert = pki.host_certificate("");
        assert!(cert.valid_principals().is_empty());
        let files = pki.known_hosts(&format!("@cert-authority * {}\n", text(&pki.ca)));
        assert_eq!(
            check_certificate(&files, &at("deploy.example.com", 22), &cert).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn certificate_outside_its_validity_window_is_not_trusted() {
        let pki = Pki::new();
        let files = pki.known_hosts(&format!("@cert-authority * {}\n", text(&pki.ca)));
        let deploy = at("deploy.example.com", 22);
        for validity in ["20200101:20200201", "+52w:+104w"] {
            let cert = pki.certificate("deploy.example.com", validity, true);
            assert_eq!(
                check_certificate(&files, &deploy, &cert).unwrap(),
                Verdict::Unknown,
                "{validity}"
            );
        }
    }

    #[test]
    fn user_certificate_is_not_a_host_certificate() {
        let pki = Pki::new();
        let cert = pki.certificate("deploy.example.com", "always:forever", false);
        let files = pki.known_hosts(&format!("@cert-authority * {}\n", text(&pki.ca)));
        assert_eq!(
            check_certificate(&files, &at("deploy.example.com", 22), &cert).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn certificate_from_an_untrusted_ca_is_not_trusted() {
        let pki = Pki::new();
        let cert = pki.host_certificate("deploy.example.com");
        let other_ca = format!("@cert-authority * {}\n", text(&ed25519(1)));
        assert_eq!(
            check_certificate(
                &pki.known_hosts(&other_ca),
                &at("deploy.example.com", 22),
                &cert
            )
            .unwrap(),
            Verdict::Unknown
        );
        // A plain line with the CA key is no `@cert-authority` line.
        let plain_ca = format!("deploy.example.com {}\n", text(&pki.ca));
        assert_eq!(
            changed_lines(
                check_certificate(
                    &pki.known_hosts(&plain_ca),
                    &at("deploy.example.com", 22),
                    &cert
                )
                .unwrap()
            ),
            [1]
        );
    }

    #[test]
    fn certificate_with_revoked_ca_or_key_is_revoked() {
        let pki = Pki::new();
        let cert = pki.host_certificate("deploy.example.com");
        let deploy = at("deploy.example.com", 22);
        for revoked in [&pki.ca, &pki.host_key] {
            let files = pki.known_hosts(&format!(
                "@cert-authority * {}\n@revoked elsewhere {}\n",
                text(&pki.ca),
                text(revoked)
            ));
            assert!(matches!(
                check_certificate(&files, &deploy, &cert).unwrap(),
                Verdict::Revoked { line: 2, .. }
            ));
        }
    }
}
