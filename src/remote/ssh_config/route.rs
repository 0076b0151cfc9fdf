//! Turning what the ssh config says into a [`Route`]: the jump hosts and the target, each an
//! [`Endpoint`] with everything needed to trust and log in to it.
//!
//! This is where cutover.toml meets the ssh config (values written in cutover.toml win), `%`
//! tokens and `~` are expanded with the final user, host and port, defaults are chosen, and the
//! settings cutover will not honour as written (`StrictHostKeyChecking no`, `ProxyCommand`)
//! become warnings or errors. `ProxyJump` hops are resolved recursively, each with its own
//! config lookup, as `ssh -J` does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::parse::{
    config_files, expand_host_name, expand_tilde, lookup, ConfigFile, HostConfig, Proxy, Query,
};
use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, MAX_JUMPS};
use crate::config::{home_dir, local_user_name, Host, HostKeyChecking, Target};

/// Values for `%` tokens in file names.
struct Tokens<'a> {
    home: &'a Path,
    local_user: &'a str,
    host: &'a str,
    user: &'a str,
    port: u16,
    original: &'a str,
}

impl Tokens<'_> {
    /// `~` and the tokens `ssh` expands in file names (`%C %d %h %i %k %L %l %n %p %r %u %%`);
    /// any other token is an error, as in `ssh`.
    fn expand(&self, what: &str, value: &str) -> Result<PathBuf> {
        let mut out = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('d') => out.push_str(&self.home.to_string_lossy()),
                Some('u') => out.push_str(self.local_user),
                Some('h') => out.push_str(self.host),
                Some('r') => out.push_str(self.user),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('n') => out.push_str(self.original),
                // HostKeyAlias is not supported, so the key alias is the name as given.
                Some('k') => out.push_str(self.original),
                Some('l') => out.push_str(&local_host_name()),
                Some('L') => out.push_str(local_host_name().split('.').next().unwrap_or_default()),
                Some('i') => out.push_str(&local_uid().to_string()),
                Some('C') => out.push_str(&self.connection_hash()),
                Some('%') => out.push('%'),
                Some(t) => bail!(
                    "{what} {value:?}: the token %{t} is not one ssh expands there \
                     (%C %d %h %i %k %L %l %n %p %r %u %%)"
                ),
                None => bail!("{what} {value:?} ends with a lone %"),
            }
        }
        Ok(expand_tilde(&out, self.home))
    }

    /// `%C`: SHA-1 of `%l%h%p%r` in hex, as OpenSSH's `ssh_connection_hash`.
    fn connection_hash(&self) -> String {
        use sha1::{Digest, Sha1};
        let digest = Sha1::new()
            .chain_update(local_host_name())
            .chain_update(self.host)
            .chain_update(self.port.to_string())
            .chain_update(self.user)
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `ssh` expands only `%h` and `%%` in `HostName`, and refuses the rest.
fn check_host_name_tokens(value: &str) -> Result<()> {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('h' | '%') => {}
                Some(t) => {
                    bail!("HostName {value:?}: the token %{t} is not one ssh expands there (%h %%)")
                }
                None => bail!("HostName {value:?} ends with a lone %"),
            }
        }
    }
    Ok(())
}

/// This machine's name as `gethostname(2)` gives it (`ssh`'s `%l`).
fn local_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; gethostname writes at most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn local_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// Where the ssh-agent is, per `IdentityAgent` (default: `SSH_AUTH_SOCK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// `SSH_AUTH_SOCK`, when set.
    Env,
    /// A socket path.
    Socket(PathBuf),
    /// `IdentityAgent none`.
    Disabled,
}

/// One SSH server to connect to and everything needed to trust it and log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name as written (cutover.toml `host`, or a `ProxyJump` hop).
    pub alias: String,
    /// Where to connect, and the name known_hosts records it under (`HostName` or the alias).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Identity files in the order to try them.
    pub identity_files: Vec<PathBuf>,
    /// `CertificateFile`s: user certificates offered with the key each one certifies.
    pub certificate_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: offer no agent key that is not one of `identity_files`.
    pub identities_only: bool,
    pub agent: Agent,
    /// known_hosts files; the first one is where `accept-new` records a key.
    pub known_hosts: Vec<PathBuf>,
    pub host_key_checking: HostKeyChecking,
    pub connect_timeout: Duration,
    /// None: no keepalives (`ServerAliveInterval 0`).
    pub keepalive: Option<Duration>,
    pub keepalive_max: usize,
}

/// The jump hosts in order, then the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub jumps: Vec<Endpoint>,
    pub target: Endpoint,
    /// Things in the ssh config that cutover did not do as written.
    pub warnings: Vec<String>,
}

/// Settings given outside the ssh config, which win over it.
#[derive(Debug, Clone, Default)]
struct Overrides {
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    host_key_checking: Option<HostKeyChecking>,
}

/// The route to an SSH target: cutover.toml first, then the ssh config files.
pub fn route(target: &Target) -> Result<Route> {
    route_with(target, &config_files()?)
}

/// The first two of `targets` that reach one place once the ssh config is read (an alias and
/// its `HostName`, two aliases of one server): the same jump hosts, host, port and user, and
/// the same deploy path. Their labels and where they lead. A target whose route cannot be worked
/// out is left to fail, with its own message, when it connects.
pub fn same_place(targets: &[Target]) -> Option<(String, String, String)> {
    let files = config_files().ok()?;
    let places: Vec<(&Target, String)> = targets
        .iter()
        .filter_map(|t| {
            let r = route_with(t, &files).ok()?;
            let hop = |e: &Endpoint| format!("{}@{}:{}", e.user, e.host.to_lowercase(), e.port);
            let mut place: Vec<String> = r.jumps.iter().map(hop).collect();
            place.push(format!("{}{}", hop(&r.target), t.path));
            Some((t, place.join(" via ")))
        })
        .collect();
    places.iter().enumerate().find_map(|(i, (a, place))| {
        places[..i]
            .iter()
            .find(|(_, other)| other == place)
            .map(|(b, _)| (b.label.clone(), a.label.clone(), place.clone()))
    })
}

/// [`route`] with the given config files (for tests).
pub fn route_with(target: &Target, files: &[ConfigFile]) -> Result<Route> {
    let Host::Ssh { host, port, user } = &target.host else {
        bail!("target {} is local: no SSH route", target.name);
    };
    let overrides = Overrides {
        user: target.explicit.user.then(|| user.clone()),
        port: target.explicit.port.then_some(*port),
        identity_file: target.identity_file.clone(),
        known_hosts: target.known_hosts.clone(),
        host_key_checking: target
            .explicit
            .host_key_checking
            .then_some(target.host_key_checking),
    };
    // Jump hosts use their own ssh config for keys, but cutover.toml's known_hosts and
    // host_key_checking: they are the user's trust decisions for this deploy.
    let hop_overrides = Overrides {
        known_hosts: overrides.known_hosts.clone(),
        host_key_checking: overrides.host_key_checking,
        ..Default::default()
    };
    let mut warnings = Vec::new();
    let mut seen = vec![host.clone()];
    let (jumps, target) = resolve(
        host,
        &overrides,
        &hop_overrides,
        files,
        true,
        &mut seen,
        &mut warnings,
    )?;
    let mut unique = Vec::new();
    for w in warnings {
        if !unique.contains(&w) {
            unique.push(w);
        }
    }
    Ok(Route {
        jumps,
        target,
        warnings: unique,
    })
}

/// One host and, when `follow_jumps`, the jump hosts before it.
fn resolve(
    alias: &str,
    overrides: &Overrides,
    hop_overrides: &Overrides,
    files: &[ConfigFile],
    follow_jumps: bool,
    seen: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Endpoint>, Endpoint)> {
    let home = home_dir();
    let local_user = local_user_name();
    let query = Query {
        host: alias,
        user: overrides.user.as_deref(),
        local_user: &local_user,
        home: &home,
    };
    let cfg = lookup(files, &query)?;
    warnings.extend(cfg.warnings.iter().cloned());
    let endpoint = endpoint(alias, &cfg, overrides, &home, &local_user, warnings)?;

    let mut jumps = Vec::new();
    match &cfg.proxy {
        Some(Proxy::Command(cmd, origin)) if cmd != "none" => bail!(
            "{origin}: ProxyCommand applies to {alias}, but cutover does not run proxy commands; \
             use ProxyJump (e.g. `ProxyJump bastion.example.com`) instead"
        ),
        Some(Proxy::Jump(spec)) if follow_jumps && spec != "none" => {
            let hops = parse_jump_list(spec)?;
            for (i, hop) in hops.iter().enumerate() {
                let key = hop.to_string();
                if seen.len() > MAX_JUMPS || seen.contains(&key) {
                    bail!(
                        "ProxyJump loops or goes deeper than {MAX_JUMPS} hosts (reached {key} from {})",
                        seen.join(" -> ")
                    );
                }
                seen.push(key);
                let own = Overrides {
                    user: hop.user.clone(),
                    port: hop.port,
                    ..hop_overrides.clone()
                };
                // As `ssh -J a,b`: `a` is reached the way its own config says (its own
                // ProxyJump included); `b` through `a`, whatever its config says.
                let (before, hop_endpoint) = resolve(
                    &hop.host,
                    &own,
                    hop_overrides,
                    files,
                    i == 0,
                    seen,
                    warnings,
                )?;
                jumps.extend(before);
                jumps.push(hop_endpoint);
            }
        }
        _ => {}
    }
    Ok((jumps, endpoint))
}

/// What the ssh config files resolve for one host, expanded (`%` tokens, `~`) and with
/// cutover.toml's overrides applied, but before cutover's own defaults and policies: the same
/// settings, in the same terms, that `ssh -G` prints. `endpoint` builds on it, and the
/// differential test against `ssh -G` reads it (through [`settings`]), so what is compared is
/// what a deploy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Lowercased, `%h` expanded.
    pub hostname: String,
    pub user: String,
    pub port: u16,
    /// Empty when none is configured (`ssh -G` then lists its defaults).
    pub identity_files: Vec<PathBuf>,
    pub certificate_files: Vec<PathBuf>,
    /// The hops as `ssh -G` prints them (`user@host:port,...`); None for `none` or unset.
    pub proxy_jump: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// Lowercased, as written.
    pub strict_host_key_checking: Option<String>,
    /// None when unset; `none` entries dropped.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    pub identities_only: bool,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<usize>,
}

/// [`Settings`] for `alias` from `files`, with `home` for `~` and `%d` and `local_user` for
/// `%u` (cutover passes `$HOME` and `$USER`). Nothing from cutover.toml.
pub fn settings(
    files: &[ConfigFile],
    alias: &str,
    home: &Path,
    local_user: &str,
) -> Result<Settings> {
    let query = Query {
        host: alias,
        user: None,
        local_user,
        home,
    };
    let cfg = lookup(files, &query)?;
    settings_of(alias, &cfg, &Overrides::default(), home, local_user)
}

fn settings_of(
    alias: &str,
    cfg: &HostConfig,
    overrides: &Overrides,
    home: &Path,
    local_user: &str,
) -> Result<Settings> {
    let hostname = match &cfg.host_name {
        Some(h) => {
            check_host_name_tokens(h)?;
            expand_host_name(h, alias)
        }
        None => alias.to_ascii_lowercase(),
    };
    let port = overrides.port.or(cfg.port).unwrap_or(22);
    let user = overrides
        .user
        .clone()
        .or_else(|| cfg.user.clone())
        .unwrap_or_else(|| local_user.to_string());
    let tokens = Tokens {
        home,
        local_user,
        host: &hostname,
        user: &user,
        port,
        original: alias,
    };
    let identity_files = match &overrides.identity_file {
        Some(p) => vec![p.clone()],
        None => cfg
            .identity_files
            .iter()
            .map(|f| tokens.expand("IdentityFile", f))
            .collect::<Result<_>>()?,
    };
    // (also with cutover.toml's identity_file, as with `ssh -i`)
    let certificate_files = cfg
        .certificate_files
        .iter()
        .map(|f| tokens.expand("CertificateFile", f))
        .collect::<Result<_>>()?;
    let user_known_hosts_files = match (&overrides.known_hosts, &cfg.user_known_hosts_files) {
        (Some(p), _) => Some(vec![p.clone()]),
        (None, Some(files)) => Some(
            files
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("none"))
                .map(|f| tokens.expand("UserKnownHostsFile", f))
                .collect::<Result<_>>()?,
        ),
        (None, None) => None,
    };
    let proxy_jump = match &cfg.proxy {
        Some(Proxy::Jump(spec)) if spec != "none" => Some(
            parse_jump_list(spec)?
                .iter()
                .map(JumpHop::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    };
    Ok(Settings {
        hostname,
        user,
        port,
        identity_files,
        certificate_files,
        proxy_jump,
        connect_timeout: cfg.connect_timeout,
        strict_host_key_checking: cfg
            .strict_host_key_checking
            .as_ref()
            .map(|(v, _)| v.clone()),
        user_known_hosts_files,
        identities_only: cfg.identities_only.unwrap_or(false),
        server_alive_interval: cfg.server_alive_interval,
        server_alive_count_max: cfg.server_alive_count_max,
    })
}

fn endpoint(
    alias: &str,
    cfg: &HostConfig,
    overrides: &Overrides,
    home: &Path,
    local_user: &str,
    warnings: &mut Vec<String>,
) -> Result<Endpoint> {
    let set = settings_of(alias, cfg, overrides, home, local_user)?;
    let tokens = Tokens {
        home,
        local_user,
        host: &set.hostname,
        user: &set.user,
        port: set.port,
        original: alias,
    };
    let agent = match cfg.identity_agent.as_deref() {
        None | Some("SSH_AUTH_SOCK") => Agent::Env,
        Some(v) if v.eq_ignore_ascii_case("none") => Agent::Disabled,
        Some(v) => match v.strip_prefix('$') {
            Some(var) => match std::env::var_os(var) {
                Some(path) => Agent::Socket(PathBuf::from(path)),
                None => Agent::Disabled,
            },
            None => Agent::Socket(tokens.expand("IdentityAgent", v)?),
        },
    };
    let known_hosts = set.user_known_hosts_files.clone().unwrap_or_else(|| {
        vec![
            home.join(".ssh/known_hosts"),
            home.join(".ssh/known_hosts2"),
        ]
    });
    let host_key_checking = match (overrides.host_key_checking, &cfg.strict_host_key_checking) {
        (Some(mode), _) => mode,
        (None, None) => HostKeyChecking::Strict,
        (None, Some((v, origin))) => match v.as_str() {
            "accept-new" => HostKeyChecking::AcceptNew,
            "yes" | "true" | "ask" => HostKeyChecking::Strict,
            _ => {
                warnings.push(format!(
                    "{origin}: StrictHostKeyChecking {v} for {alias} is ignored: cutover always checks host keys \
                     (strict; set host_key_checking = \"accept-new\" in cutover.toml to record new hosts)"
                ));
                HostKeyChecking::Strict
            }
        },
    };
    let connect_timeout = match set.connect_timeout {
        Some(t) if !t.is_zero() => t,
        _ => DEFAULT_CONNECT_TIMEOUT,
    };
    let keepalive = match set.server_alive_interval {
        None => Some(DEFAULT_KEEPALIVE),
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
    };
    Ok(Endpoint {
        alias: alias.to_string(),
        host: set.hostname,
        port: set.port,
        user: set.user,
        identity_files: set.identity_files,
        certificate_files: set.certificate_files,
        identities_only: set.identities_only,
        agent,
        known_hosts,
        host_key_checking,
        connect_timeout,
        keepalive,
        keepalive_max: set.server_alive_count_max.unwrap_or(3).max(1),
    })
}

/// One hop of a `ProxyJump` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JumpHop {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

impl std::fmt::Display for JumpHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// `[user@]host[:port]` or `ssh://[user@]host[:port]`, comma-separated; IPv6 as `[::1]:22`.
fn parse_jump_list(spec: &str) -> Result<Vec<JumpHop>> {
    spec.split(',')
        .map(|hop| {
            let hop = hop.trim();
            let bad = || anyhow!("ProxyJump {spec:?}: cannot read the hop {hop:?}");
            let rest = hop.strip_prefix("ssh://").unwrap_or(hop);
            let rest = rest.trim_end_matches('/');
            let (user, rest) = match rest.rsplit_once('@') {
                Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
                Some(_) => return Err(bad()),
                None => (None, rest),
            };
            let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                let (h, after) = v6.split_once(']').ok_or_else(bad)?;
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if after.is_empty() => None,
                    None => return Err(bad()),
                };
                (h.to_string(), port)
            } else {
                match rest.split_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (rest.to_string(), None),
                }
            };
            let port = match port {
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
                None => None,
            };
            if host.is_empty() || host.starts_with('-') {
                return Err(bad());
            }
            Ok(JumpHop { user, host, port })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_lists() {
        let hops = parse_jump_list("bastion, ops@gw:2222,ssh://u@[::1]:22,ssh://plain").unwrap();
        assert_eq!(
            hops,
            vec![
                JumpHop {
                    user: None,
                    host: "bastion".into(),
                    port: None
                },
                JumpHop {
                    user: Some("ops".into()),
                    host: "gw".into(),
                    port: Some(2222)
                },
                JumpHop {
                    user: Some("u".into()),
                    host: "::1".into(),
                    port: Some(22)
                },
                JumpHop {
                    user: None,
                    host: "plain".into(),
                    port: None
                },
            ]
        );
        assert!(parse_jump_list("a:notaport").is_err());
        assert!(parse_jump_list("@host").is_err());
    }

    fn target(toml_target: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cutover.toml");
        std::fs::write(
            &file,
            format!("[targets.t]\npath = '/srv/app'\n{toml_target}"),
        )
        .unwrap();
        let t = crate::config::Config::load(&file)
            .unwrap()
            .target(None)
            .unwrap()
            .hosts
            .remove(0);
        std::mem::forget(dir);
        t
    }

    fn route_for(toml_target: &str, ssh_config: &str) -> Result<Route> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, ssh_config).unwrap();
        let files = [ConfigFile {
            path,
            include_base: dir.path().to_path_buf(),
        }];
        route_with(&target(toml_target), &files)
    }

    const CONFIG: &str = "\
Host web
  HostName Web.Internal
  User deploy
  Port 2222
  IdentityFile /keys/%r@%h:%p
  IdentityFile /keys/second
  IdentitiesOnly yes
  UserKnownHostsFile /kh/one /kh/two
  StrictHostKeyChecking accept-new
  ConnectTimeout 3
  ServerAliveInterval 0
  ProxyJump ops@bastion:2200,inner
Host bastion
  HostName 10.0.0.1
  IdentityFile /keys/bastion
  ProxyJump outer
Host inner
  ProxyJump ignored-because-not-first
Host outer
  StrictHostKeyChecking no
";

    #[test]
    fn alias_is_resolved_through_the_ssh_config() {
        let r = route_for("host = 'web'\n", CONFIG).unwrap();
        let t = &r.target;
        assert_eq!(t.host, "web.internal");
        assert_eq!((t.port, t.user.as_str()), (2222, "deploy"));
        assert_eq!(
            t.identity_files,
            vec![
                PathBuf::from("/keys/deploy@web.internal:2222"),
                PathBuf::from("/keys/second")
            ]
        );
        assert!(t.identities_only);
        assert_eq!(
            t.known_hosts,
            vec![PathBuf::from("/kh/one"), PathBuf::from("/kh/two")]
        );
        assert_eq!(t.host_key_checking, HostKeyChecking::AcceptNew);
        assert_eq!(t.connect_timeout, Duration::from_secs(3));
        assert_eq!(t.keepalive, None);
    }

    #[test]
    fn cutover_toml_wins_over_the_ssh_config() {
        let r = route_for(
            "host = 'web'\nport = 22\nuser = 'root'\nidentity_file = '/mine'\nknown_hosts = '/kh/mine'\nhost_key_checking = 'strict'\n",
            CONFIG,
        )
        .unwrap();
        let t = &r.target;
        assert_eq!((t.port, t.user.as_str()), (22, "root"));
        assert_eq!(t.identity_files, vec![PathBuf::from("/mine")]);
        assert_eq!(t.known_hosts, vec![PathBuf::from("/kh/mine")]);
        assert_eq!(t.host_key_checking, HostKeyChecking::Strict);
        // the jump hosts are checked with cutover.toml's known_hosts too
        assert!(r
            .jumps
            .iter()
            .all(|j| j.known_hosts == vec![PathBuf::from("/kh/mine")]
                && j.host_key_checking == HostKeyChecking::Strict));
    }

    #[test]
    fn proxy_jump_hops_in_order_with_the_first_hops_own_jumps() {
        let r = route_for("host = 'web'\n", CONFIG).unwrap();
        let hops: Vec<(&str, u16, &str)> = r
            .jumps
            .iter()
            .map(|j| (j.host.as_str(), j.port, j.user.as_str()))
            .collect();
        let me = local_user_name();
        assert_eq!(
            hops,
            vec![
                ("outer", 22, me.as_str()),
                ("10.0.0.1", 2200, "ops"),
                ("inner", 22, me.as_str())
            ]
        );
        assert_eq!(
            r.jumps[1].identity_files,
            vec![PathBuf::from("/keys/bastion")]
        );
    }

    #[test]
    fn strict_host_key_checking_no_is_strict_with_a_warning() {
        let r = route_for("host = 'web'\n", CONFIG).unwrap();
        let outer = &r.jumps[0];
        assert_eq!(outer.host_key_checking, HostKeyChecking::Strict);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("StrictHostKeyChecking no") && w.contains("outer")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn plain_host_without_config_gets_the_defaults() {
        let r = route_for("host = 'example.com'\n", "").unwrap();
        let t = &r.target;
        assert!(r.jumps.is_empty());
        assert_eq!((t.host.as_str(), t.port), ("example.com", 22));
        assert_eq!(t.user, local_user_name());
        assert!(t.identity_files.is_empty());
        assert_eq!(t.agent, Agent::Env);
        assert_eq!(t.host_key_checking, HostKeyChecking::Strict);
        assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(t.keepalive, Some(DEFAULT_KEEPALIVE));
        assert_eq!(t.known_hosts[0], home_dir().join(".ssh/known_hosts"));
    }

    #[test]
    fn proxy_command_is_refused() {
        let e = route_for(
            "host = 'x'\n",
            "Host x\n  ProxyCommand nc -X connect %h %p\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ProxyCommand") && e.contains("ProxyJump"), "{e}");
        // `none` is fine
        route_for("host = 'x'\n", "Host x\n  ProxyCommand none\n").unwrap();
    }

    #[test]
    fn proxy_jump_loops_are_refused() {
        let e = route_for(
            "host = 'a'\n",
            "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("loop"), "{e}");
    }

    #[test]
    fn tokens_ssh_does_not_expand_are_errors() {
        let e = route_for("host = 'x'\n", "Host x\n  IdentityFile ~/.ssh/%j\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("%j"), "{e}");
        let e = route_for("host = 'x'\n", "Host x\n  HostName %r.example\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("%r") && e.contains("HostName"), "{e}");
    }

    #[test]
    fn connection_hash_is_sha1_of_local_host_host_port_user() {
        let r = route_for(
            "host = 'x'\n",
            "Host x\n  HostName h.example\n  User u\n  Port 2\n  IdentityFile /k/%C\n",
        )
        .unwrap();
        use sha1::{Digest, Sha1};
        let text = format!("{}h.example2u", local_host_name());
        let hex: String = Sha1::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            r.target.identity_files,
            vec![PathBuf::from(format!("/k/{hex}"))]
        );
    }

    #[test]
    fn identity_agent_none_disables_the_agent() {
        let r = route_for("host = 'x'\n", "Host x\n  IdentityAgent none\n").unwrap();
        assert_eq!(r.target.agent, Agent::Disabled);
    }
}
