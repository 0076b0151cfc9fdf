//! File operations over SFTP, and the upload of a deploy's staged files.
//!
//! Per-file round trips are what make naive SFTP deploys slow (OpenSSH's `sftp put -r` waits
//! for every OPEN and CLOSE), so the upload keeps many files and many write requests in flight
//! at once over one channel: directories are created level by level (one round trip per depth,
//! not per directory) and files are opened, written in large packets and closed concurrently,
//! with a bound on the bytes held in memory.
//!
//! For work that is all requests (an SFTP-only deploy, removing a tree) there is a layer below:
//! `send_*` requests that go out the moment they are made and are answered later. OpenSSH's
//! sftp-server takes one channel's requests strictly in order, so requests that depend on each
//! other (MKDIR a directory, then SYMLINK inside it; REMOVE the files, then RMDIR their
//! directory) can travel in one flight when they share a channel; only a request that needs an
//! answer (a WRITE needs its OPEN's handle) waits for one. [`Channels`] spreads work over
//! several SFTP channels of one connection (one sftp-server process each) and walks and removes
//! trees in a few flights instead of a round trip per directory.
//!
//! Two limits of the stack shape all of it. russh-sftp decodes handles as UTF-8 strings, and
//! OpenSSH's handles are 4-byte slot numbers: the 129th handle open at once on one channel
//! (0x80) is mangled. So every user of this layer takes a handle permit per open handle from its
//! channel ([`HANDLES_PER_CHANNEL`], with room to spare for the few unaccounted handles of the
//! survey and the lock). And russh-sftp times a request from when it is queued: requests that
//! need no handle are still bounded in flight ([`REQUESTS_IN_FLIGHT`]) so none waits for long.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use futures::stream::FuturesUnordered;
use futures::FutureExt;

use super::{DirEntry, PathKind, Progress};

/// Write requests in flight at once, over all files (each up to `write_len` bytes).
const WRITES_IN_FLIGHT: usize = 32;
/// OpenSSH's sftp-server accepts writes up to 256 KiB minus headers; `limits@openssh.com` may
/// tell us a smaller number.
const DEFAULT_WRITE_LEN: usize = 255 * 1024;

/// OpenSSH's extensions an SFTP-only deploy uses, as the VERSION reply names them.
pub const POSIX_RENAME: &str = "posix-rename@openssh.com";
pub const HARDLINK: &str = "hardlink@openssh.com";
pub const COPY_DATA: &str = "copy-data";
pub const STATVFS: &str = "statvfs@openssh.com";

/// What `check` and a deploy say of a read-only SFTP server (see [`Sftp::read_only`]), and
/// the fix.
pub const READ_ONLY: &str =
    "the server's SFTP subsystem is read-only (OpenSSH's sftp-server or internal-sftp run \
     with -R: it offers none of the requests that write, posix-rename@openssh.com among them)";
pub const READ_ONLY_FIX: &str =
    "remove -R from this account's ForceCommand or Subsystem line in the server's \
     sshd_config, or deploy as an account that may write";

/// Handles this layer keeps open at once on one channel: below the 128 russh-sftp can address
/// (see the module docs), with room for the handles the survey and the lock open unaccounted.
pub const HANDLES_PER_CHANNEL: usize = 100;
/// Requests that need no handle (MKDIR, HARDLINK, REMOVE, ...) in flight at once on one channel.
pub const REQUESTS_IN_FLIGHT: usize = 1024;

#[derive(Clone)]
pub struct Sftp {
    raw: Arc<RawSftpSession>,
    write_len: futures::future::Shared<futures::future::BoxFuture<'static, usize>>,
    /// The server's VERSION reply: the extensions it names (name → version), or why it gave
    /// none. INIT is sent at the start and not waited for: requests follow it at once (the
    /// server takes them in order, INIT first), and what needs the extensions waits here.
    version: futures::future::Shared<futures::future::BoxFuture<'static, Version>>,
    /// One permit per handle open on this channel (see [`HANDLES_PER_CHANNEL`]).
    handles: Arc<tokio::sync::Semaphore>,
}

/// The extensions of a VERSION reply, or why there was none.
type Version = std::result::Result<Arc<HashMap<String, String>>, Arc<String>>;

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

/// Why an SFTP session that began with text fails, and the fix. sshd starts a `Subsystem sftp
/// /usr/lib/openssh/sftp-server` (Debian's and most distributions' default) through the
/// account's login shell, and what its startup files print for a non-interactive session lands
/// in the SFTP stream (OpenSSH's own `sftp` fails there too, with "Received message too long").
pub const NOISY_LOGIN: &str = "the account's login shell prints something when it starts (an echo in ~/.bashrc, ~/.profile, ~/.zshenv, config.fish or ~/.tcshrc), and sshd runs the sftp subsystem through that shell. Make those files print nothing unless the shell is interactive (at the top of ~/.bashrc: `case $- in *i*) ;; *) return ;; esac`), or set `Subsystem sftp internal-sftp` in sshd_config";

/// The start of an SFTP stream that is no VERSION packet, as text to show: a VERSION reply
/// begins with a 4-byte length (a few hundred bytes at most) and type 2. None when nothing came
/// (the subsystem was refused) or it looks like SFTP.
fn not_sftp(first: &[u8]) -> Option<String> {
    if first.is_empty() {
        return None;
    }
    if first.len() >= 5 {
        let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
        if len < 64 * 1024 && first[4] == 2 {
            return None;
        }
    }
    let text: String = String::from_utf8_lossy(first)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(60)
        .collect();
    Some(text)
}

/// A channel's stream that keeps the first bytes it reads (see [`not_sftp`]): its first read
/// asks the channel for [`SNIFFED`] bytes (the SFTP reader asks for a packet length, 4), which
/// it then hands out; every later read goes straight through.
struct Sniffed<S> {
    inner: S,
    first: Arc<std::sync::Mutex<Vec<u8>>>,
    /// Whether the first read was made.
    sniffed: bool,
    /// The first read's bytes not handed out yet (and how many were).
    ahead: Option<(Vec<u8>, usize)>,
}

/// Bytes [`Sniffed`] keeps.
const SNIFFED: usize = 64;

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if !this.sniffed {
            let mut head = [0u8; SNIFFED];
            let mut head_buf = tokio::io::ReadBuf::new(&mut head);
            match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut head_buf) {
                Poll::Ready(Ok(())) => {
                    this.sniffed = true;
                    let got = head_buf.filled().to_vec();
                    if got.is_empty() {
                        return Poll::Ready(Ok(())); // the end, before any byte
                    }
                    this.first.lock().unwrap().extend_from_slice(&got);
                    this.ahead = Some((got, 0));
                }
                other => return other,
            }
        }
        if let Some((bytes, at)) = &mut this.ahead {
            let n = (bytes.len() - *at).min(buf.remaining());
            buf.put_slice(&bytes[*at..*at + n]);
            *at += n;
            if *at == bytes.len() {
                this.ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
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
        let first_bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stream = Sniffed {
            inner: channel.into_stream(),
            first: first_bytes.clone(),
            sniffed: false,
            ahead: None,
        };
        let raw = Arc::new(RawSftpSession::new_with_config(stream, cfg));
        // INIT goes out now; the first requests follow it without waiting for the VERSION
        // reply (one round trip less on every connection).
        let init = raw.clone();
        let version: futures::future::Shared<futures::future::BoxFuture<'static, Version>> =
            send_now(async move {
                match init.init().await {
                    Ok(v) => Ok(Arc::new(v.extensions)),
                    Err(e) => {
                        let first = first_bytes.lock().unwrap().clone();
                        Err(Arc::new(match not_sftp(&first) {
                            Some(text) => format!(
                                "SFTP is not available: the server's SFTP session began with text that is not SFTP ({text:?}): {NOISY_LOGIN}"
                            ),
                            None => format!(
                                "SFTP is not available: the server refused the sftp subsystem (is `Subsystem sftp` enabled in sshd_config?): {e}"
                            ),
                        }))
                    }
                }
            })
            .shared();
        // The server's write limit is only needed once uploads start: asked for in the
        // background.
        let limits_raw = raw.clone();
        let known = version.clone();
        let write_len = async move {
            let asks_limits = match known.await {
                Ok(extensions) => extensions
                    .get("limits@openssh.com")
                    .is_some_and(|v| v == "1"),
                Err(_) => false,
            };
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
        Ok(Sftp {
            raw,
            write_len,
            version,
            handles: Arc::new(tokio::sync::Semaphore::new(HANDLES_PER_CHANNEL)),
        })
    }

    /// Waits for the server's VERSION reply: an error says SFTP is not available.
    pub async fn ready(&self) -> Result<()> {
        match self.version.clone().await {
            Ok(_) => Ok(()),
            Err(why) => Err(anyhow::anyhow!("{why}")),
        }
    }

    /// Why the SFTP session never started, once that is known (None while it may still).
    pub fn refused(&self) -> Option<String> {
        match self.version.peek() {
            Some(Err(why)) => Some(why.to_string()),
            _ => None,
        }
    }

    /// Did the server offer the extension `name` (see [`POSIX_RENAME`] and the others)? Since
    /// OpenSSH 8.6 an extension switched off with `sftp-server -P` is not offered.
    pub async fn offers(&self, name: &str) -> bool {
        matches!(self.version.clone().await, Ok(extensions) if extensions.contains_key(name))
    }

    /// [`Sftp::offers`], for code that runs once the VERSION reply has been waited for (an
    /// SFTP-only deploy, after its survey checked posix-rename): false before that.
    pub fn offered(&self, name: &str) -> bool {
        matches!(self.version.peek(), Some(Ok(extensions)) if extensions.contains_key(name))
    }

    /// Is this OpenSSH's SFTP server in read-only mode (`sftp-server -R`, `internal-sftp -R`)?
    /// It then leaves out of its VERSION reply every extension that writes (posix-rename,
    /// hardlink, fsync, lsetstat, copy-data) and keeps the others (statvfs, limits, ...).
    /// `-P` can switch extensions off one by one, but not statvfs kept and all of these gone.
    pub async fn read_only(&self) -> bool {
        const WRITING: [&str; 3] = [POSIX_RENAME, HARDLINK, "fsync@openssh.com"];
        if !self.offers(STATVFS).await {
            return false; // not OpenSSH's, or not telling
        }
        for name in WRITING {
            if self.offers(name).await {
                return false;
            }
        }
        true
    }

    /// Largest WRITE the server takes.
    pub async fn write_len(&self) -> usize {
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

    /// Remove a tree without ever following a symbolic link: see [`Channels::remove_tree`]
    /// (here with this one channel).
    pub async fn remove_tree(&self, path: &str) -> Result<()> {
        Channels::new(vec![self.clone()]).remove_tree(path).await
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
        let Some(listing) = self.read_dir(path).await? else {
            return Ok(None);
        };
        let mut entries: Vec<DirEntry> = listing
            .into_iter()
            .map(|(name, attrs)| DirEntry {
                kind: kind_of(&attrs),
                size: attrs.size.unwrap_or(0),
                mode: attrs.permissions.unwrap_or(0) & 0o7777,
                name,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(Some(entries))
    }

    /// The names in a directory with their LSTAT attributes (without `.` and `..`), in the
    /// server's order; None when it does not exist. Holds one handle permit while it reads.
    /// READDIRs go out two at once, then four at once: OpenSSH answers about 100 names each,
    /// so a directory of a few hundred names costs two round trips after its OPENDIR.
    pub async fn read_dir(&self, path: &str) -> Result<Option<Listing>> {
        let permit = self.handle_permits(1).await;
        let handle = match self.raw.opendir(path).await {
            Ok(h) => h.handle,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot list {path}")),
        };
        let mut entries = Vec::new();
        let mut done = false;
        let mut batch = 2;
        let mut failure = None;
        while !done && failure.is_none() {
            let reads = (0..batch).map(|_| self.raw.readdir(handle.as_str()));
            for r in futures::future::join_all(reads).await {
                match r {
                    Ok(b) => entries.extend(
                        b.files
                            .into_iter()
                            .filter(|f| f.filename != "." && f.filename != "..")
                            .map(|f| (f.filename, f.attrs)),
                    ),
                    Err(e) if is_status(&e, StatusCode::Eof) => done = true,
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            batch = 4;
        }
        // The CLOSE goes out before the permit is given back: a later OPEN on this channel
        // then finds the handle's slot free.
        drop(self.send_close(&handle));
        drop(permit);
        match failure {
            Some(e) => Err(e).with_context(|| format!("cannot list {path}")),
            None => Ok(Some(entries)),
        }
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
        match self.make_dir_all(path).await {
            Ok(()) => Ok(()),
            // SFTP's status says little ("No such file" for a parent that cannot be made,
            // "Failure" for a read-only file system): what is in the way, found out.
            Err(e) => match self.why_no_dir(path).await {
                Some(why) => Err(anyhow::anyhow!(crate::error::with_hint(
                    format!("cannot create directory {path}: {why}"),
                    "`cutover check` says how to fix it"
                ))),
                None => Err(e),
            },
        }
    }

    async fn make_dir_all(&self, path: &str) -> Result<()> {
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

    /// Why `path` cannot be made, from its deepest ancestor that exists: not a directory, on a
    /// file system mounted read-only (statvfs@openssh.com's flag), or a directory the login
    /// cannot write in. None when that cannot be told.
    async fn why_no_dir(&self, path: &str) -> Option<String> {
        // (down to `/` itself: a deploy path right under a chroot's root is a common first try)
        let mut ancestors = crate::layout::ancestors(path);
        if path.starts_with('/') {
            ancestors.insert(0, "/".to_string());
        }
        for dir in ancestors.iter().rev() {
            let attrs = match self.raw.lstat(dir).await {
                Ok(a) => a.attrs,
                Err(e) if not_found(&e) => continue,
                Err(_) => return None,
            };
            let mut kind = kind_of(&attrs);
            let mut attrs = attrs;
            if kind == PathKind::Symlink {
                // (a deploy path below a linked directory is fine: what it leads to counts)
                match self.raw.stat(dir).await {
                    Ok(a) => {
                        kind = kind_of(&a.attrs);
                        attrs = a.attrs;
                    }
                    Err(_) => return Some(format!("{dir} is a symbolic link that leads nowhere")),
                }
            }
            if kind != PathKind::Dir {
                let what = match kind {
                    PathKind::File => "a file",
                    _ => "not a directory",
                };
                return Some(format!("{dir} is {what}, not a directory"));
            }
            if dir == path {
                return None; // it is there after all
            }
            const ST_RDONLY: u64 = 1;
            if let Ok(fs) = self.raw.statvfs(dir).await {
                if fs.flags & ST_RDONLY != 0 {
                    return Some(format!(
                        "the file system holding {dir} is mounted read-only"
                    ));
                }
            }
            let mode = attrs.permissions.map(|p| format!("mode {:o}", p & 0o7777));
            let owner = attrs.uid.map(|u| format!("owner uid {u}"));
            let about: Vec<String> = [mode, owner].into_iter().flatten().collect();
            return Some(format!(
                "the deploy user cannot create entries in {dir}{}",
                if about.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", about.join(", "))
                }
            ));
        }
        None
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

    /// Write the chunks in order at increasing offsets, many writes in flight at once: up to
    /// `max_in_flight` bytes of them (at least one write).
    pub async fn upload_stream(
        &self,
        path: &str,
        chunks: crate::archive::Chunks,
        max_in_flight: usize,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let handle = self.create(path, 0o600).await?;
        self.stream_into(handle, path, chunks, max_in_flight, progress)
            .await
    }

    /// [`Sftp::upload_stream`] into a file already opened by [`Sftp::create`].
    pub async fn stream_into(
        &self,
        handle: String,
        path: &str,
        mut chunks: crate::archive::Chunks,
        max_in_flight: usize,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let write_len = self.write_len().await;
        let mut pending = FuturesUnordered::new();
        let mut in_flight = 0usize;
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
            // A chunk that fits one WRITE (the usual case: chunks are made that size) is sent
            // as it is; a larger one is cut into copies. Each copy is a fresh allocation for
            // every host of a fleet, so the whole-chunk case saves one per byte sent.
            let pieces: Vec<Vec<u8>> = if chunk.len() <= write_len {
                vec![chunk]
            } else {
                chunk.chunks(write_len).map(<[u8]>::to_vec).collect()
            };
            for data in pieces {
                while !pending.is_empty()
                    && (pending.len() >= WRITES_IN_FLIGHT || in_flight + data.len() > max_in_flight)
                {
                    match pending.next().await {
                        Some(Ok(n)) => {
                            in_flight -= n as usize;
                            progress.advance(n)
                        }
                        Some(Err(e)) => {
                            failure =
                                Some(anyhow::Error::new(e).context(format!("cannot write {path}")));
                            break 'produce;
                        }
                        None => break,
                    }
                }
                let at = offset;
                let len = data.len() as u64;
                offset += len;
                in_flight += data.len();
                let raw = self.raw.clone();
                let h = handle.clone();
                pending.push(send_now(async move {
                    raw.write(h, at, data).await.map(|_| len)
                }));
            }
        }
        // (Stops the packer if we broke off.)
        drop(chunks);
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

/// A request already sent, answered later (see `send_now`).
pub type Sent<T> = futures::future::BoxFuture<'static, Result<T>>;

/// How the server reads the two paths of SYMLINK. The SFTP draft sends the link's path first;
/// OpenSSH's sftp-server reads the first as the link's target (it calls symlink(first, second)).
/// russh-sftp's `symlink(a, b)` sends `a` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymlinkOrder {
    /// OpenSSH: the target first, then where the link goes.
    TargetFirst,
    /// The draft (and servers that follow it): the link's path first.
    LinkFirst,
}

/// `copy-data`'s request: copy from one open handle into another on the server.
#[derive(serde::Serialize)]
struct CopyData {
    read_from: String,
    read_from_offset: u64,
    /// 0: to the end of the file.
    read_data_length: u64,
    write_to: String,
    write_to_offset: u64,
}

/// `posix-rename@openssh.com`'s request: rename(2), which replaces an existing target.
#[derive(serde::Serialize)]
struct PosixRename {
    oldpath: String,
    newpath: String,
}

/// The status a server refused a request with, anywhere in `e`'s causes; None for every other
/// failure (a lost connection, a timeout).
pub fn status_of(e: &anyhow::Error) -> Option<StatusCode> {
    e.chain().find_map(|c| match c.downcast_ref::<SftpError>() {
        Some(SftpError::Status(s)) => Some(s.status_code),
        _ => None,
    })
}

/// Attributes that set the permission bits only.
pub fn mode_attrs(mode: u32) -> FileAttributes {
    FileAttributes {
        permissions: Some(mode),
        ..FileAttributes::empty()
    }
}

/// The answer to an extended request: OpenSSH answers a refused one (unknown, or switched off)
/// with a status, which russh-sftp hands back as a packet, not as an error.
fn extended_status(
    answer: Result<russh_sftp::protocol::Packet, SftpError>,
) -> Result<(), SftpError> {
    use russh_sftp::protocol::Packet;
    match answer? {
        Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(s) => Err(SftpError::from(s)),
        _ => Err(SftpError::UnexpectedPacket),
    }
}

impl Sftp {
    /// Send one request now; `what` names it in the error.
    fn send<T, F>(&self, what: String, call: F) -> Sent<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a RawSftpSession,
            ) -> futures::future::BoxFuture<'a, Result<T, SftpError>>
            + Send
            + 'static,
    {
        let raw = self.raw.clone();
        send_now(async move {
            call(&raw)
                .await
                .map_err(|e| anyhow::Error::new(e).context(what))
        })
    }

    /// `n` of this channel's handle permits, for as long as the handles are open: give them
    /// back once their CLOSE has been sent.
    pub async fn handle_permits(&self, n: u32) -> tokio::sync::OwnedSemaphorePermit {
        self.handles
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the handle semaphore is never closed")
    }

    fn free_handles(&self) -> usize {
        self.handles.available_permits()
    }

    pub fn send_mkdir(&self, path: &str, mode: u32) -> Sent<()> {
        let p = path.to_string();
        self.send(format!("cannot create directory {path}"), move |raw| {
            async move { raw.mkdir(p, mode_attrs(mode)).await.map(|_| ()) }.boxed()
        })
    }

    pub fn send_setstat(&self, path: &str, attrs: FileAttributes) -> Sent<()> {
        let p = path.to_string();
        self.send(format!("cannot set the mode of {path}"), move |raw| {
            async move { raw.setstat(p, attrs).await.map(|_| ()) }.boxed()
        })
    }

    /// LSTAT: None when nothing is there.
    pub fn send_lstat(&self, path: &str) -> Sent<Option<FileAttributes>> {
        let p = path.to_string();
        self.send(format!("cannot inspect {path}"), move |raw| {
            async move {
                match raw.lstat(p).await {
                    Ok(a) => Ok(Some(a.attrs)),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .boxed()
        })
    }

    /// STAT (follows a symbolic link): None when nothing is there.
    pub fn send_stat(&self, path: &str) -> Sent<Option<FileAttributes>> {
        let p = path.to_string();
        self.send(format!("cannot inspect {path}"), move |raw| {
            async move {
                match raw.stat(p).await {
                    Ok(a) => Ok(Some(a.attrs)),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .boxed()
        })
    }

    pub fn send_readlink(&self, path: &str) -> Sent<String> {
        let p = path.to_string();
        self.send(format!("cannot read the link {path}"), move |raw| {
            async move {
                let name = raw.readlink(p).await?;
                name.files
                    .into_iter()
                    .next()
                    .map(|f| f.filename)
                    .ok_or(SftpError::UnexpectedPacket)
            }
            .boxed()
        })
    }

    pub fn send_remove(&self, path: &str) -> Sent<()> {
        let p = path.to_string();
        self.send(format!("cannot remove {path}"), move |raw| {
            async move { raw.remove(p).await.map(|_| ()) }.boxed()
        })
    }

    pub fn send_rmdir(&self, path: &str) -> Sent<()> {
        let p = path.to_string();
        self.send(format!("cannot remove directory {path}"), move |raw| {
            async move { raw.rmdir(p).await.map(|_| ()) }.boxed()
        })
    }

    /// Plain RENAME: refused when `to` exists.
    pub fn send_rename(&self, from: &str, to: &str) -> Sent<()> {
        let (f, t) = (from.to_string(), to.to_string());
        self.send(format!("cannot rename {from} to {to}"), move |raw| {
            async move { raw.rename(f, t).await.map(|_| ()) }.boxed()
        })
    }

    /// `posix-rename@openssh.com`: one rename(2), which replaces `to` atomically (and fails
    /// when `to` is a directory and `from` is not).
    pub fn send_posix_rename(&self, from: &str, to: &str) -> Sent<()> {
        let body = PosixRename {
            oldpath: from.to_string(),
            newpath: to.to_string(),
        };
        self.send(format!("cannot rename {from} over {to}"), move |raw| {
            async move {
                let data = russh_sftp::ser::to_bytes(&body)?.to_vec();
                extended_status(raw.extended(POSIX_RENAME, data).await)
            }
            .boxed()
        })
    }

    /// `hardlink@openssh.com`: link(2) of `from` as `to` (a new name for the same inode).
    pub fn send_hardlink(&self, from: &str, to: &str) -> Sent<()> {
        let (f, t) = (from.to_string(), to.to_string());
        self.send(format!("cannot hard-link {from} as {to}"), move |raw| {
            async move { raw.hardlink(f, t).await.map(|_| ()) }.boxed()
        })
    }

    /// A symbolic link at `link` pointing to `target`, with the paths in the order the server
    /// reads them (see [`SymlinkOrder`]).
    pub fn send_symlink(&self, target: &str, link: &str, order: SymlinkOrder) -> Sent<()> {
        let (first, second) = match order {
            SymlinkOrder::TargetFirst => (target.to_string(), link.to_string()),
            SymlinkOrder::LinkFirst => (link.to_string(), target.to_string()),
        };
        self.send(format!("cannot create the link {link}"), move |raw| {
            async move { raw.symlink(first, second).await.map(|_| ()) }.boxed()
        })
    }

    /// OPEN; the handle. Take a handle permit first ([`Sftp::handle_permits`]).
    pub fn send_open(&self, path: &str, flags: OpenFlags, attrs: FileAttributes) -> Sent<String> {
        let p = path.to_string();
        let what = if flags.contains(OpenFlags::WRITE) {
            format!("cannot create {path}")
        } else {
            format!("cannot open {path}")
        };
        self.send(what, move |raw| {
            async move { raw.open(p, flags, attrs).await.map(|h| h.handle) }.boxed()
        })
    }

    pub fn send_write(&self, handle: &str, path: &str, offset: u64, data: Vec<u8>) -> Sent<()> {
        let h = handle.to_string();
        self.send(format!("cannot write {path}"), move |raw| {
            async move { raw.write(h, offset, data).await.map(|_| ()) }.boxed()
        })
    }

    /// READ: the bytes at `offset` (fewer than `len` near the end; none at the end).
    pub fn send_read(&self, handle: &str, path: &str, offset: u64, len: u32) -> Sent<Vec<u8>> {
        let h = handle.to_string();
        self.send(format!("cannot read {path}"), move |raw| {
            async move {
                match raw.read(h, offset, len).await {
                    Ok(d) => Ok(d.data),
                    Err(e) if is_status(&e, StatusCode::Eof) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
            .boxed()
        })
    }

    pub fn send_fsetstat(&self, handle: &str, path: &str, attrs: FileAttributes) -> Sent<()> {
        let h = handle.to_string();
        self.send(format!("cannot set the mode of {path}"), move |raw| {
            async move { raw.fsetstat(h, attrs).await.map(|_| ()) }.boxed()
        })
    }

    pub fn send_close(&self, handle: &str) -> Sent<()> {
        let h = handle.to_string();
        self.send("cannot close a file".into(), move |raw| {
            async move { raw.close(h).await.map(|_| ()) }.boxed()
        })
    }

    /// `copy-data`: the server copies the whole file open as `from` into the one open as `to`
    /// (mode and times are not copied).
    pub fn send_copy_data(&self, from: &str, to: &str, path: &str) -> Sent<()> {
        let body = CopyData {
            read_from: from.to_string(),
            read_from_offset: 0,
            read_data_length: 0,
            write_to: to.to_string(),
            write_to_offset: 0,
        };
        self.send(format!("cannot copy {path} on the server"), move |raw| {
            async move {
                let data = russh_sftp::ser::to_bytes(&body)?.to_vec();
                extended_status(raw.extended(COPY_DATA, data).await)
            }
            .boxed()
        })
    }

    /// `statvfs@openssh.com` of the file system holding `path`.
    pub async fn statvfs(&self, path: &str) -> Result<russh_sftp::extensions::Statvfs> {
        self.raw
            .statvfs(path)
            .await
            .with_context(|| format!("cannot read the free space of {path}"))
    }

    /// Which order this server reads SYMLINK's paths in, tried in `scratch` (a directory that
    /// must not exist; it is removed again). Both paths are absolute and inside `scratch`, so
    /// either reading makes the link there: one flight to make and look, one to remove.
    pub async fn probe_symlink_order(&self, scratch: &str) -> Result<SymlinkOrder> {
        let (a, b) = (format!("{scratch}/a"), format!("{scratch}/b"));
        let made = self.send_mkdir(scratch, 0o700);
        // Sent as (a, b): OpenSSH makes b -> a, the draft a -> b.
        let linked = self.send_symlink(&a, &b, SymlinkOrder::TargetFirst);
        let (at_a, at_b) = (self.send_lstat(&a), self.send_lstat(&b));
        let (made, linked, at_a, at_b) = tokio::join!(made, linked, at_a, at_b);
        let removed = futures::future::join_all([
            self.send_remove(&a),
            self.send_remove(&b),
            self.send_rmdir(scratch),
        ]);
        made?;
        let order = match (
            linked,
            at_a?.map(|x| kind_of(&x)),
            at_b?.map(|x| kind_of(&x)),
        ) {
            (Ok(()), _, Some(PathKind::Symlink)) => SymlinkOrder::TargetFirst,
            (Ok(()), Some(PathKind::Symlink), _) => SymlinkOrder::LinkFirst,
            (Err(e), ..) => return Err(e),
            _ => bail!("SYMLINK in {scratch} made no symbolic link"),
        };
        let removed = removed.await;
        if let Some(Err(e)) = removed.into_iter().find(|r| r.is_err()) {
            if status_of(&e) != Some(StatusCode::NoSuchFile) {
                return Err(e);
            }
        }
        Ok(order)
    }
}

/// What a walk found at one path, as READDIR's LSTAT attributes describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: PathKind,
    pub size: u64,
    /// Permission bits (0o7777 at most).
    pub mode: u32,
    pub atime: Option<u32>,
    pub mtime: Option<u32>,
}

impl Node {
    fn of(attrs: &FileAttributes) -> Node {
        Node {
            kind: kind_of(attrs),
            size: attrs.size.unwrap_or(0),
            mode: attrs.permissions.unwrap_or(0) & 0o7777,
            atime: attrs.atime,
            mtime: attrs.mtime,
        }
    }

    /// The mode and times to give a copy of this file.
    pub fn copy_attrs(&self) -> FileAttributes {
        let mut attrs = mode_attrs(self.mode);
        if let (Some(a), Some(m)) = (self.atime, self.mtime) {
            attrs.atime = Some(a);
            attrs.mtime = Some(m);
        }
        attrs
    }
}

/// Everything below a directory, by path relative to it (`a`, `a/b`), parents before children.
pub type Tree = BTreeMap<String, Node>;

/// One directory's names with their LSTAT attributes, as READDIR gives them.
pub type Listing = Vec<(String, FileAttributes)>;

/// `root/rel`, or `root` itself for the empty path.
pub fn join(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{rel}")
    }
}

/// Several SFTP channels of one connection, used side by side: OpenSSH runs one sftp-server
/// process per channel, and each takes its requests one after the other, so work spread over
/// channels is done in parallel on the server.
#[derive(Clone)]
pub struct Channels {
    all: Arc<Vec<Sftp>>,
    turn: Arc<std::sync::atomic::AtomicUsize>,
}

impl Channels {
    pub fn new(all: Vec<Sftp>) -> Channels {
        assert!(!all.is_empty(), "at least one SFTP channel");
        Channels {
            all: Arc::new(all),
            turn: Arc::default(),
        }
    }

    /// The first channel: for flights whose requests must be taken in order.
    pub fn first(&self) -> &Sftp {
        &self.all[0]
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The next channel in turn, for requests that need no handle.
    pub fn next(&self) -> &Sftp {
        let i = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.all[i % self.all.len()]
    }

    /// The channel with the most handles free, with `n` of them taken for the caller.
    pub async fn with_handles(&self, n: u32) -> (Sftp, tokio::sync::OwnedSemaphorePermit) {
        let ch = self
            .all
            .iter()
            .max_by_key(|c| c.free_handles())
            .expect("at least one channel")
            .clone();
        let permit = ch.handle_permits(n).await;
        (ch, permit)
    }

    /// At most this many requests that need no handle are in flight over all channels.
    pub fn request_bound(&self) -> usize {
        REQUESTS_IN_FLIGHT * self.all.len()
    }

    /// At most this many operations holding one handle each over all channels.
    pub fn handle_bound(&self) -> usize {
        HANDLES_PER_CHANNEL * self.all.len()
    }

    /// Returns once every request sent so far, on every channel, has been carried out: one
    /// LSTAT per channel, which its sftp-server takes after everything before it. A clean-up
    /// after an abandoned flight starts behind its stragglers instead of racing them.
    pub async fn fence(&self) {
        futures::future::join_all(self.all.iter().map(|c| c.send_lstat("/"))).await;
    }

    /// Every entry below `root` (which the caller knows to be a real directory), never through
    /// a symbolic link; None when `root` does not exist. `known` names directories expected
    /// below it (from a manifest): they are listed in the first flight together with `root`,
    /// and a listing counts only once every directory above it was listed and holds it as a
    /// real directory, so a link planted in the tree is never entered. The rest is found level
    /// by level. Each listing holds one handle on the channel with the most free.
    pub async fn walk(
        &self,
        root: &str,
        known: impl IntoIterator<Item = String>,
    ) -> Result<Option<Tree>> {
        let mut listed: HashMap<String, Result<Option<Listing>>> = HashMap::new();
        let mut queue: Vec<String> = std::iter::once(String::new()).chain(known).collect();
        loop {
            queue.sort();
            queue.dedup();
            let results: Vec<_> = stream::iter(queue.drain(..).map(|rel| async move {
                let (ch, permit) = self.with_handles(0).await;
                drop(permit);
                let listing = ch.read_dir(&join(root, &rel)).await;
                (rel, listing)
            }))
            .buffer_unordered(self.handle_bound())
            .collect()
            .await;
            listed.extend(results);
            // Follow the listings from the root down, through real directories only.
            let mut tree = Tree::new();
            let mut stack = vec![String::new()];
            while let Some(dir) = stack.pop() {
                let entries = match listed.get(&dir) {
                    None => {
                        queue.push(dir);
                        continue;
                    }
                    Some(Err(_)) => {
                        let Some(Err(e)) = listed.remove(&dir) else {
                            unreachable!()
                        };
                        return Err(e);
                    }
                    Some(Ok(None)) if dir.is_empty() => return Ok(None),
                    // Gone since its parent was listed: empty now.
                    Some(Ok(None)) => continue,
                    Some(Ok(Some(entries))) => entries,
                };
                for (name, attrs) in entries {
                    let rel = join_rel(&dir, name);
                    let node = Node::of(attrs);
                    if node.kind == PathKind::Dir {
                        stack.push(rel.clone());
                    }
                    tree.insert(rel, node);
                }
            }
            if queue.is_empty() {
                return Ok(Some(tree));
            }
        }
    }

    /// Remove a tree without ever following a symbolic link: the top is looked at with LSTAT
    /// first (a link there is removed as a link) and the walk never enters a link. Every file
    /// and link goes in one flight spread over the channels, then every directory, deepest
    /// first, in one flight on one channel (which takes them in that order). Something already
    /// gone counts as removed: another deleter may be at work on the same tree.
    pub async fn remove_tree(&self, path: &str) -> Result<()> {
        // An upload abandoned mid-flight (on another channel) may still create a file in the
        // tree while it is being removed: then an RMDIR finds it not empty, and another pass
        // removes the straggler.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.remove_tree_once(path).await {
                Err(e) if tries < 3 && status_of(&e).is_some() => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn remove_tree_once(&self, path: &str) -> Result<()> {
        let gone = |r: Result<()>| match r {
            Err(e) if status_of(&e) == Some(StatusCode::NoSuchFile) => Ok(()),
            other => other,
        };
        let top = match self.first().send_lstat(path).await? {
            None => return Ok(()),
            Some(a) if kind_of(&a) == PathKind::Dir => a,
            Some(_) => return gone(self.first().send_remove(path).await),
        };
        let tree = self.walk(path, []).await?.unwrap_or_default();
        let mut dirs: Vec<String> = Vec::new();
        // Directories made read-only (chmod -R a-w, an FTP client's permissions dialog) are
        // made writable first, as the deploy script's remove_tree does: nothing can leave a
        // directory its owner may not write. (A SETSTAT refused is left to the REMOVE to tell.)
        let mut read_only: Vec<(String, u32)> = Vec::new();
        if let Some(mode) = top.permissions.filter(|m| m & 0o300 != 0o300) {
            read_only.push((path.to_string(), mode));
        }
        let files = tree.iter().filter_map(|(rel, node)| {
            if node.kind == PathKind::Dir {
                dirs.push(join(path, rel));
                if node.mode & 0o300 != 0o300 {
                    read_only.push((join(path, rel), node.mode));
                }
                None
            } else {
                Some(join(path, rel))
            }
        });
        let files: Vec<String> = files.collect();
        let _ = self
            .in_order(read_only.iter().map(|(dir, mode)| {
                let attrs = FileAttributes {
                    permissions: Some(mode & 0o7777 | 0o700),
                    ..FileAttributes::empty()
                };
                self.first().send_setstat(dir, attrs)
            }))
            .await;
        stream::iter(files.iter().map(|f| self.next().send_remove(f)))
            .buffer_unordered(self.request_bound())
            .map(gone)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<()>>()?;
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.push(path.to_string());
        self.in_order(dirs.iter().map(|d| self.first().send_rmdir(d)))
            .await
            .into_iter()
            .try_for_each(gone)
    }

    /// Await requests sent in order on one channel, at most [`REQUESTS_IN_FLIGHT`] at once
    /// (the iterator sends each as it is taken); the answers in order.
    pub async fn in_order<T>(&self, requests: impl Iterator<Item = Sent<T>>) -> Vec<Result<T>> {
        futures::stream::iter(requests)
            .buffered(REQUESTS_IN_FLIGHT)
            .collect()
            .await
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// What LSTAT attributes say a path is.
pub fn kind_of(attrs: &FileAttributes) -> PathKind {
    match attrs.permissions.map(|p| p & 0o170000) {
        Some(0o040000) => PathKind::Dir,
        Some(0o100000) => PathKind::File,
        Some(0o120000) => PathKind::Symlink,
        _ => PathKind::Other,
    }
}
