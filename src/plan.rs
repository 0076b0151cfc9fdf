//! Previous release's manifest + the new one → what to upload, delete and create.
//!
//! The new release starts as a copy of the previous one (when its manifest is known), so the
//! plan only names differences. Files the application wrote into the previous release at runtime
//! are in no manifest and are therefore neither uploaded nor deleted: the copy carries them over.
//!
//! The plan also names every directory of the copy that the script will work inside
//! ([`Plan::touched_dirs`]): the script checks each is a real directory before it deletes,
//! creates or unpacks anything, because a symbolic link planted where the manifest has a
//! directory would otherwise lead those commands outside the release.

use std::collections::BTreeSet;

use crate::source::{Entry, Kind, Manifest};

/// How the new release begins on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// No usable previous release: everything is uploaded and the staged tree becomes the release.
    Empty,
    /// Copy the previous release (whose manifest the plan was built from), then apply the diff.
    Previous(crate::layout::ReleaseId),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub base: Base,
    /// Files and symlinks to stage and move into the release, sorted.
    pub uploads: Vec<String>,
    /// Of `uploads`, the links to `shared/` (declared shared paths and links shaped like them):
    /// they travel on every deploy (the script remakes them) but are no content of the source,
    /// so they are counted and shown apart.
    pub shared_links: Vec<String>,
    /// Paths to remove from the copied release before anything is moved in: paths gone from the
    /// source, paths whose type changed, and changed symlinks. Never a child of another entry.
    pub deletes: Vec<String>,
    /// Directories the copied release lacks (only with a previous base).
    pub new_dirs: Vec<String>,
    pub unchanged: usize,
    pub upload_bytes: u64,
    /// Directories of the copied release that deletes, new directories and uploads reach
    /// through (and the new directories themselves), parents first: each must be a real
    /// directory (or, for a new one, missing). Empty without a previous base.
    pub touched_dirs: Vec<String>,
    /// Nothing differs from the previous release: no release needs to be built.
    pub noop: bool,
}

impl Plan {
    pub fn build(
        previous: Option<(&crate::layout::ReleaseId, &Manifest)>,
        new: &Manifest,
        full: bool,
    ) -> Plan {
        // --full makes the release from the source alone: nothing is copied from the live
        // release, so whatever was edited or planted in it by hand stays behind there.
        let Some((prev_id, prev)) = previous.filter(|_| !full) else {
            let uploads: Vec<String> = new
                .entries
                .iter()
                .filter(|(_, e)| !e.is_dir())
                .map(|(p, _)| p.clone())
                .collect();
            let shared_links = shared_links_of(&uploads, new);
            return Plan {
                base: Base::Empty,
                upload_bytes: new.total_bytes(),
                shared_links,
                uploads,
                deletes: vec![],
                new_dirs: vec![],
                unchanged: 0,
                touched_dirs: vec![],
                noop: false,
            };
        };

        let mut deletes = BTreeSet::new();
        for (path, old) in &prev.entries {
            match new.entries.get(path) {
                None => {
                    deletes.insert(path.clone());
                }
                Some(e) if !same_type(old, e) => {
                    deletes.insert(path.clone());
                }
                // A symlink is replaced by deleting then moving the new one in: `mv` onto a link
                // to a directory would move into that directory instead of replacing the link.
                Some(e) if matches!(old.kind, Kind::Symlink { .. }) && old != e => {
                    deletes.insert(path.clone());
                }
                _ => {}
            }
        }
        let deletes: Vec<String> = deletes
            .iter()
            .filter(|p| !has_ancestor_in(p, &deletes))
            .cloned()
            .collect();

        let mut uploads = Vec::new();
        let mut new_dirs = Vec::new();
        let mut unchanged = 0;
        let mut upload_bytes = 0;
        // Uploads of entries identical to the previous release's: shared-shaped links (see
        // `shared_shaped`). They alone do not make a new release.
        let mut same = 0;
        for (path, e) in &new.entries {
            let old = prev.entries.get(path).filter(|old| same_type(old, e));
            match (&e.kind, old) {
                (Kind::Dir, Some(_)) => {}
                (Kind::Dir, None) => new_dirs.push(path.clone()),
                (_, Some(old)) if old == e && !shared_shaped(path, e) => unchanged += 1,
                (kind, old) => {
                    if old == Some(e) {
                        same += 1;
                    }
                    if let Kind::File { size, .. } = kind {
                        upload_bytes += size;
                    }
                    uploads.push(path.clone());
                }
            }
        }
        let mut touched = BTreeSet::new();
        for p in deletes.iter().chain(&uploads) {
            touched.extend(parents(p));
        }
        for p in &new_dirs {
            touched.extend(parents(p));
            touched.insert(p.as_str());
        }
        // A path the script deletes first (and anything below it) is gone before anything
        // works inside it: no need for it to be a directory now.
        let deleted = |p: &str| {
            deletes.iter().any(|d| {
                p == d
                    || (p.len() > d.len()
                        && p.starts_with(d.as_str())
                        && p.as_bytes()[d.len()] == b'/')
            })
        };
        let touched_dirs = touched
            .into_iter()
            .filter(|p| !deleted(p))
            .map(String::from)
            .collect();
        let noop = deletes.is_empty() && new_dirs.is_empty() && uploads.len() == same;
        let shared_links = shared_links_of(&uploads, new);
        Plan {
            base: Base::Previous(prev_id.clone()),
            shared_links,
            uploads,
            deletes,
            new_dirs,
            unchanged,
            upload_bytes,
            touched_dirs,
            noop,
        }
    }
}

/// `a/b/c` → `a`, `a/b` (not the path itself).
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

impl Plan {
    /// Uploads that are content of the source: files and links other than shared links.
    pub fn files_to_upload(&self) -> usize {
        self.uploads.len() - self.shared_links.len()
    }
}

/// Those of `uploads` that are links to `shared/` (see [`Plan::shared_links`]).
fn shared_links_of(uploads: &[String], new: &Manifest) -> Vec<String> {
    uploads
        .iter()
        .filter(|p| new.entries.get(*p).is_some_and(|e| shared_shaped(p, e)))
        .cloned()
        .collect()
}

/// A repository symlink shaped exactly like a shared link is removed by the script together
/// with the carried-over shared links, so it must travel again on every deploy.
fn shared_shaped(path: &str, e: &Entry) -> bool {
    matches!(&e.kind, Kind::Symlink { target } if looks_like_shared_link(path, target))
}

/// The target the deploy script gives a shared link at `path`: `../../shared/path` plus one
/// `../` per directory level (see templates/deploy.sh.hbs, "link shared/").
pub fn looks_like_shared_link(path: &str, target: &str) -> bool {
    let depth = path.matches('/').count();
    let expected = format!("{}shared/{path}", "../".repeat(2 + depth));
    target == expected
}

fn same_type(a: &Entry, b: &Entry) -> bool {
    std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
}

fn has_ancestor_in(path: &str, set: &BTreeSet<String>) -> bool {
    let mut cur = path;
    while let Some((parent, _)) = cur.rsplit_once('/') {
        if set.contains(parent) {
            return true;
        }
        cur = parent;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ReleaseId;

    fn m(items: &[(&str, &str)]) -> Manifest {
        let mut out = Manifest::default();
        for (p, spec) in items {
            let kind = match *spec {
                "d" => Kind::Dir,
                s if s.starts_with("l:") => Kind::Symlink {
                    target: s[2..].into(),
                },
                s => Kind::File {
                    size: s.len() as u64,
                    hash: xxhash_rust::xxh3::xxh3_128(s.as_bytes()),
                },
            };
            out.entries
                .insert(p.to_string(), Entry { kind, mode: 0o644 });
        }
        out
    }

    /// The digest the no-op shortcut compares stands for the plan's own verdict: equal
    /// digests exactly when the plan between the two trees changes nothing.
    #[test]
    fn equal_tree_digests_exactly_when_the_plan_is_a_noop() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let base = m(&[
            ("a", "d"),
            ("a/x", "1"),
            ("l", "l:a"),
            ("uploads", "l:../../shared/uploads"),
        ]);
        let mode = |mut t: Manifest, p: &str, mode: u32| {
            t.entries.get_mut(p).unwrap().mode = mode;
            t
        };
        let variants = [
            base.clone(),
            m(&[
                ("a", "d"),
                ("a/x", "2"),
                ("l", "l:a"),
                ("uploads", "l:../../shared/uploads"),
            ]),
            m(&[
                ("a", "d"),
                ("a/x", "1"),
                ("l", "l:b"),
                ("uploads", "l:../../shared/uploads"),
            ]),
            m(&[("a", "d"), ("a/x", "1"), ("l", "l:a")]),
            m(&[
                ("a", "d"),
                ("a/x", "1"),
                ("a/y", "d"),
                ("l", "l:a"),
                ("uploads", "l:../../shared/uploads"),
            ]),
            m(&[
                ("a", "d"),
                ("a/x", "1"),
                ("l", "d"),
                ("uploads", "l:../../shared/uploads"),
            ]),
            m(&[
                ("a", "1"),
                ("l", "l:a"),
                ("uploads", "l:../../shared/uploads"),
            ]),
            mode(base.clone(), "a/x", 0o755),
            mode(base.clone(), "l", 0o755),
            // a directory's mode is not deployed on its own: the same tree
            mode(base.clone(), "a", 0o700),
        ];
        for (i, old) in variants.iter().enumerate() {
            for (j, new) in variants.iter().enumerate() {
                let noop = Plan::build(Some((&id, old)), new, false).noop;
                let same = old.tree_digest() == new.tree_digest();
                assert_eq!(
                    noop, same,
                    "variants {i} -> {j}: noop {noop}, same digest {same}"
                );
            }
        }
        assert_eq!(base.tree_digest().len(), 32);
    }

    #[test]
    fn first_deploy_uploads_every_file_and_link() {
        let new = m(&[("a", "d"), ("a/x", "1"), ("l", "l:a")]);
        let p = Plan::build(None, &new, false);
        assert_eq!(p.base, Base::Empty);
        assert_eq!(p.uploads, ["a/x", "l"]);
        assert_eq!(p.upload_bytes, 1);
    }

    #[test]
    fn incremental_uploads_changes_and_deletes_removals() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[
            ("a", "d"),
            ("a/x", "1"),
            ("a/y", "2"),
            ("gone", "d"),
            ("gone/z", "3"),
            ("keep", "4"),
        ]);
        let new = m(&[
            ("a", "d"),
            ("a/x", "1 changed"),
            ("a/y", "2"),
            ("b", "d"),
            ("b/n", "5"),
            ("keep", "4"),
        ]);
        let p = Plan::build(Some((&id, &old)), &new, false);
        assert_eq!(p.uploads, ["a/x", "b/n"]);
        assert_eq!(
            p.deletes,
            ["gone"],
            "children of a deleted dir are not listed"
        );
        assert_eq!(p.new_dirs, ["b"]);
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn type_changes_delete_first() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[("a", "1"), ("b", "d"), ("c", "l:x")]);
        let new = m(&[("a", "d"), ("a/f", "x"), ("b", "2"), ("c", "l:y")]);
        let p = Plan::build(Some((&id, &old)), &new, false);
        assert_eq!(p.deletes, ["a", "b", "c"]);
        assert_eq!(p.new_dirs, ["a"]);
        assert_eq!(p.uploads, ["a/f", "b", "c"]);
    }

    #[test]
    fn full_builds_from_the_source_alone() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[("x", "1"), ("y", "2")]);
        let new = m(&[("d", "d"), ("x", "1")]);
        let p = Plan::build(Some((&id, &old)), &new, true);
        assert_eq!(
            p.base,
            Base::Empty,
            "nothing is copied from the live release"
        );
        assert_eq!(p.uploads, ["x"]);
        assert!(p.deletes.is_empty() && p.new_dirs.is_empty() && p.touched_dirs.is_empty());
        assert_eq!(p.unchanged, 0);
        assert!(!p.noop, "--full always builds a release");
    }

    #[test]
    fn repository_symlinks_shaped_like_shared_links_are_always_uploaded() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[
            ("uploads", "l:../../shared/uploads"),
            ("conf", "d"),
            ("conf/x", "l:../../../shared/conf/x"),
            ("other", "l:../x"),
        ]);
        let p = Plan::build(Some((&id, &old)), &old, false);
        assert_eq!(p.uploads, ["conf/x", "uploads"]);
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn mode_change_is_an_upload() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[("x", "1")]);
        let mut new = old.clone();
        new.entries.get_mut("x").unwrap().mode = 0o755;
        assert_eq!(Plan::build(Some((&id, &old)), &new, false).uploads, ["x"]);
    }

    #[test]
    fn touched_dirs_are_every_directory_the_script_works_inside() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[
            ("a", "d"),
            ("a/b", "d"),
            ("a/b/x", "1"),
            ("c", "d"),
            ("c/y", "2"),
        ]);
        let new = m(&[
            ("a", "d"),
            ("a/b", "d"),
            ("a/b/x", "changed"),
            ("c", "d"),
            ("n", "d"),
            ("n/m", "d"),
        ]);
        let p = Plan::build(Some((&id, &old)), &new, false);
        assert_eq!(p.touched_dirs, ["a", "a/b", "c", "n", "n/m"]);
        assert!(!p.noop);
    }

    #[test]
    fn a_path_deleted_first_is_not_a_touched_dir() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[("a", "1"), ("d", "d"), ("d/x", "1")]);
        let new = m(&[("a", "d"), ("a/f", "x"), ("d", "1")]);
        let p = Plan::build(Some((&id, &old)), &new, false);
        assert_eq!(p.deletes, ["a", "d"]);
        assert!(p.touched_dirs.is_empty(), "{:?}", p.touched_dirs);
    }

    #[test]
    fn an_identical_tree_is_a_noop_even_with_shared_shaped_links() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let old = m(&[("uploads", "l:../../shared/uploads"), ("x", "1")]);
        let p = Plan::build(Some((&id, &old)), &old, false);
        assert_eq!(p.uploads, ["uploads"], "shared-shaped links travel again");
        assert!(p.noop);
        assert!(
            !Plan::build(Some((&id, &old)), &old, true).noop,
            "--full builds anew"
        );
        assert!(
            !Plan::build(None, &old, false).noop,
            "no previous release: something to build"
        );
        let mut new = old.clone();
        new.entries.get_mut("x").unwrap().mode = 0o755;
        assert!(!Plan::build(Some((&id, &old)), &new, false).noop);
    }
}
