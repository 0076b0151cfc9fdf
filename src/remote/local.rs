//! The `local` target: the deploy path is on this machine. Files are copied with the standard
//! library and the script runs under `/bin/sh`, exactly as it would over SSH.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{PathKind, Progress, ScriptExit};

pub struct LocalSession;

impl LocalSession {
    pub fn read_link(&self, path: &str) -> Result<Option<String>> {
        match fs::read_link(path) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(22) => Ok(None), // EINVAL: not a symlink
            Err(e) => Err(e).with_context(|| format!("cannot read the link {path}")),
        }
    }

    pub fn path_kind(&self, path: &str) -> Result<PathKind> {
        match fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_symlink() => Ok(PathKind::Symlink),
            Ok(md) if md.is_dir() => Ok(PathKind::Dir),
            Ok(md) if md.is_file() => Ok(PathKind::File),
            Ok(_) => Ok(PathKind::Other),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(PathKind::Missing),
            Err(e) if e.raw_os_error() == Some(20) => Ok(PathKind::Missing), // ENOTDIR: a parent is a file
            Err(e) => Err(e).with_context(|| format!("cannot inspect {path}")),
        }
    }

    pub fn remove_tree(&self, path: &str) -> Result<()> {
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {path}"))
            }
            _ => Ok(()),
        }
    }

    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        match fs::metadata(path) {
            Ok(md) if md.len() > limit => anyhow::bail!(
                "{path} is {} bytes, more than the {limit} expected",
                md.len()
            ),
            Ok(_) => Ok(Some(
                fs::read(path).with_context(|| format!("cannot read {path}"))?,
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
        }
    }

    pub fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
        match fs::read_dir(path) {
            Ok(rd) => {
                let mut names = Vec::new();
                for e in rd {
                    let e = e.with_context(|| format!("cannot list {path}"))?;
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
                Ok(Some(names))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot list {path}")),
        }
    }

    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create directory {path}"))
    }

    pub fn try_create_dir(&self, path: &str) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create directory {path}"))
    }

    pub fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        fs::write(path, data).with_context(|| format!("cannot write {path}"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {path}"))
    }

    pub fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        // rename(2) would replace an empty directory: refuse any existing name first (a lock
        // always holds its info file, so the rename itself fails on a race).
        if fs::symlink_metadata(to).is_ok() {
            anyhow::bail!("{to} exists");
        }
        fs::rename(from, to).with_context(|| format!("cannot rename {from} to {to}"))
    }

    pub fn remove_file(&self, path: &str) -> Result<()> {
        fs::remove_file(path).with_context(|| format!("cannot remove {path}"))
    }

    pub fn remove_dir(&self, path: &str) -> Result<()> {
        fs::remove_dir(path).with_context(|| format!("cannot remove directory {path}"))
    }

    pub async fn upload_stream(
        &self,
        path: &str,
        mut chunks: crate::archive::Chunks,
        progress: &dyn Progress,
    ) -> Result<u64> {
        use std::io::Write;
        let mut file = fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
        let mut total = 0;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .with_context(|| format!("cannot write {path}"))?;
            total += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
        }
        Ok(total)
    }

    /// Run `script` with `/bin/sh`, given it on stdin as one brace group (see
    /// [`crate::script::for_stdin`]): the shell reads all of it before running anything, so
    /// writing it all before reading the output cannot deadlock.
    pub fn run_script(&self, script: &str, quiet: bool) -> Result<ScriptExit> {
        let mut child = Command::new("/bin/sh")
            .current_dir(Path::new("/"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if quiet {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .context("cannot run /bin/sh")?;
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(crate::script::for_stdin(script).as_bytes())
                .context("cannot send the script to /bin/sh")?;
        }
        let out = child.wait_with_output().context("cannot run /bin/sh")?;
        if quiet && !out.status.success() {
            // quiet hides progress, never the reason a deploy failed
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(ScriptExit {
            code: out.status.code().map(|c| c as u32),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }
}
