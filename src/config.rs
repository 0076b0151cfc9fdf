//! `cutover.toml` → validated [`Target`] values.
//!
//! Parsing is strict on purpose: an unknown key is far more often a typo (`keep_release`) than a
//! wish, and a typo silently ignored in a deploy tool means a surprise in production. Every check
//! here fails with a [`UsageError`](crate::error::UsageError) (exit 2) that names the file and the
//! key, before any connection is made.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use crate::error::usage;

pub const DEFAULT_CONFIG: &str = "cutover.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_source")]
    source: String,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
    /// Paths `cutover verify` does not report: what hooks make in a release (gitignore syntax).
    #[serde(default)]
    verify_exclude: Vec<String>,
    keep_releases: Option<i64>,
    copy: Option<String>,
    #[serde(default)]
    shared_dirs: Vec<String>,
    #[serde(default)]
    shared_files: Vec<String>,
    barrier_timeout: Option<i64>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
}

fn default_source() -> String {
    ".".into()
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    before_swap: Option<Vec<String>>,
    after_swap: Option<Vec<String>>,
    verify: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    host: Option<String>,
    /// Strings or tables: parsed by hand, for messages that name the entry.
    hosts: Option<Vec<toml::Value>>,
    port: Option<i64>,
    user: Option<String>,
    path: Option<String>,
    identity_file: Option<String>,
    known_hosts: Option<String>,
    host_key_checking: Option<String>,
    keep_releases: Option<i64>,
    sftp_only: Option<bool>,
    barrier_timeout: Option<i64>,
    hooks: Option<RawHooks>,
}

/// One entry of `hosts`, after parsing: what it sets itself.
#[derive(Debug, Default)]
struct HostEntry {
    host: String,
    port: Option<i64>,
    user: Option<String>,
    path: Option<String>,
    identity_file: Option<String>,
}

/// How a new release starts out on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// `cp -a` of the previous release: costs its bytes.
    Full,
    /// `cp -al`: hard links, costs its file count. Safe because the script removes every name
    /// an upload replaces before unpacking it: nothing is written into an existing (shared) inode.
    Hardlink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyChecking {
    Strict,
    AcceptNew,
}

#[derive(Debug, Clone)]
pub enum Host {
    /// This machine: files are copied locally and the script runs under /bin/sh.
    Local,
    Ssh {
        host: String,
        port: u16,
        user: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub before_swap: Vec<String>,
    pub after_swap: Vec<String>,
    /// Run on every host after the swap, before anything is final: a failure switches every
    /// host back.
    pub verify: Vec<String>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.before_swap.is_empty() && self.after_swap.is_empty() && self.verify.is_empty()
    }
}

/// Paths declared shared (Capistrano's linked_dirs / linked_files): never deployed from the
/// source; every release gets a relative link to `shared/PATH` instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedPaths {
    /// Created empty in `shared/` when missing.
    pub dirs: Vec<String>,
    /// Must exist in `shared/`: a missing one fails the deploy before anything moves.
    pub files: Vec<String>,
}

impl SharedPaths {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty()
    }
    /// Every declared path.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.dirs.iter().chain(&self.files)
    }
}

/// Seconds a host waits at a barrier for the word from the client before it gives up by itself.
pub const DEFAULT_BARRIER_TIMEOUT: u32 = 300;

/// Everything one deploy to one host needs, with defaults applied and overrides merged. A
/// target of cutover.toml is one [`Fleet`] of these (a single `host` is a fleet of one).
#[derive(Debug, Clone)]
pub struct Target {
    /// The target's name in cutover.toml.
    pub name: String,
    /// This host's name in messages (`[web1] …`): the entry as written in `host`/`hosts`.
    pub label: String,
    /// One of several hosts: messages name the host too.
    pub in_fleet: bool,
    pub host: Host,
    /// Absolute, normalized deploy path on the server (no trailing slash).
    pub path: String,
    pub source: PathBuf,
    /// The config file's path inside the source, when it is there (`source = "."`): never
    /// deployed, as a web root would serve it (hosts, users, paths, hooks).
    pub config_in_source: Option<String>,
    pub exclude: Vec<String>,
    pub include: Vec<String>,
    /// Paths `cutover verify` leaves out (what `before_swap` hooks make: vendor/, caches).
    pub verify_exclude: Vec<String>,
    pub keep_releases: u32,
    pub copy: CopyMode,
    pub hooks: Hooks,
    pub shared: SharedPaths,
    /// Deploy with SFTP requests alone (no exec, no hooks).
    pub sftp_only: bool,
    pub barrier_timeout: u32,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_checking: HostKeyChecking,
    /// Which SSH settings cutover.toml set itself: those win over `~/.ssh/config`, the others
    /// may come from there (see `remote::ssh_config`).
    pub explicit: ExplicitSsh,
}

/// The SSH settings of a target that were written in cutover.toml rather than defaulted.
/// (`identity_file` and `known_hosts` are `Option`s already.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExplicitSsh {
    pub port: bool,
    pub user: bool,
    pub host_key_checking: bool,
}

impl Target {
    /// Where the deploy path is, for messages: `user@host:/path` or, locally, the path.
    pub fn describe(&self) -> String {
        match &self.host {
            Host::Local => self.path.clone(),
            Host::Ssh {
                host,
                port: 22,
                user,
            } => format!("{user}@{host}:{}", self.path),
            Host::Ssh { host, port, user } => format!("{user}@{host}:{} (port {port})", self.path),
        }
    }

    /// The command that removes this host's lock: `cutover unlock NAME`, and in a fleet
    /// `--host LABEL` too (without it, unlock removes the lock on every host).
    pub fn unlock_command(&self) -> String {
        if self.in_fleet {
            format!(
                "cutover unlock {} --host {}",
                self.name,
                crate::shell::word(&self.label)
            )
        } else {
            format!("cutover unlock {}", self.name)
        }
    }

    /// [`Target::describe`] with the user and port the connection really used (from
    /// `~/.ssh/config` when cutover.toml leaves them out).
    pub fn describe_as(&self, login: Option<(String, u16)>) -> String {
        match (&self.host, login) {
            (Host::Ssh { host, .. }, Some((user, port))) => {
                let mut resolved = self.clone();
                resolved.host = Host::Ssh {
                    host: host.clone(),
                    port,
                    user,
                };
                resolved.describe()
            }
            _ => self.describe(),
        }
    }

    /// `target NAME, stage STAGE` (in a fleet `target NAME, host LABEL, stage STAGE`): how
    /// every error names where it happened.
    pub fn stage(&self, stage: &str) -> String {
        if self.in_fleet {
            format!("target {}, host {}, stage {stage}", self.name, self.label)
        } else {
            format!("target {}, stage {stage}", self.name)
        }
    }
}

/// The hosts of one target, deployed as one: every host prepared, then all switched together.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub name: String,
    pub hosts: Vec<Target>,
    /// `--host` narrowed it to one host: that host's label, and how many hosts the target has.
    pub narrowed: Option<(String, usize)>,
}

impl Fleet {
    /// `target NAME, stage STAGE`: how an error about the whole target names where it happened
    /// (one host's errors use [`Target::stage`]).
    pub fn stage(&self, stage: &str) -> String {
        format!("target {}, stage {stage}", self.name)
    }

    pub fn is_single(&self) -> bool {
        self.hosts.len() == 1
    }

    /// Do this target's lines name their host (`[web1] `)? Those of a fleet do, also when
    /// `--host` narrowed it to one host: every line of a fleet says where it happened.
    pub fn names_hosts(&self) -> bool {
        !self.is_single() || self.narrowed.is_some()
    }

    /// Keep only the host called `label` (`--host`).
    pub fn narrow(mut self, label: &str) -> Result<Fleet> {
        let labels: Vec<String> = self.hosts.iter().map(|h| h.label.clone()).collect();
        match self.hosts.iter().position(|h| h.label == label) {
            Some(i) => {
                let total = self.hosts.len();
                let host = self.hosts.swap_remove(i);
                self.hosts = vec![host];
                self.narrowed = Some((label.to_string(), total));
                Ok(self)
            }
            None => Err(usage(format!(
                "--host {label:?}: target {} has no such host; its hosts: {}",
                self.name,
                labels.join(", ")
            ))),
        }
    }
}

impl Fleet {
    /// What `--host` leaves out, said loudly: `doing` is what the command does to the host
    /// (`deploying to`). None when the command acts on the whole target.
    pub fn narrowing_notice(&self, doing: &str) -> Option<String> {
        let (label, total) = self.narrowed.as_ref()?;
        let others = match total - 1 {
            0 => "it is the target's only host".to_string(),
            1 => "the other host is left as it is".to_string(),
            n => format!("the other {n} hosts are left as they are"),
        };
        Some(format!(
            "--host {label}: {doing} ONE host of target {} ({total} hosts); {others}",
            self.name
        ))
    }
}

pub struct Config {
    file: PathBuf,
    raw: RawConfig,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(usage(format!(
                    "config file {} not found: run `cutover init` to write a starter config, \
                     or point --config at yours",
                    file.display()
                )))
            }
            Err(e) => {
                return Err(usage(format!(
                    "cannot read config file {}: {e}",
                    file.display()
                )))
            }
        };
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            usage(format!(
                "config file {}: {}",
                file.display(),
                e.to_string().trim_end()
            ))
        })?;
        Ok(Config {
            file: file.to_path_buf(),
            raw,
        })
    }

    pub fn target_names(&self) -> Vec<&str> {
        self.raw.targets.keys().map(String::as_str).collect()
    }

    /// Resolve `name` (or the only target, when `name` is None) to a validated [`Fleet`].
    pub fn target(&self, name: Option<&str>) -> Result<Fleet> {
        let file = self.file.display();
        let names = self.target_names().join(", ");
        let (name, raw) = match name {
            Some(n) => match self.raw.targets.get_key_value(n) {
                Some(kv) => kv,
                None if self.raw.targets.is_empty() => {
                    return Err(usage(format!(
                        "unknown target `{n}`: {file} defines no [targets.NAME] table"
                    )))
                }
                None => {
                    return Err(usage(format!(
                        "unknown target `{n}` in {file}; known targets: {names}"
                    )))
                }
            },
            None => match self.raw.targets.len() {
                1 => self.raw.targets.iter().next().unwrap(),
                0 => {
                    return Err(usage(format!(
                        "{file} defines no target: add a [targets.NAME] table with host and path"
                    )))
                }
                _ => {
                    return Err(usage(format!(
                    "{file} defines several targets ({names}): name one, e.g. `cutover deploy {}`",
                    self.raw.targets.keys().next().unwrap()
                )))
                }
            },
        };
        let key = |k: &str| format!("targets.{name}.{k}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(usage(format!(
                "{file}: target name {name:?}: use letters, digits, `-`, `_` and `.` only"
            )));
        }

        let base = self
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let source = base.join(&self.raw.source);
        let source = std::fs::canonicalize(&source).map_err(|e| {
            usage(format!(
                "{file}: `source` = {:?}: directory {} cannot be opened: {e}",
                self.raw.source,
                source.display()
            ))
        })?;
        if !source.is_dir() {
            return Err(usage(format!(
                "{file}: `source` = {:?} is not a directory",
                self.raw.source
            )));
        }
        let config_in_source = std::fs::canonicalize(&self.file)
            .ok()
            .and_then(|f| {
                f.strip_prefix(&source)
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .filter(|p| !p.is_empty());

        let keep_releases = match raw.keep_releases.or(self.raw.keep_releases).unwrap_or(3) {
            n if (1..=1000).contains(&n) => n as u32,
            n => return Err(usage(format!("{file}: `keep_releases` = {n}: it must be between 1 and 1000 (releases kept, current included)"))),
        };
        let copy = match self.raw.copy.as_deref().unwrap_or("full") {
            "full" => CopyMode::Full,
            "hardlink" => CopyMode::Hardlink,
            other => {
                return Err(usage(format!(
                    "{file}: `copy` = {other:?}: expected \"full\" or \"hardlink\""
                )))
            }
        };
        let barrier_timeout = match raw
            .barrier_timeout
            .or(self.raw.barrier_timeout)
            .unwrap_or(i64::from(DEFAULT_BARRIER_TIMEOUT))
        {
            n if (1..=86_400).contains(&n) => n as u32,
            n => {
                return Err(usage(format!(
                    "{file}: `barrier_timeout` = {n}: seconds between 1 and 86400"
                )))
            }
        };

        let host_key_checking = match raw.host_key_checking.as_deref().unwrap_or("strict") {
            "strict" | "yes" => HostKeyChecking::Strict,
            "accept-new" => HostKeyChecking::AcceptNew,
            other => return Err(usage(format!(
                "{file}: `{}` = {other:?}: expected \"strict\" or \"accept-new\" (cutover never accepts a changed key)",
                key("host_key_checking")))),
        };

        let top = &self.raw.hooks;
        let own = raw.hooks.clone().unwrap_or_default();
        let hooks = Hooks {
            before_swap: own
                .before_swap
                .or_else(|| top.before_swap.clone())
                .unwrap_or_default(),
            after_swap: own
                .after_swap
                .or_else(|| top.after_swap.clone())
                .unwrap_or_default(),
            verify: own
                .verify
                .or_else(|| top.verify.clone())
                .unwrap_or_default(),
        };
        let sftp_only = raw.sftp_only.unwrap_or(false);
        if sftp_only && !hooks.is_empty() {
            let mut set = Vec::new();
            for (kind, list) in [
                ("before_swap", &hooks.before_swap),
                ("after_swap", &hooks.after_swap),
                ("verify", &hooks.verify),
            ] {
                if !list.is_empty() {
                    set.push(kind);
                }
            }
            return Err(usage(format!(
                "{file}: target {name} has `sftp_only = true` and hooks ({}): hooks are shell commands, and an \
                 SFTP-only account runs no commands. Remove the hooks for this target (an empty list in \
                 [targets.{name}.hooks] overrides the top-level ones), or deploy with an account that may run commands",
                set.join(", ")
            )));
        }
        validate_shared(&self.raw.shared_dirs, &self.raw.shared_files)
            .map_err(|why| usage(format!("{file}: {why}")))?;
        let plain = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect()
        };
        let shared = SharedPaths {
            dirs: plain(&self.raw.shared_dirs),
            files: plain(&self.raw.shared_files),
        };

        let entries = host_entries(raw, &key).map_err(|why| usage(format!("{file}: {why}")))?;
        let labels = labels(&entries);
        let mut hosts = Vec::new();
        for (entry, label) in entries.into_iter().zip(labels) {
            let at = |k: &str| {
                if raw.hosts.is_some() {
                    format!("`{}` entry {:?}, key `{k}`", key("hosts"), entry.host)
                } else {
                    format!("`{}`", key(k))
                }
            };
            let path = entry.path.as_ref().or(raw.path.as_ref()).ok_or_else(|| {
                usage(format!(
                    "{file}: target {name} has no `path`: set {} (the absolute deploy path on the server)",
                    key("path")
                ))
            })?;
            let path = validate_deploy_path(path)
                .map_err(|why| usage(format!("{file}: {} = {path:?}: {why}", at("path"))))?;
            let port_raw = entry.port.or(raw.port);
            let user_raw = entry.user.as_ref().or(raw.user.as_ref());
            let host = if entry.host == "local" {
                Host::Local
            } else {
                if entry.host.is_empty()
                    || entry.host.starts_with('-')
                    || entry
                        .host
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(usage(format!(
                        "{file}: {} = {:?} is not a host name",
                        at("host"),
                        entry.host
                    )));
                }
                let port = match port_raw.unwrap_or(22) {
                    p if (1..=65535).contains(&p) => p as u16,
                    p => {
                        return Err(usage(format!(
                            "{file}: {} = {p}: expected a port between 1 and 65535",
                            at("port")
                        )))
                    }
                };
                let user = match user_raw {
                    Some(u)
                        if u.is_empty()
                            || u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                    {
                        return Err(usage(format!(
                            "{file}: {} = {u:?} is not a user name",
                            at("user")
                        )))
                    }
                    Some(u) => u.clone(),
                    None => local_user_name(),
                };
                Host::Ssh {
                    host: entry.host.clone(),
                    port,
                    user,
                }
            };
            if let Host::Local = host {
                check_apart(&source, &path).map_err(|why| usage(format!("{file}: {why}")))?;
            }
            let identity_file = entry.identity_file.as_ref().or(raw.identity_file.as_ref());
            hosts.push(Target {
                name: name.clone(),
                label,
                in_fleet: raw.hosts.is_some(),
                host,
                path,
                source: source.clone(),
                config_in_source: config_in_source.clone(),
                exclude: self.raw.exclude.clone(),
                include: self.raw.include.clone(),
                verify_exclude: self.raw.verify_exclude.clone(),
                keep_releases,
                copy,
                hooks: hooks.clone(),
                shared: shared.clone(),
                sftp_only,
                barrier_timeout,
                identity_file: identity_file.map(|p| expand_home(p, base)),
                known_hosts: raw.known_hosts.as_deref().map(|p| expand_home(p, base)),
                host_key_checking,
                explicit: ExplicitSsh {
                    port: port_raw.is_some(),
                    user: user_raw.is_some(),
                    host_key_checking: raw.host_key_checking.is_some(),
                },
            });
        }
        if sftp_only && hosts.iter().any(|h| matches!(h.host, Host::Local)) {
            return Err(usage(format!(
                "{file}: target {name}: `sftp_only = true` needs an SSH host, not \"local\""
            )));
        }
        check_no_duplicates(&hosts)
            .map_err(|why| usage(format!("{file}: target {name}: {why}")))?;
        Ok(Fleet {
            name: name.clone(),
            hosts,
            narrowed: None,
        })
    }
}

/// `host` or `hosts` of a target, as entries.
fn host_entries(
    raw: &RawTarget,
    key: &dyn Fn(&str) -> String,
) -> std::result::Result<Vec<HostEntry>, String> {
    match (&raw.host, &raw.hosts) {
        (Some(_), Some(_)) => Err(format!(
            "`{}` and `{}` are both set: use `host` for one server, `hosts` for several",
            key("host"),
            key("hosts")
        )),
        (None, None) => Err(format!(
            "target has no `{}` (one server, or \"local\") and no `{}` (several)",
            key("host"),
            key("hosts")
        )),
        (Some(host), None) => Ok(vec![HostEntry {
            host: host.clone(),
            ..HostEntry::default()
        }]),
        (None, Some(list)) if list.is_empty() => Err(format!(
            "`{}` is empty: name at least one host",
            key("hosts")
        )),
        (None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                host_entry(v).map_err(|why| format!("`{}` entry {}: {why}", key("hosts"), i + 1))
            })
            .collect(),
    }
}

fn host_entry(v: &toml::Value) -> std::result::Result<HostEntry, String> {
    match v {
        toml::Value::String(s) => Ok(HostEntry {
            host: s.clone(),
            ..HostEntry::default()
        }),
        toml::Value::Table(t) => {
            let mut entry = HostEntry::default();
            for (k, v) in t {
                let text = || {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("`{k}` must be a string"))
                };
                match k.as_str() {
                    "host" => entry.host = text()?,
                    "user" => entry.user = Some(text()?),
                    "path" => entry.path = Some(text()?),
                    "identity_file" => entry.identity_file = Some(text()?),
                    "port" => {
                        entry.port = Some(
                            v.as_integer()
                                .ok_or_else(|| "`port` must be a number".to_string())?,
                        )
                    }
                    other => {
                        return Err(format!(
                            "unknown key `{other}` (a host entry may set host, port, user, path, identity_file)"
                        ))
                    }
                }
            }
            if entry.host.is_empty() {
                return Err("a table entry needs `host`".into());
            }
            Ok(entry)
        }
        _ => {
            Err("expected a host name or a table { host = …, port = …, user = …, path = … }".into())
        }
    }
}

/// Names for messages: the host as written; where two entries share it, with the port, then
/// the path.
fn labels(entries: &[HostEntry]) -> Vec<String> {
    let count = |f: &dyn Fn(&HostEntry) -> String, e: &HostEntry| {
        entries.iter().filter(|o| f(o) == f(e)).count()
    };
    let plain = |e: &HostEntry| e.host.clone();
    let with_port = |e: &HostEntry| format!("{}:{}", e.host, e.port.unwrap_or(22));
    let with_path = |e: &HostEntry| {
        format!(
            "{}:{}:{}",
            e.host,
            e.port.unwrap_or(22),
            e.path.clone().unwrap_or_default()
        )
    };
    entries
        .iter()
        .map(|e| {
            if count(&plain, e) == 1 {
                plain(e)
            } else if count(&with_port, e) == 1 {
                with_port(e)
            } else {
                with_path(e)
            }
        })
        .collect()
}

/// Two entries that are the same host, port, user and path would deploy twice to one place.
fn check_no_duplicates(hosts: &[Target]) -> std::result::Result<(), String> {
    for (i, a) in hosts.iter().enumerate() {
        for b in &hosts[..i] {
            let same = match (&a.host, &b.host) {
                (Host::Local, Host::Local) => a.path == b.path,
                (
                    Host::Ssh { host, port, user },
                    Host::Ssh {
                        host: h2,
                        port: p2,
                        user: u2,
                    },
                ) => host.eq_ignore_ascii_case(h2) && port == p2 && user == u2 && a.path == b.path,
                _ => false,
            };
            if same {
                return Err(format!(
                    "hosts {:?} and {:?} are the same server, user and path ({}): list each once",
                    b.label,
                    a.label,
                    a.describe()
                ));
            }
        }
    }
    Ok(())
}

/// A local deploy path may not lie inside the source (every release would copy the ones
/// before it), nor the source inside the deploy path.
fn check_apart(source: &Path, path: &str) -> std::result::Result<(), String> {
    let deploy = Path::new(path);
    // The deploy path may not exist yet: compare its nearest existing ancestor, resolved.
    let mut existing = deploy.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    if resolved.starts_with(source) {
        return Err(format!(
            "the deploy path {path} is inside the source {}: every release would contain the ones before it. \
             Deploy somewhere else, or set `source` to a directory that does not contain it",
            source.display()
        ));
    }
    if source.starts_with(&resolved) {
        return Err(format!(
            "the source {} is inside the deploy path {path}: a deploy would replace what it deploys. \
             Keep the source outside the deploy path",
            source.display()
        ));
    }
    Ok(())
}

/// Declared shared paths: relative, plain, not nested in each other.
fn validate_shared(dirs: &[String], files: &[String]) -> std::result::Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for (key, list) in [("shared_dirs", dirs), ("shared_files", files)] {
        for p in list {
            let trimmed = p.trim_end_matches('/');
            crate::source::manifest::validate_relative_path(trimmed)
                .map_err(|e| format!("`{key}` entry {p:?}: {e:#}"))?;
            if trimmed == ".git" || trimmed.starts_with(".git/") {
                return Err(format!("`{key}` entry {p:?}: .git is never deployed"));
            }
            if trimmed.contains(['*', '?', '[']) {
                return Err(format!(
                    "`{key}` entry {p:?}: a shared path is a plain path, not a pattern"
                ));
            }
            for other in &seen {
                let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
                if nested(trimmed, other) || nested(other, trimmed) {
                    return Err(format!(
                        "shared paths {other:?} and {trimmed:?} overlap: declare only the outer one"
                    ));
                }
            }
            seen.push(trimmed);
        }
    }
    Ok(())
}

/// An absolute path without `.`/`..` components, not `/` itself, returned without trailing slash.
fn validate_deploy_path(p: &str) -> std::result::Result<String, &'static str> {
    if !p.starts_with('/') {
        return Err("the deploy path must be absolute (start with /)");
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("the deploy path contains a control character");
    }
    let path = Path::new(p);
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("the deploy path must not contain `.` or `..` components");
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("refusing to deploy into / itself: use a directory such as /var/www/app");
    }
    let mut normalized = String::new();
    for part in trimmed.split('/').filter(|s| !s.is_empty()) {
        normalized.push('/');
        normalized.push_str(part);
    }
    Ok(normalized)
}

/// `~/x` → `$HOME/x`; relative paths are taken relative to the config file's directory.
pub fn expand_home(p: &str, base: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        home_dir().join(rest)
    } else if p == "~" {
        home_dir()
    } else {
        base.join(p)
    }
}

/// Where cutover keeps what it remembers between runs on this machine (only ever hints):
/// `$XDG_CACHE_HOME/cutover`, else `~/.cache/cutover`; None without either.
pub fn cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("cutover"))
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The local user's name, as ssh takes it for the default login: `$USER`, `$LOGNAME`, else
/// the password database's entry for this process's user. Asked once per run (a fleet asks
/// for every host).
pub fn local_user_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(password_entry_name)
            .unwrap_or_else(|| "root".into())
    })
    .clone()
}

/// The name of this process's effective user in the password database.
fn password_entry_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::zeroed();
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length it is given) and sets
    // `found` to `pwd` or null; the name is copied out before `buf` goes away.
    unsafe {
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || (*found).pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*found).pw_name);
        Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
    }
}

/// The starter config `cutover init` writes: the static preset.
pub const STARTER: &str = include_str!("../templates/presets/static.toml");

/// `cutover init --preset NAME`: a starting point per framework (name, what it is for, text).
pub const PRESETS: &[(&str, &str, &str)] = &[
    ("static", "a static site or a build output (the default)", STARTER),
    (
        "laravel",
        "Laravel: storage/ and .env shared, composer and artisan caches before the swap",
        include_str!("../templates/presets/laravel.toml"),
    ),
    (
        "symfony",
        "Symfony: var/log, var/sessions, public/uploads and .env.local shared, cache:clear and migrations",
        include_str!("../templates/presets/symfony.toml"),
    ),
    (
        "wordpress",
        "WordPress: wp-content/uploads and wp-config.php shared",
        include_str!("../templates/presets/wordpress.toml"),
    ),
    (
        "node",
        "Node.js: npm ci on the server, logs/, uploads/ and .env shared, a reload after the swap",
        include_str!("../templates/presets/node.toml"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cutover.toml");
        std::fs::write(&file, text).unwrap();
        let cfg = Config::load(&file);
        // keep the dir alive long enough for source canonicalization in callers
        std::mem::forget(dir);
        cfg
    }

    fn err(text: &str, target: Option<&str>) -> String {
        match load(text).and_then(|c| c.target(target)) {
            Ok(_) => panic!("expected an error"),
            Err(e) => {
                assert_eq!(crate::error::exit_code(&e), 2);
                format!("{e:#}")
            }
        }
    }

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _, text) in PRESETS {
            let fleet = load(text)
                .unwrap_or_else(|e| panic!("preset {name}: {e:#}"))
                .target(None)
                .unwrap_or_else(|e| panic!("preset {name}: {e:#}"));
            assert_eq!(fleet.hosts.len(), 1, "preset {name}");
        }
    }

    #[test]
    fn starter_config_parses() {
        let t = load(STARTER).unwrap().target(None).unwrap().hosts.remove(0);
        assert_eq!(t.path, "/var/www/app");
        assert_eq!(t.keep_releases, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(
            "keep_release = 3\n[targets.a]\nhost='local'\npath='/x'\n",
            None,
        );
        assert!(e.contains("keep_release"), "{e}");
    }

    #[test]
    fn unknown_key_in_target_is_named() {
        let e = err("[targets.a]\nhost='local'\npath='/x'\nprot=22\n", None);
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn relative_path_is_refused() {
        let e = err("[targets.a]\nhost='local'\npath='var/www'\n", None);
        assert!(
            e.contains("targets.a.path") && e.contains("absolute"),
            "{e}"
        );
    }

    #[test]
    fn root_path_is_refused() {
        let e = err("[targets.a]\nhost='local'\npath='/'\n", None);
        assert!(e.contains("refusing"), "{e}");
    }

    #[test]
    fn missing_source_dir_is_named() {
        let e = err(
            "source='nope'\n[targets.a]\nhost='local'\npath='/x'\n",
            None,
        );
        assert!(e.contains("source") && e.contains("nope"), "{e}");
    }

    #[test]
    fn unknown_target_lists_known_ones() {
        let e = err("[targets.a]\nhost='local'\npath='/x'\n", Some("b"));
        assert!(e.contains("`b`") && e.contains("a"), "{e}");
    }

    #[test]
    fn several_targets_need_a_name() {
        let e = err(
            "[targets.a]\nhost='local'\npath='/x'\n[targets.b]\nhost='local'\npath='/y'\n",
            None,
        );
        assert!(e.contains("several"), "{e}");
    }

    #[test]
    fn missing_config_suggests_init() {
        let e = Config::load(Path::new("/nonexistent/cutover.toml"))
            .err()
            .unwrap();
        assert!(format!("{e}").contains("cutover init"));
        assert_eq!(crate::error::exit_code(&e), 2);
    }

    #[test]
    fn target_overrides_win() {
        let t = load("keep_releases=5\n[hooks]\nbefore_swap=['a']\n[targets.a]\nhost='h'\npath='/x/'\nkeep_releases=2\n[targets.a.hooks]\nafter_swap=['b']\n")
            .unwrap().target(None).unwrap().hosts.remove(0);
        assert_eq!(t.keep_releases, 2);
        assert_eq!(t.path, "/x");
        assert_eq!(t.hooks.before_swap, vec!["a"]);
        assert_eq!(t.hooks.after_swap, vec!["b"]);
    }

    #[test]
    fn zero_keep_releases_is_refused() {
        let e = err(
            "keep_releases=0\n[targets.a]\nhost='local'\npath='/x'\n",
            None,
        );
        assert!(e.contains("keep_releases"), "{e}");
    }

    #[test]
    fn hosts_share_the_target_defaults_and_override_them() {
        let f = load(
            "[targets.p]\nhosts = ['web1', { host = '10.0.0.7', port = 2222, user = 'ops', path = '/srv/app' }]\n\
             user = 'deploy'\npath = '/var/www/app'\nport = 2200\n",
        )
        .unwrap()
        .target(None)
        .unwrap();
        assert_eq!(f.hosts.len(), 2);
        let (a, b) = (&f.hosts[0], &f.hosts[1]);
        assert_eq!(a.label, "web1");
        assert_eq!(a.path, "/var/www/app");
        assert!(matches!(&a.host, Host::Ssh { port: 2200, user, .. } if user == "deploy"));
        assert_eq!(b.path, "/srv/app");
        assert!(matches!(&b.host, Host::Ssh { port: 2222, user, .. } if user == "ops"));
    }

    #[test]
    fn host_and_hosts_are_exclusive() {
        let e = err("[targets.p]\nhost='a'\nhosts=['b']\npath='/x'\n", None);
        assert!(e.contains("both set"), "{e}");
        let e = err("[targets.p]\npath='/x'\n", None);
        assert!(e.contains("no `targets.p.host`"), "{e}");
    }

    #[test]
    fn the_password_database_names_this_user_as_id_does() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let id = String::from_utf8(id.stdout).unwrap();
        assert_eq!(password_entry_name().as_deref(), Some(id.trim()));
    }

    #[test]
    fn duplicate_hosts_are_a_config_error() {
        let e = err(
            "[targets.p]\nhosts=['web1', { host = 'WEB1', port = 22 }]\npath='/x'\nuser='u'\n",
            None,
        );
        assert!(e.contains("same server"), "{e}");
        // Same host, other path: two deploys, fine.
        assert!(
            load("[targets.p]\nhosts=['w', { host = 'w', path = '/y' }]\npath='/x'\n")
                .unwrap()
                .target(None)
                .is_ok()
        );
    }

    #[test]
    fn a_bad_host_entry_is_named() {
        let e = err(
            "[targets.p]\nhosts=['a', { host = 'b', prot = 1 }]\npath='/x'\n",
            None,
        );
        assert!(e.contains("entry 2") && e.contains("prot"), "{e}");
    }

    #[test]
    fn narrowing_to_one_host_names_the_others_when_wrong() {
        let f = load("[targets.p]\nhosts=['a','b']\npath='/x'\n")
            .unwrap()
            .target(None)
            .unwrap();
        let b = f.clone().narrow("b").unwrap();
        assert_eq!(b.hosts[0].label, "b");
        assert_eq!(
            b.narrowing_notice("deploying to").unwrap(),
            "--host b: deploying to ONE host of target p (2 hosts); the other host is left as it is"
        );
        assert_eq!(f.narrowing_notice("deploying to"), None);
        let e = format!("{:#}", f.narrow("c").unwrap_err());
        assert!(e.contains("a, b"), "{e}");
    }

    #[test]
    fn hooks_in_an_sftp_only_target_are_a_config_error() {
        let e = err(
            "[hooks]\nbefore_swap=['x']\n[targets.p]\nhost='h'\npath='/x'\nsftp_only=true\n",
            None,
        );
        assert!(e.contains("sftp_only") && e.contains("before_swap"), "{e}");
        let ok = load(
            "[hooks]\nbefore_swap=['x']\n[targets.p]\nhost='h'\npath='/x'\nsftp_only=true\n[targets.p.hooks]\nbefore_swap=[]\n",
        )
        .unwrap()
        .target(None)
        .unwrap();
        assert!(ok.hosts[0].sftp_only);
    }

    #[test]
    fn a_deploy_path_inside_the_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cutover.toml");
        let inside = dir.path().join("out");
        std::fs::write(
            &file,
            format!("[targets.a]\nhost='local'\npath='{}'\n", inside.display()),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            Config::load(&file).unwrap().target(None).unwrap_err()
        );
        assert!(e.contains("inside the source"), "{e}");
        std::fs::write(
            &file,
            "source='site'\n[targets.a]\nhost='local'\npath='/'\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("site")).unwrap();
        std::fs::write(
            &file,
            format!(
                "source='site'\n[targets.a]\nhost='local'\npath='{}'\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            Config::load(&file).unwrap().target(None).unwrap_err()
        );
        assert!(e.contains("inside the deploy path"), "{e}");
    }

    #[test]
    fn shared_paths_are_plain_relative_paths_that_do_not_overlap() {
        for (bad, why) in [
            ("shared_dirs=['/abs']", "absolute"),
            ("shared_dirs=['a/../b']", ".."),
            ("shared_dirs=['storage', 'storage/logs']", "overlap"),
            ("shared_files=['*.env']", "pattern"),
        ] {
            let e = err(&format!("{bad}\n[targets.a]\nhost='h'\npath='/x'\n"), None);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let t = load(
            "shared_dirs=['storage/']\nshared_files=['.env']\n[targets.a]\nhost='h'\npath='/x'\n",
        )
        .unwrap()
        .target(None)
        .unwrap();
        assert_eq!(t.hosts[0].shared.files, [".env"]);
    }
}
