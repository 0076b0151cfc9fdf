//! The rendered deploy script under every common /bin/sh: dash, bash --posix, busybox sh, posh,
//! yash and mksh, plus a userland without `mv -T` and a pure busybox userland. Each shell runs
//! the same sequence of deploys (by `--emit-script`, then `SHELL script`), and the resulting
//! trees and exit codes must be identical.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Names that would be shell syntax if anything interpolated them unquoted.
const HOSTILE: &[&str] = &[
    "it's",
    "say \"hi\"",
    "$(touch canary)",
    "`touch canary`",
    "a;b|c&d<e>f",
    "new\nline",
    "tab\there",
    "-rf",
    "--help",
    "sp ace",
    "*",
    "?",
    "[x]",
    "back\\slash",
    "${HOME}",
    "%s%n",
    "#hash",
    "~tilde",
    "ünïcødé ✓",
    ".htaccess",
];

struct Shell {
    name: &'static str,
    /// Program and arguments that run a script file.
    argv: &'static [&'static str],
}

const SHELLS: &[Shell] = &[
    Shell {
        name: "dash",
        argv: &["dash"],
    },
    Shell {
        name: "bash-posix",
        argv: &["bash", "--posix"],
    },
    Shell {
        name: "busybox",
        argv: &["busybox", "sh"],
    },
    Shell {
        name: "posh",
        argv: &["posh"],
    },
    Shell {
        name: "yash",
        argv: &["yash"],
    },
    Shell {
        name: "mksh",
        argv: &["mksh"],
    },
];

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A deploy path and source tree driven through `--emit-script` + a chosen shell.
struct Lab {
    dir: tempfile::TempDir,
    /// PATH for the script: a shim dir whose `sh` is the shell under test, then the rest.
    path_env: String,
    argv: Vec<String>,
}

impl Lab {
    fn new(argv: &[&str], userland: Option<&Path>) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("shim");
        fs::create_dir(&shim).unwrap();
        // `sh -c` inside the script (find -exec, hooks) runs the same shell.
        let wrapper = format!("#!/bin/sh\nexec {} \"$@\"\n", argv.join(" "));
        fs::write(shim.join("sh"), wrapper).unwrap();
        fs::set_permissions(shim.join("sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let rest = match userland {
            Some(u) => u.display().to_string(),
            None => std::env::var("PATH").unwrap(),
        };
        let lab = Lab {
            path_env: format!("{}:{rest}", shim.display()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        fs::create_dir(lab.src()).unwrap();
        lab.write_config("");
        lab
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
    fn app(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    fn write_config(&self, hooks: &str) {
        let cfg = format!(
            "source = \"src\"\nkeep_releases = 3\n[hooks]\n{hooks}\n[targets.t]\nhost = \"local\"\npath = \"{}\"\n",
            self.app().display()
        );
        fs::write(self.dir.path().join("cutover.toml"), cfg).unwrap();
    }

    /// `cutover deploy --emit-script`, then run the script with the shell under test.
    fn deploy(&self) -> i32 {
        let emitted = Command::new(common::cutover_bin())
            .args(["deploy", "-q", "--emit-script", "--config"])
            .arg(self.dir.path().join("cutover.toml"))
            .output()
            .unwrap();
        assert!(
            emitted.status.success(),
            "emit failed: {}",
            String::from_utf8_lossy(&emitted.stderr)
        );
        let script = self.dir.path().join("deploy.sh");
        fs::write(&script, &emitted.stdout).unwrap();
        let out = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .arg(&script)
            .env("PATH", &self.path_env)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "{} exited {:?}:\n{}",
                self.argv.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.code().unwrap_or(-1)
    }
}

#[derive(Debug, PartialEq, Eq, Clone)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(String),
}

/// Every entry under `root` (but `.cutover/`), with release names replaced by their rank so
/// trees of different runs compare equal.
fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut releases: Vec<String> = fs::read_dir(root.join("releases"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    releases.sort();
    let norm = |s: &str| {
        let mut s = s.to_string();
        for (i, r) in releases.iter().enumerate() {
            s = s.replace(r.as_str(), &format!("R{i}"));
        }
        s
    };
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".cutover" {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            let node = if md.file_type().is_symlink() {
                Node::Link(norm(&fs::read_link(&p).unwrap().to_string_lossy()))
            } else if md.is_dir() {
                stack.push(p.clone());
                Node::Dir(md.permissions().mode() & 0o7777)
            } else {
                Node::File(md.permissions().mode() & 0o7777, fs::read(&p).unwrap())
            };
            out.insert(norm(&rel), node);
        }
    }
    out
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// The same sequence of deploys for every shell; returns exit codes and the final tree.
fn scenario(lab: &Lab) -> (Vec<i32>, Vec<BTreeMap<String, Node>>) {
    let src = lab.src();
    let mut codes = Vec::new();
    let mut trees = Vec::new();

    // v1: a small app with hostile names at the top and in a hostile directory.
    write(&src.join("index.php"), "<?php echo 1;");
    write(&src.join("assets/app.css"), "body{}");
    write(&src.join("bin/console"), "#!/bin/sh\necho hi\n");
    fs::set_permissions(src.join("bin/console"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("index.php", src.join("home.php")).unwrap();
    for (i, name) in HOSTILE.iter().enumerate() {
        write(&src.join(name), &format!("file {i}"));
        write(&src.join("-n").join(name), &format!("nested {i}"));
    }
    codes.push(lab.deploy());
    trees.push(tree(&lab.app()));

    // Shared entries: a new dir, a file inside a repo dir, a collision, hostile names.
    let shared = lab.app().join("shared");
    write(&shared.join("uploads/photo.jpg"), "jpg");
    write(&shared.join("assets/user.css"), "user");
    write(&shared.join("index.php"), "collision");
    write(&shared.join("-n").join("$(touch canary) shared"), "s");
    write(&shared.join("cache/it's"), "c");
    // A runtime file in the live release.
    write(&lab.app().join("current/runtime.log"), "runtime");
    codes.push(lab.deploy());
    trees.push(tree(&lab.app()));

    // v2: change, delete (hostile names too), new dirs, a shared path becomes a repo dir.
    write(&src.join("index.php"), "<?php echo 2;");
    fs::remove_file(src.join("assets/app.css")).unwrap();
    for name in &HOSTILE[..6] {
        fs::remove_file(src.join(name)).unwrap();
    }
    write(&src.join("-n").join("it's"), "changed");
    write(&src.join("uploads/README"), "now in the repo");
    write(&src.join("new/deep/dir/f"), "f");
    fs::remove_file(src.join("home.php")).unwrap();
    symlink("bin/console", src.join("home.php")).unwrap();
    codes.push(lab.deploy());
    trees.push(tree(&lab.app()));

    // A failing before_swap hook leaves everything as it was.
    lab.write_config("before_swap = [\"echo failing >&2; exit 7\"]");
    write(&src.join("index.php"), "<?php echo 3;");
    codes.push(lab.deploy());
    trees.push(tree(&lab.app()));
    lab.write_config("");

    // Two more deploys: prune keeps 3.
    codes.push(lab.deploy());
    write(&src.join("index.php"), "<?php echo 4;");
    codes.push(lab.deploy());
    trees.push(tree(&lab.app()));
    (codes, trees)
}

fn assert_reference_behaviour(codes: &[i32], trees: &[BTreeMap<String, Node>], lab: &Lab) {
    assert_eq!(codes, [0, 0, 0, 1, 0, 0]);
    let first = &trees[0];
    assert_eq!(first["current"], Node::Link("releases/R0".into()));
    for (i, name) in HOSTILE.iter().enumerate() {
        assert_eq!(
            first[&format!("releases/R0/{name}")],
            Node::File(0o644, format!("file {i}").into_bytes()),
            "{name:?}"
        );
    }
    assert_eq!(
        first["releases/R0/bin/console"],
        Node::File(0o755, b"#!/bin/sh\necho hi\n".to_vec())
    );
    assert_eq!(
        first["releases/R0/home.php"],
        Node::Link("index.php".into())
    );

    let shared = &trees[1];
    assert_eq!(shared["current"], Node::Link("releases/R1".into()));
    assert_eq!(
        shared["releases/R1/uploads"],
        Node::Link("../../shared/uploads".into())
    );
    assert_eq!(
        shared["releases/R1/assets/user.css"],
        Node::Link("../../../shared/assets/user.css".into())
    );
    assert_eq!(
        shared["releases/R1/index.php"],
        Node::File(0o644, b"<?php echo 1;".to_vec()),
        "the release wins"
    );
    assert_eq!(
        shared["releases/R1/-n/$(touch canary) shared"],
        Node::Link("../../../shared/-n/$(touch canary) shared".into())
    );
    assert_eq!(
        shared["releases/R1/cache"],
        Node::Link("../../shared/cache".into())
    );
    assert_eq!(
        shared["releases/R1/runtime.log"],
        Node::File(0o644, b"runtime".to_vec()),
        "runtime files are carried"
    );
    assert_eq!(shared["releases/R0"], first["releases/R0"]);

    let v2 = &trees[2];
    assert_eq!(
        v2["releases/R2/index.php"],
        Node::File(0o644, b"<?php echo 2;".to_vec())
    );
    assert!(!v2.contains_key("releases/R2/assets/app.css"));
    assert_eq!(
        v2["releases/R2/assets/user.css"],
        Node::Link("../../../shared/assets/user.css".into())
    );
    for name in &HOSTILE[..6] {
        assert!(
            !v2.contains_key(&format!("releases/R2/{name}")),
            "{name:?} deleted"
        );
        assert!(
            v2.contains_key(&format!("releases/R1/{name}")),
            "{name:?} kept in the previous release"
        );
    }
    assert_eq!(
        v2["releases/R2/-n/it's"],
        Node::File(0o644, b"changed".to_vec())
    );
    assert_eq!(
        v2["releases/R2/uploads"],
        Node::Dir(0o755),
        "a shared link became a repo dir"
    );
    assert_eq!(
        v2["releases/R2/uploads/README"],
        Node::File(0o644, b"now in the repo".to_vec())
    );
    assert_eq!(
        v2["releases/R2/uploads/photo.jpg"],
        Node::Link("../../../shared/uploads/photo.jpg".into())
    );
    assert!(
        !v2.contains_key("shared/uploads/README"),
        "nothing written through a shared link"
    );
    assert_eq!(
        v2["releases/R2/new/deep/dir/f"],
        Node::File(0o644, b"f".to_vec())
    );
    assert_eq!(v2["releases/R2/home.php"], Node::Link("bin/console".into()));
    // The previous release is untouched by the incremental deploy.
    for (k, v) in shared
        .iter()
        .filter(|(k, _)| k.starts_with("releases/R1") || k.starts_with("releases/R0"))
    {
        assert_eq!(v2.get(k), Some(v), "{k:?} changed");
    }

    assert_eq!(&trees[3], v2, "a failed before_swap hook changes nothing");

    let last = &trees[4];
    let releases: Vec<&String> = last
        .keys()
        .filter(|k| k.starts_with("releases/") && k.matches('/').count() == 1)
        .collect();
    assert_eq!(releases.len(), 3, "{releases:?}");
    assert_eq!(
        last["current"],
        Node::Link("releases/R2".into()),
        "the newest of the three kept is live"
    );
    assert_eq!(
        last["releases/R2/index.php"],
        Node::File(0o644, b"<?php echo 4;".to_vec())
    );

    let canaries: Vec<_> = walk_names(lab.dir.path())
        .into_iter()
        .filter(|n| n == "canary")
        .collect();
    assert!(canaries.is_empty(), "a name was executed as code");
}

fn walk_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn every_posix_shell_builds_the_same_trees() {
    let mut results = Vec::new();
    for shell in SHELLS {
        if !have(shell.argv[0]) {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing in CI: scripts/test installs it",
                shell.name
            );
            eprintln!("skipping {}: not installed", shell.name);
            continue;
        }
        let lab = Lab::new(shell.argv, None);
        let (codes, trees) = scenario(&lab);
        assert_reference_behaviour(&codes, &trees, &lab);
        results.push((shell.name, codes, trees));
    }
    let (ref_name, ref_codes, ref_trees) = &results[0];
    for (name, codes, trees) in &results[1..] {
        assert_eq!(codes, ref_codes, "{name} vs {ref_name}: exit codes");
        for (i, (a, b)) in trees.iter().zip(ref_trees).enumerate() {
            assert!(a == b, "{name} vs {ref_name}: tree after step {i} differs");
        }
    }
}

/// A `mv` that rejects -T (as BSD and macOS do): the swap must still be a rename(2).
#[test]
fn swap_stays_atomic_without_mv_dash_t() {
    let lab = Lab::new(&["dash"], None);
    let fake = lab.dir.path().join("shim/mv");
    fs::write(&fake, "#!/bin/sh\nfor a do case $a in -T|-h) echo \"mv: illegal option -- ${a#-}\" >&2; exit 64;; esac; done\nexec /bin/mv \"$@\"\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    write(&lab.src().join("index.html"), "v1");
    let emitted = Command::new(common::cutover_bin())
        .args(["deploy", "-q", "--emit-script", "--config"])
        .arg(lab.dir.path().join("cutover.toml"))
        .output()
        .unwrap();
    let script = lab.dir.path().join("deploy.sh");
    fs::write(&script, &emitted.stdout).unwrap();
    let out = Command::new("dash")
        .arg(&script)
        .env("PATH", &lab.path_env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("swap: perl") || stderr.contains("swap: python3"),
        "{stderr}"
    );
    assert!(!stderr.contains("swap: mv-T"), "{stderr}");
    assert_eq!(
        fs::read_to_string(lab.app().join("current/index.html")).unwrap(),
        "v1"
    );
}

/// Busybox's applets as the whole userland: the scenario still holds.
#[test]
fn busybox_userland_builds_the_same_trees() {
    if !have("busybox") {
        assert!(std::env::var_os("CI").is_none(), "busybox is missing in CI");
        return;
    }
    let userland = tempfile::tempdir().unwrap();
    let status = Command::new("busybox")
        .arg("--install")
        .arg("-s")
        .arg(userland.path())
        .status()
        .unwrap();
    assert!(status.success());
    // Outside the shim, PATH holds busybox's applets only: name busybox itself by its path.
    let lab = Lab::new(&["/bin/busybox", "sh"], Some(userland.path()));
    let (codes, trees) = scenario(&lab);
    assert_reference_behaviour(&codes, &trees, &lab);
}

/// A `cp` without `-l` (macOS): no step of a deploy needs it (uploads are unpacked straight
/// into the release), and the scenario ends with the same trees.
#[test]
fn a_cp_that_cannot_link_gives_the_same_trees() {
    let lab = Lab::new(&["dash"], None);
    let fake = lab.dir.path().join("shim/cp");
    fs::write(
        &fake,
        "#!/bin/sh\nfor a do case $a in --) break;; -*l*) echo \"cp: illegal option -- l\" >&2; exit 64;; esac; done\nexec /bin/cp \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let (codes, trees) = scenario(&lab);
    assert_reference_behaviour(&codes, &trees, &lab);
}
