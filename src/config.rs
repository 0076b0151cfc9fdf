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
    keep_releases: Option<i64>,
    copy: Option<String>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    host: String,
    port: Option<i64>,
    user: Option<String>,
    path: String,
    identity_file: Option<String>,
    known_hosts: Option<String>,
    host_key_checking: Option<String>,
    keep_releases: Option<i64>,
    hooks: Option<RawHooks>,
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
}

/// Everything one deploy to one target needs, with defaults applied and overrides merged.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub host: Host,
    /// Absolute, normalized deploy path on the server (no trailing slash).
    pub path: String,
    pub source: PathBuf,
    pub exclude: Vec<String>,
    pub include: Vec<String>,
    pub keep_releases: u32,
    pub copy: CopyMode,
    pub hooks: Hooks,
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

    /// Resolve `name` (or the only target, when `name` is None) to a validated [`Target`].
    pub fn target(&self, name: Option<&str>) -> Result<Target> {
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

        let path = validate_deploy_path(&raw.path)
            .map_err(|why| usage(format!("{file}: `{}` = {:?}: {why}", key("path"), raw.path)))?;

        let host = if raw.host == "local" {
            Host::Local
        } else {
            if raw.host.is_empty()
                || raw.host.starts_with('-')
                || raw
                    .host
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(usage(format!(
                    "{file}: `{}` = {:?} is not a host name",
                    key("host"),
                    raw.host
                )));
            }
            let port = match raw.port.unwrap_or(22) {
                p if (1..=65535).contains(&p) => p as u16,
                p => {
                    return Err(usage(format!(
                        "{file}: `{}` = {p}: expected a port between 1 and 65535",
                        key("port")
                    )))
                }
            };
            let user = match &raw.user {
                Some(u)
                    if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    return Err(usage(format!(
                        "{file}: `{}` = {u:?} is not a user name",
                        key("user")
                    )))
                }
                Some(u) => u.clone(),
                None => local_user_name(),
            };
            Host::Ssh {
                host: raw.host.clone(),
                port,
                user,
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
        };

        Ok(Target {
            name: name.clone(),
            host,
            path,
            source,
            exclude: self.raw.exclude.clone(),
            include: self.raw.include.clone(),
            keep_releases,
            copy,
            hooks,
            identity_file: raw.identity_file.as_deref().map(|p| expand_home(p, base)),
            known_hosts: raw.known_hosts.as_deref().map(|p| expand_home(p, base)),
            host_key_checking,
            explicit: ExplicitSsh {
                port: raw.port.is_some(),
                user: raw.user.is_some(),
                host_key_checking: raw.host_key_checking.is_some(),
            },
        })
    }
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

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub fn local_user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "root".into())
}

/// The starter config `cutover init` writes.
pub const STARTER: &str = r#"# cutover.toml — what to deploy, and where.
# Every key is listed with its default; delete what you do not need.

source = "."              # directory to deploy, relative to this file
exclude = []              # gitignore-style patterns left out, e.g. ["node_modules/", "*.log"]
include = []              # patterns forced back in, e.g. a gitignored ["public/build/"]
keep_releases = 3         # finished releases kept on the server, current included (>= 1)
copy = "full"             # a new release starts as "full" (cp -a) or "hardlink" (cp -al) copy of the previous

[hooks]                   # shell commands run with sh -c inside the new release
before_swap = []          # e.g. ["php artisan config:cache"]; a failure aborts, current untouched
after_swap = []           # run once the new release is live; a failure exits 3

[targets.production]
host = "example.com"      # or "local" to deploy on this machine without SSH
port = 22
user = "deploy"           # default: your local user name
path = "/var/www/app"     # absolute; cutover creates releases/, shared/, current and .cutover/ here
# identity_file = "~/.ssh/id_ed25519"  # default: ssh-agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa
# known_hosts = "~/.ssh/known_hosts"   # /etc/ssh/ssh_known_hosts is read too
# host_key_checking = "strict"         # or "accept-new": record unknown hosts, still refuse changed keys
# keep_releases = 5                    # per-target override; [targets.production.hooks] works too
"#;

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
    fn starter_config_parses() {
        let t = load(STARTER).unwrap().target(None).unwrap();
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
            .unwrap().target(None).unwrap();
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
}
