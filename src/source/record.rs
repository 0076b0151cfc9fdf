//! What a release says about itself, stored at the top of its manifest (`#KEY<TAB>VALUE`
//! lines): who deployed it and when, with which cutover, and — when the source is inside a git
//! repository — the commit, the branch and whether the working tree had changes. `cutover
//! releases` shows them.
//!
//! git is asked with the `git` command (no library: it is what the user has, and reads every
//! repository format that git does). No git, or no repository: no git fields, and nothing fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// The git state of a source directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Git {
    pub commit: String,
    /// Empty on a detached HEAD.
    pub branch: String,
    /// The working tree has changes (tracked or untracked files) not in `commit`.
    pub dirty: bool,
}

/// The git state of `source`, when it is inside a work tree and git is installed.
pub fn git_state(source: &Path) -> Option<Git> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(source)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .ok()
    };
    let commit = git(&["rev-parse", "--verify", "-q", "HEAD"])?;
    if !commit.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_string();
    let branch = git(&["symbolic-ref", "--short", "-q", "HEAD"])
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=normal"])
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some(Git {
        commit,
        branch,
        dirty,
    })
}

/// A release's record, as stored in its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    pub created_at: String,
    pub deployed_by: String,
    pub cutover_version: String,
    pub git: Option<Git>,
}

impl Record {
    /// The record of a release deployed now by this user, from a source in `git` state.
    pub fn now(git: Option<Git>) -> Record {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".into());
        Record {
            created_at: crate::layout::iso(crate::layout::now()),
            deployed_by: format!("{}@{host}", crate::config::local_user_name()),
            cutover_version: env!("CARGO_PKG_VERSION").to_string(),
            git,
        }
    }

    pub fn to_meta(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("created_at".into(), self.created_at.clone());
        m.insert("deployed_by".into(), self.deployed_by.clone());
        m.insert("cutover_version".into(), self.cutover_version.clone());
        if let Some(g) = &self.git {
            m.insert("git_commit".into(), g.commit.clone());
            m.insert("git_branch".into(), g.branch.clone());
            m.insert("git_dirty".into(), g.dirty.to_string());
        }
        m
    }

    /// The record in a manifest's meta; fields it lacks (a release of an older cutover) are
    /// empty.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Record {
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        Record {
            created_at: get("created_at"),
            deployed_by: get("deployed_by"),
            cutover_version: get("cutover_version"),
            git: meta.get("git_commit").map(|commit| Git {
                commit: commit.clone(),
                branch: get("git_branch"),
                dirty: get("git_dirty") == "true",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_meta() {
        let r = Record {
            created_at: "2026-01-01T00:00:00Z".into(),
            deployed_by: "me@box".into(),
            cutover_version: "1.2.3".into(),
            git: Some(Git {
                commit: "abc".into(),
                branch: "main".into(),
                dirty: true,
            }),
        };
        assert_eq!(Record::from_meta(&r.to_meta()), r);
        assert_eq!(Record::from_meta(&BTreeMap::new()).git, None);
    }

    #[test]
    fn git_state_of_a_real_repository() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            assert!(Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .output()
                .unwrap()
                .status
                .success());
        };
        assert_eq!(git_state(dir.path()), None, "not a repository yet");
        git(&["init", "-q", "-b", "trunk"]);
        std::fs::write(dir.path().join("a"), "1").unwrap();
        git(&["add", "a"]);
        git(&["commit", "-q", "-m", "one"]);
        let clean = git_state(dir.path()).unwrap();
        assert_eq!(clean.branch, "trunk");
        assert_eq!(clean.commit.len(), 40);
        assert!(!clean.dirty);
        std::fs::write(dir.path().join("a"), "2").unwrap();
        assert!(git_state(dir.path()).unwrap().dirty);
    }
}
