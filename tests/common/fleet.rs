//! A fleet of throwaway servers: one real sshd per host, each on its own port with its own host
//! key, client key and deploy path, some of them behind a delay proxy (tests/common/proxy.rs).
//!
//! ```text
//! TMP/src/                  the source tree to deploy (written by the test)
//! TMP/home/                 HOME of the cutover process, so the user's ~/.ssh is never read
//! TMP/ssh_config            CUTOVER_SSH_CONFIG: `Host web01` → 127.0.0.1, its port, its key
//! TMP/known_hosts           every host's key, under the port the client connects to
//! TMP/hosts/web01/app/      web01's deploy path; TMP/hosts/web01/ is where a test leaves
//!                           markers for hooks (`$CUTOVER_DEPLOY_PATH/..`)
//! TMP/cutover.toml          one target `t`: hosts = [{ host = "web01", path = … }, …]
//! ```
//!
//! The hosts are ssh config aliases, as a real fleet's often are, so every message names
//! `web01` rather than `127.0.0.1:40213`. The sshds start in parallel: twenty take about as
//! long as two.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::site::{
    list_names, mkdirs, spawn_cutover_env, toml_str, write_file, DeployPath, Run, Running, TARGET,
};
use super::Sshd;

/// One server of the fleet.
pub struct FleetHost {
    /// `web01`, `web02`, …: its name in cutover.toml and in every message.
    pub label: String,
    pub sshd: Sshd,
    /// The port the client connects to: the sshd's own, or its delay proxy's.
    pub port: u16,
    /// The delay of its proxy, each way (zero: no proxy).
    pub one_way: Duration,
    /// TMP/hosts/LABEL: holds the deploy path, and the markers hooks look for.
    pub dir: PathBuf,
    pub app: DeployPath,
}

impl FleetHost {
    /// A file beside the deploy path (`$CUTOVER_DEPLOY_PATH/../NAME` for a hook).
    pub fn marker(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub struct Fleet {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub home: PathBuf,
    pub config: PathBuf,
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
    pub hosts: Vec<FleetHost>,
    /// Top-level TOML (before the target table), e.g. `barrier_timeout = 5`.
    top: String,
    /// Extra keys inside `[targets.t]`.
    target_extra: String,
    /// The labels cutover.toml lists (None: every host).
    members: Option<Vec<String>>,
    /// More names for hosts (see [`Fleet::add_alias`]): the name, the host's index, the port.
    aliases: Vec<(String, usize, u16)>,
    /// The user every host is logged in as (default: the one running the tests).
    user: String,
}

/// `web01` … `web20`.
pub fn label(i: usize) -> String {
    format!("web{:02}", i + 1)
}

impl Fleet {
    /// `n` hosts on the loopback, no delay. None when sshd is not installed (the test is
    /// skipped; panics under CI).
    pub fn start(n: usize) -> Option<Fleet> {
        Fleet::start_with_delays(&vec![Duration::ZERO; n])
    }

    /// One host per entry, behind a proxy delaying each way by that much (none for zero).
    pub fn start_with_delays(delays: &[Duration]) -> Option<Fleet> {
        if !super::sshd_or_skip() {
            return None;
        }
        let sshds: Vec<Sshd> = std::thread::scope(|s| {
            let started: Vec<_> = delays.iter().map(|_| s.spawn(Sshd::start)).collect();
            started.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let tmp = tempfile::Builder::new()
            .prefix("cutover-fleet-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        let src = root.join("src");
        let home = root.join("home");
        mkdirs(&src);
        mkdirs(&home);
        let mut hosts = Vec::new();
        for (i, (sshd, delay)) in sshds.into_iter().zip(delays).enumerate() {
            let port = if delay.is_zero() {
                sshd.port
            } else {
                super::proxy::start(sshd.port, *delay)
            };
            let label = label(i);
            let dir = root.join("hosts").join(&label);
            mkdirs(&dir);
            hosts.push(FleetHost {
                app: DeployPath::new(&dir.join("app")),
                label,
                sshd,
                port,
                one_way: *delay,
                dir,
            });
        }
        let mut fleet = Fleet {
            src,
            home,
            config: root.join("cutover.toml"),
            ssh_config: root.join("ssh_config"),
            known_hosts: root.join("known_hosts"),
            hosts,
            tmp,
            top: String::new(),
            target_extra: String::new(),
            members: None,
            aliases: Vec::new(),
            user: String::new(),
        };
        fleet.user = fleet.hosts[0].sshd.user.clone();
        fleet.write_ssh_files();
        fleet.write_config();
        Some(fleet)
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn host(&self, label: &str) -> &FleetHost {
        self.hosts
            .iter()
            .find(|h| h.label == label)
            .unwrap_or_else(|| panic!("no host {label}"))
    }

    /// Puts host `label` behind a new proxy with `link` (the ssh config and known_hosts follow).
    pub fn proxy_host(&mut self, label: &str, link: super::proxy::Link) {
        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.label == label)
            .unwrap_or_else(|| panic!("no host {label}"));
        h.port = super::proxy::start_link(h.sshd.port, link);
        h.one_way = link.delay;
        self.write_ssh_files();
    }

    /// Another name for host `of` in the ssh config, listed in cutover.toml too (with `of`'s
    /// deploy path): to the same port, or through a new proxy of its own when `proxied` (the
    /// same server, by a way the config cannot tell is the same).
    pub fn add_alias(&mut self, alias: &str, of: &str, proxied: bool) {
        let i = self
            .hosts
            .iter()
            .position(|h| h.label == of)
            .unwrap_or_else(|| panic!("no host {of}"));
        let port = if proxied {
            super::proxy::start(self.hosts[i].sshd.port, Duration::ZERO)
        } else {
            self.hosts[i].port
        };
        self.aliases.push((alias.to_string(), i, port));
        self.write_ssh_files();
        self.write_config();
    }

    /// Forgets every [`Fleet::add_alias`].
    pub fn clear_aliases(&mut self) {
        self.aliases.clear();
        self.write_ssh_files();
        self.write_config();
    }

    fn write_ssh_files(&self) {
        let mut config = String::new();
        let mut known = String::new();
        let names = self
            .hosts
            .iter()
            .map(|h| (h.label.as_str(), h, h.port))
            .chain(
                self.aliases
                    .iter()
                    .map(|(a, i, port)| (a.as_str(), &self.hosts[*i], *port)),
            );
        for (name, h, port) in names {
            writeln!(
                config,
                "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {}\n  IdentitiesOnly yes\n",
                h.sshd.identity.display()
            )
            .unwrap();
            let line = h.sshd.host_public_key_line();
            let (_, key) = line.split_once(' ').unwrap();
            writeln!(known, "[127.0.0.1]:{port} {key}").unwrap();
        }
        fs::write(&self.ssh_config, config).unwrap();
        fs::write(&self.known_hosts, known).unwrap();
    }

    /// Logs in to every host as `user` (who must own nothing yet: every host's directory is
    /// handed to them): a deploy user whose login runs no start-up files of its own, unlike
    /// this machine's root.
    pub fn login_as(&mut self, user: &str) {
        for h in &self.hosts {
            let ok = std::process::Command::new("chown")
                .args(["-R", user])
                .arg(&h.dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown -R {user} {}", h.dir.display());
        }
        self.user = user.to_string();
        self.write_config();
    }

    /// Replaces the top-level TOML and the extra target keys, and rewrites the config file.
    pub fn configure(&mut self, top: &str, target_extra: &str) {
        self.top = top.to_string();
        self.target_extra = target_extra.to_string();
        self.write_config();
    }

    /// Lists only these hosts in cutover.toml (None: all of them).
    pub fn only(&mut self, labels: Option<&[&str]>) {
        self.members = labels.map(|l| l.iter().map(|s| s.to_string()).collect());
        self.write_config();
    }

    /// The hosts cutover.toml lists.
    pub fn members(&self) -> Vec<&FleetHost> {
        self.hosts
            .iter()
            .filter(|h| self.members.as_ref().is_none_or(|m| m.contains(&h.label)))
            .collect()
    }

    fn write_config(&self) {
        let entry = |name: &str, h: &FleetHost| {
            format!(
                "  {{ host = {}, path = {} }},",
                toml_str(name),
                toml_str(&h.app.path.display().to_string())
            )
        };
        let entries: Vec<String> = self
            .members()
            .iter()
            .map(|h| entry(&h.label, h))
            .chain(
                self.aliases
                    .iter()
                    .map(|(a, i, _)| entry(a, &self.hosts[*i])),
            )
            .collect();
        let user = &self.user;
        let text = format!(
            "source = {}\n{}\n[targets.{TARGET}]\nuser = {}\nknown_hosts = {}\nhosts = [\n{}\n]\n{}\n",
            toml_str(&self.src.display().to_string()),
            self.top,
            toml_str(user),
            toml_str(&self.known_hosts.display().to_string()),
            entries.join("\n"),
            self.target_extra
        );
        fs::write(&self.config, text).unwrap();
    }

    // --- running cutover ---------------------------------------------------------------------

    /// Starts `cutover --config CONFIG ARGS...` (HOME private, the fleet's ssh config).
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut full: Vec<String> = vec!["--config".into(), self.config.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let ssh_config = self.ssh_config.display().to_string();
        spawn_cutover_env(
            self.root(),
            &self.home,
            &full,
            &[("CUTOVER_SSH_CONFIG", ssh_config.as_str())],
        )
    }

    /// Runs cutover and waits for it, and for what the deploy scripts do after it returned
    /// (pruning: see [`DeployPath::wait_for_prune`]).
    pub fn cutover(&self, args: &[&str]) -> Run {
        let run = self.spawn(args).wait();
        for h in &self.hosts {
            h.app.wait_for_prune();
        }
        run
    }

    /// A deploy that must succeed: every listed host ends on one new release, whose ID is
    /// returned.
    pub fn deploy(&self) -> String {
        let run = self.cutover(&["deploy"]);
        run.expect_code(0, "fleet deploy");
        let id = self.members()[0]
            .app
            .current_id()
            .unwrap_or_else(|| panic!("no current after the deploy\n{}", run.describe()));
        for h in self.members() {
            assert_eq!(
                h.app.current_id().as_deref(),
                Some(id.as_str()),
                "{}: current after the deploy\n{}",
                h.label,
                run.describe()
            );
        }
        id
    }

    /// What `current` points to on every host (all hosts, listed or not), in order.
    pub fn currents(&self) -> Vec<Option<String>> {
        self.hosts.iter().map(|h| h.app.current_id()).collect()
    }

    /// No lock, staging, partial release or temporary link on any host.
    pub fn assert_clean(&self, context: &str) {
        for h in &self.hosts {
            h.app.assert_clean(&format!("{context}, host {}", h.label));
        }
    }

    /// Waits until nothing that a deploy started runs on any host: every script and everything
    /// it started ended. At most 30 s: a stopped watchdog's last `sleep 1` may still run, and
    /// on this machine a login shell given no script may still be in root's start-up files
    /// (`pyenv init`, whose lock twenty logins at once queue on) when the client has gone; a
    /// watchdog left behind, what this is for, would run for barrier_timeout (300 s).
    pub fn assert_nothing_left_running(&self, context: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running: Vec<(String, Vec<(u32, String)>)> = self
                .hosts
                .iter()
                .map(|h| (h.label.clone(), h.sshd.session_processes()))
                .filter(|(_, p)| !p.is_empty())
                .collect();
            if running.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: still running on the hosts: {running:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every host's releases, in order.
    pub fn releases(&self) -> Vec<Vec<String>> {
        self.hosts
            .iter()
            .map(|h| list_names(&h.app.at("releases")))
            .collect()
    }

    // --- the source tree ---------------------------------------------------------------------

    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) {
        write_file(&self.src.join(rel), content.as_ref(), 0o644);
    }
}
