//! File operations over SFTP, and the upload of a deploy's staged files.
//!
//! Per-file round trips are what make naive SFTP deploys slow (OpenSSH's `sftp put -r` waits
//! for every OPEN and CLOSE), so the upload keeps many files and many write requests in flight
//! at once over one channel: directories are created level by level (one round trip per depth,
//! not per directory) and files are opened, written in large packets and closed concurrently,
//! with a bound on the bytes held in memory.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use futures::stream::FuturesUnordered;
use futures::FutureExt;

use super::{DirEntry, PathKind, Progress};

/// Files open at once.
const FILES_IN_FLIGHT: usize = 64;
/// Write requests in flight at once, over all files (each up to `write_len` bytes).
const WRITES_IN_FLIGHT: usize = 128;
/// OpenSSH's sftp-server accepts writes up to 256 KiB minus headers; `limits@openssh.com` may
/// tell us a smaller number.
const DEFAULT_WRITE_LEN: usize = 255 * 1024;

pub struct Sftp {
    raw: Arc<RawSftpSession>,
    write_len: futures::future::Shared<futures::future::BoxFuture<'static, usize>>,
}

/// A request sent now, answered later: russh-sftp sends a request when its future is first
/// polled, so this polls it once. What follows it on the channel (a CLOSE after WRITEs) then
/// cannot overtake it, however the caller polls the futures afterwards.
fn send_now<T: Send + 'static>(
    request: impl std::future::Future<Output = T> + Send + 'static,
) -> futures::future::BoxFuture<'static, T> {
    let mut request = request.boxed();
    match (&mut request).now_or_never() {
        Some(answer) => futures::future::ready(answer).boxed(),
        None => request,
    }
}

fn is_status(e: &SftpError, code: StatusCode) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == code)
}

fn not_found(e: &SftpError) -> bool {
    is_status(e, StatusCode::NoSuchFile)
}

impl Sftp {
    pub async fn start(channel: russh::Channel<russh::client::Msg>) -> Result<Sftp> {
        // No waiting for the subsystem's reply: a refusal closes the channel, which the INIT
        // below reports. One round trip saved on every connection.
        channel
            .request_subsystem(false, "sftp")
            .await
            .context("cannot request the SFTP subsystem")?;
        let cfg = russh_sftp::client::Config {
            request_timeout_secs: 120,
            ..Default::default()
        };
        let raw = Arc::new(RawSftpSession::new_with_config(channel.into_stream(), cfg));
        let version = raw.init().await.context(
            "SFTP is not available: the server refused the sftp subsystem (is `Subsystem sftp` enabled in sshd_config?)",
        )?;
        // The server's write limit is only needed once uploads start: ask for it in the
        // background instead of waiting a round trip now.
        let asks_limits = version
            .extensions
            .get("limits@openssh.com")
            .is_some_and(|v| v == "1");
        let limits_raw = raw.clone();
        let write_len = async move {
            if !asks_limits {
                return DEFAULT_WRITE_LEN;
            }
            match limits_raw.limits().await {
                Ok(l) if l.max_write_len > 0 => DEFAULT_WRITE_LEN.min(l.max_write_len as usize),
                _ => DEFAULT_WRITE_LEN,
            }
        };
        let write_len = tokio::spawn(write_len)
            .map(|r| r.unwrap_or(DEFAULT_WRITE_LEN))
            .boxed()
            .shared();
        Ok(Sftp { raw, write_len })
    }

    /// Largest WRITE the server takes.
    async fn write_len(&self) -> usize {
        self.write_len.clone().await
    }

    pub async fn read_link(&self, path: &str) -> Result<Option<String>> {
        match self.raw.readlink(path).await {
            Ok(name) => Ok(name.files.into_iter().next().map(|f| f.filename)),
            Err(e) if not_found(&e) => Ok(None),
            // not a symlink: OpenSSH answers with a generic failure
            Err(e) if is_status(&e, StatusCode::Failure) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read the link {path}")),
        }
    }

    pub async fn path_kind(&self, path: &str) -> Result<PathKind> {
        match self.raw.lstat(path).await {
            Ok(a) => Ok(kind_of(&a.attrs)),
            Err(e) if not_found(&e) => Ok(PathKind::Missing),
            Err(e) => Err(e).with_context(|| format!("cannot inspect {path}")),
        }
    }

    /// Remove a tree without ever following a symbolic link: the top is looked at with LSTAT
    /// first (a link there is removed as a link), and READDIR reports every entry as LSTAT
    /// would, so a link inside is removed, never entered. Files go concurrently, then
    /// directories deepest first.
    pub async fn remove_tree(&self, path: &str) -> Result<()> {
        // The requests of an upload abandoned mid-flight (on another SFTP channel) may still
        // create a file in the tree while it is being removed: then the last RMDIR finds it not
        // empty, and a second pass removes the straggler.
        for _ in 0..2 {
            if self.remove_tree_once(path).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.remove_tree_once(path).await
    }

    async fn remove_tree_once(&self, path: &str) -> Result<()> {
        match self.path_kind(path).await? {
            PathKind::Missing => return Ok(()),
            PathKind::Dir => {}
            _ => return self.remove_file(path).await,
        }
        let mut dirs = vec![path.to_string()];
        let mut files = Vec::new();
        let mut i = 0;
        while i < dirs.len() {
            let dir = dirs[i].clone();
            i += 1;
            let Some(entries) = self.list_dir(&dir).await? else {
                continue;
            };
            for e in entries {
                let p = format!("{dir}/{}", e.name);
                if e.kind == PathKind::Dir {
                    dirs.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        stream::iter(files.iter().map(|f| self.remove_file(f)))
            .buffer_unordered(FILES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        for d in dirs.iter().rev() {
            self.remove_dir(d).await?;
        }
        Ok(())
    }

    /// Read a whole file in about two round trips: OPEN and STAT together, then every READ at
    /// once (the size is known), and a CLOSE nobody waits for.
    pub async fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        match self.open_read(path).await? {
            Some((handle, size)) => self.read_opened(handle, path, size, limit).await.map(Some),
            None => Ok(None),
        }
    }

    /// The first round trip of [`Sftp::read_file`]: OPEN and STAT together; the handle and the
    /// size, or None when there is no such file.
    pub async fn open_read(&self, path: &str) -> Result<Option<(String, u64)>> {
        let (opened, stat) = tokio::join!(
            self.raw
                .open(path, OpenFlags::READ, FileAttributes::empty()),
            self.raw.stat(path)
        );
        let handle = match opened {
            Ok(h) => h.handle,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {path}")),
        };
        let size = stat.ok().and_then(|s| s.attrs.size).unwrap_or(0);
        Ok(Some((handle, size)))
    }

    /// The second round trip of [`Sftp::read_file`]: every READ at once, then a CLOSE nobody
    /// waits for.
    pub async fn read_opened(
        &self,
        handle: String,
        path: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let result = self.read_all(&handle, path, size, limit).await;
        self.close_later(handle);
        result
    }

    /// Let go of a handle from [`Sftp::open_read`] that will not be read.
    pub fn discard_read(&self, handle: String) {
        self.close_later(handle);
    }

    async fn read_all(&self, handle: &str, path: &str, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size > limit {
            bail!("{path} is {size} bytes, more than the {limit} expected");
        }
        // sftp-server answers READs of up to 256 KiB minus its headers.
        const CHUNK: u64 = 252 * 1024;
        let mut data = Vec::with_capacity(size as usize);
        // Ask for one chunk past the size too, in case the file grew since the STAT.
        let reads = (0..=size / CHUNK).map(|i| self.raw.read(handle, i * CHUNK, CHUNK as u32));
        let mut short = false;
        for r in futures::future::join_all(reads).await {
            match r {
                Ok(d) if !short => {
                    short = (d.data.len() as u64) < CHUNK;
                    data.extend_from_slice(&d.data);
                }
                Ok(_) => {}
                Err(e) if is_status(&e, StatusCode::Eof) => short = true,
                Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
            }
        }
        // Still growing: read on, one chunk at a time.
        while !short {
            match self.raw.read(handle, data.len() as u64, CHUNK as u32).await {
                Ok(d) => {
                    short = (d.data.len() as u64) < CHUNK;
                    data.extend_from_slice(&d.data);
                }
                Err(e) if is_status(&e, StatusCode::Eof) => short = true,
                Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
            }
            if data.len() as u64 > limit {
                bail!("{path} is larger than the {limit} bytes expected");
            }
        }
        Ok(data)
    }

    /// Close a handle without waiting for the answer: nothing depends on it.
    fn close_later(&self, handle: String) {
        let raw = self.raw.clone();
        tokio::spawn(async move {
            let _ = raw.close(handle).await;
        });
    }

    /// List a directory, each entry with its kind as LSTAT sees it (a symbolic link is a
    /// link, whatever it points to): the first two READDIRs go out together, which for the few
    /// entries of `releases/` is the whole listing and its end in one round trip. Sorted by name;
    /// None when the directory does not exist.
    pub async fn list_dir(&self, path: &str) -> Result<Option<Vec<DirEntry>>> {
        let handle = match self.raw.opendir(path).await {
            Ok(h) => h.handle,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot list {path}")),
        };
        let mut entries = Vec::new();
        let mut done = false;
        let mut first = true;
        while !done {
            let batch = if first {
                first = false;
                let (a, b) = tokio::join!(
                    self.raw.readdir(handle.as_str()),
                    self.raw.readdir(handle.as_str())
                );
                vec![a, b]
            } else {
                vec![self.raw.readdir(handle.as_str()).await]
            };
            for r in batch {
                match r {
                    Ok(b) => entries.extend(
                        b.files
                            .into_iter()
                            .filter(|f| f.filename != "." && f.filename != "..")
                            .map(|f| DirEntry {
                                kind: kind_of(&f.attrs),
                                size: f.attrs.size.unwrap_or(0),
                                mode: f.attrs.permissions.unwrap_or(0) & 0o7777,
                                name: f.filename,
                            }),
                    ),
                    Err(e) if is_status(&e, StatusCode::Eof) => done = true,
                    Err(e) => {
                        self.close_later(handle);
                        return Err(e).with_context(|| format!("cannot list {path}"));
                    }
                }
            }
        }
        self.close_later(handle);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(Some(entries))
    }

    fn dir_attrs() -> FileAttributes {
        FileAttributes {
            permissions: Some(0o755),
            ..FileAttributes::empty()
        }
    }

    /// mkdir that treats "already a directory" as success.
    async fn ensure_dir(&self, path: &str) -> Result<()> {
        match self.raw.mkdir(path, Self::dir_attrs()).await {
            Ok(_) => Ok(()),
            // LSTAT, not STAT: a symbolic link to a directory is not a directory of ours.
            Err(e) => match self.raw.lstat(path).await {
                Ok(attrs) if kind_of(&attrs.attrs) == PathKind::Dir => Ok(()),
                _ => Err(e).with_context(|| format!("cannot create directory {path}")),
            },
        }
    }

    /// Create `path` and its missing parents. Usually only the last component is missing: one
    /// MKDIR. Otherwise a MKDIR for every ancestor, top down, all in one flight (the server takes
    /// them in order, and "exists" answers are expected): two round trips whatever the depth.
    pub async fn create_dir_all(&self, path: &str) -> Result<()> {
        let path = path.trim_end_matches('/');
        match self.raw.mkdir(path, Self::dir_attrs()).await {
            Ok(_) => return Ok(()),
            Err(e) if !not_found(&e) => return self.ensure_dir(path).await,
            Err(_) => {}
        }
        let made = futures::future::join_all(
            crate::layout::ancestors(path)
                .into_iter()
                .map(|dir| self.raw.mkdir(dir, Self::dir_attrs())),
        )
        .await;
        match made.last() {
            Some(Ok(_)) => Ok(()),
            _ => self.ensure_dir(path).await,
        }
    }

    /// One MKDIR, nothing more: for directories created ahead in a flight of requests, whose
    /// failure (usually "it exists") the caller looks at later, if at all.
    pub async fn try_create_dir(&self, path: &str) -> Result<()> {
        self.raw
            .mkdir(path, Self::dir_attrs())
            .await
            .map(|_| ())
            .with_context(|| format!("cannot create directory {path}"))
    }

    /// Open `path` for writing, created (or truncated) with `mode`; returns the handle.
    pub async fn create(&self, path: &str, mode: u32) -> Result<String> {
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        Ok(self
            .raw
            .open(path, flags, attrs)
            .await
            .with_context(|| format!("cannot create {path}"))?
            .handle)
    }

    /// Write `data` into a file opened by [`Sftp::create`] and close it: every WRITE and the
    /// CLOSE in one flight (the server takes them in order).
    pub async fn finish(&self, handle: String, path: &str, data: &[u8]) -> Result<()> {
        let write_len = self.write_len().await;
        let writes: Vec<_> = data
            .chunks(write_len)
            .enumerate()
            .map(|(i, chunk)| {
                let raw = self.raw.clone();
                let handle = handle.clone();
                let chunk = chunk.to_vec();
                send_now(async move { raw.write(handle, (i * write_len) as u64, chunk).await })
            })
            .collect();
        let closed = self.raw.close(handle).await;
        for w in futures::future::join_all(writes).await {
            w.with_context(|| format!("cannot write {path}"))?;
        }
        closed.with_context(|| format!("cannot finish writing {path}"))?;
        Ok(())
    }

    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let handle = self.create(path, mode).await?;
        self.finish(handle, path, data).await
    }

    /// Plain SFTP RENAME: OpenSSH refuses it when the new name exists, and rename(2) of a
    /// directory onto a non-empty one fails anyway, so of two racing renames one wins.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.raw
            .rename(from, to)
            .await
            .map(|_| ())
            .with_context(|| format!("cannot rename {from} to {to}"))
    }

    pub async fn remove_file(&self, path: &str) -> Result<()> {
        self.raw
            .remove(path)
            .await
            .map(|_| ())
            .with_context(|| format!("cannot remove {path}"))
    }

    pub async fn remove_dir(&self, path: &str) -> Result<()> {
        self.raw
            .rmdir(path)
            .await
            .map(|_| ())
            .with_context(|| format!("cannot remove directory {path}"))
    }

    /// Write the chunks in order at increasing offsets, many writes in flight at once.
    pub async fn upload_stream(
        &self,
        path: &str,
        chunks: crate::archive::Chunks,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let handle = self.create(path, 0o600).await?;
        self.stream_into(handle, path, chunks, progress).await
    }

    /// [`Sftp::upload_stream`] into a file already opened by [`Sftp::create`].
    pub async fn stream_into(
        &self,
        handle: String,
        path: &str,
        mut chunks: crate::archive::Chunks,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let write_len = self.write_len().await;
        let mut pending = FuturesUnordered::new();
        let mut offset = 0u64;
        let mut failure: Option<anyhow::Error> = None;
        'produce: while let Some(chunk) = chunks.recv().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            for piece in chunk.chunks(write_len) {
                while pending.len() >= WRITES_IN_FLIGHT {
                    match pending.next().await {
                        Some(Ok(n)) => progress.advance(n),
                        Some(Err(e)) => {
                            failure =
                                Some(anyhow::Error::new(e).context(format!("cannot write {path}")));
                            break 'produce;
                        }
                        None => break,
                    }
                }
                let at = offset;
                let len = piece.len() as u64;
                offset += len;
                let raw = self.raw.clone();
                let h = handle.clone();
                let data = piece.to_vec();
                pending.push(send_now(async move {
                    raw.write(h, at, data).await.map(|_| len)
                }));
            }
        }
        drop(chunks); // stops the packer if we broke off
                      // Every WRITE is on its way: the CLOSE follows at once instead of a round trip later.
                      // (After a failure it still runs; the file is removed with staging anyway.)
        let close = send_now({
            let raw = self.raw.clone();
            let handle = handle.clone();
            async move { raw.close(handle).await }
        });
        while let Some(r) = pending.next().await {
            match r {
                Ok(n) => progress.advance(n),
                Err(e) if failure.is_none() => {
                    failure = Some(anyhow::Error::new(e).context(format!("cannot write {path}")))
                }
                Err(_) => {}
            }
        }
        let closed = close.await;
        if let Some(f) = failure {
            return Err(f);
        }
        closed.with_context(|| format!("cannot finish writing {path}"))?;
        Ok(offset)
    }
}

fn kind_of(attrs: &FileAttributes) -> PathKind {
    match attrs.permissions.map(|p| p & 0o170000) {
        Some(0o040000) => PathKind::Dir,
        Some(0o100000) => PathKind::File,
        Some(0o120000) => PathKind::Symlink,
        _ => PathKind::Other,
    }
}
