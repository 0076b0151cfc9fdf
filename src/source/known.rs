//! The hashes the last scan of a source computed, kept on this machine so that the next scan
//! reads only the files that changed since: a 1 GB tree with one file changed is scanned in the
//! time it takes to stat it, not to read it. Kept in `$XDG_CACHE_HOME/cutover/hashes/`
//! (`~/.cache/cutover/hashes/`), one file per source directory.
//!
//! A hash is reused only for a file whose device, inode, size, modification time and change
//! time (to the nanosecond) are all what they were when it was hashed. The change time cannot be
//! set by hand (`touch -d` moves it forward too), and every write moves it: a file whose
//! content changed is always read again. A file changed within two seconds of the scan that
//! hashed it is not kept (a file system with coarse timestamps could change it again without its
//! times moving). Like git's index: the same trust, the same rule. A missing, unreadable or
//! malformed file is the same as none; uploads are hashed again as they are packed either way.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    pub fn of(md: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
        }
    }
}

/// Changes closer than this to the scan that hashed a file leave its hash out of the file.
const RACY_NS: i128 = 2_000_000_000;

/// The hashes known for one source directory.
pub struct KnownHashes {
    file: Option<PathBuf>,
    /// By device and inode (a file's identity, whatever its path), the stamp and the hash.
    known: HashMap<(u64, u64), (Stamp, u128)>,
    /// When this scan started (nanoseconds since the epoch).
    started_ns: i128,
}

impl KnownHashes {
    /// Nothing known, nothing kept: every file is read.
    pub fn none() -> KnownHashes {
        KnownHashes {
            file: None,
            known: HashMap::new(),
            started_ns: now_ns(),
        }
    }

    /// What the last scan of `root` kept (nothing when there is no home to keep it in).
    pub fn load(root: &Path) -> KnownHashes {
        match cache_file(root) {
            Some(file) => KnownHashes::load_from(file, now_ns()),
            None => KnownHashes::none(),
        }
    }

    /// What `file` holds, for a scan that started at `started_ns`.
    fn load_from(file: PathBuf, started_ns: i128) -> KnownHashes {
        let known = std::fs::read_to_string(&file)
            .map(|text| text.lines().filter_map(parse_line).collect())
            .unwrap_or_default();
        KnownHashes {
            file: Some(file),
            known,
            started_ns,
        }
    }

    /// The hash of the file with `stamp` when it is still the version that was hashed.
    pub fn get(&self, stamp: &Stamp) -> Option<u128> {
        match self.known.get(&(stamp.dev, stamp.ino)) {
            Some((known, hash)) if known == stamp => Some(*hash),
            _ => None,
        }
    }

    /// Keep `hashed` (every file of this scan) for the next one, unless nothing changed.
    /// Best effort: a cache that cannot be written costs the next scan its reads, nothing else.
    pub fn save(&self, hashed: impl Iterator<Item = (Stamp, u128)>) {
        use std::io::Write;
        let Some(file) = &self.file else { return };
        let settled: Vec<(Stamp, u128)> = hashed
            .filter(|(stamp, _)| stamp.mtime_ns.max(stamp.ctime_ns) < self.started_ns - RACY_NS)
            .collect();
        let same = settled.len() == self.known.len()
            && settled
                .iter()
                .all(|(stamp, hash)| self.get(stamp) == Some(*hash));
        let Some(dir) = file.parent().filter(|_| !same) else {
            return;
        };
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::create_dir_all(dir).and_then(|_| {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for (s, hash) in &settled {
                writeln!(
                    out,
                    "{} {} {} {} {} {hash:032x}",
                    s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns
                )?;
            }
            // Flushed, not synced: after a crash a torn file only costs the next scan its reads.
            out.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, file)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// `$XDG_CACHE_HOME/cutover/hashes/KEY`, KEY the hash of the source's canonical path.
fn cache_file(root: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let key = xxhash_rust::xxh3::xxh3_128(root.as_os_str().as_encoded_bytes());
    Some(
        crate::config::cache_dir()?
            .join("hashes")
            .join(format!("{key:032x}")),
    )
}

fn parse_line(line: &str) -> Option<((u64, u64), (Stamp, u128))> {
    let mut f = line.split(' ');
    let stamp = Stamp {
        dev: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        mtime_ns: f.next()?.parse().ok()?,
        ctime_ns: f.next()?.parse().ok()?,
    };
    let hash = f.next().filter(|h| h.len() == 32)?;
    let hash = u128::from_str_radix(hash, 16).ok()?;
    f.next()
        .is_none()
        .then_some(((stamp.dev, stamp.ino), (stamp, hash)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::walk::scan_knowing;
    use crate::source::{Kind, Manifest};

    fn hash_of(m: &Manifest, rel: &str) -> u128 {
        match m.entries[rel].kind {
            Kind::File { hash, .. } => hash,
            _ => panic!("{rel} is not a file"),
        }
    }

    fn scan(root: &Path, cache: &Path, started_ns: i128) -> Manifest {
        let known = KnownHashes::load_from(cache.to_path_buf(), started_ns);
        scan_knowing(root, &[], &[], &[], known).unwrap().manifest
    }

    /// A scan this far ahead finds every file settled (older than its racy window).
    const LATER: i128 = 10_000_000_000;

    /// A source directory, and where its hashes are kept (inside the second directory).
    fn source_and_cache() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("hashes");
        (src, dir, cache)
    }

    #[test]
    fn a_file_whose_stamp_did_not_move_is_not_read_again() {
        let (src, _dir, cache) = source_and_cache();
        std::fs::write(src.path().join("a"), "one").unwrap();
        std::fs::write(src.path().join("b"), "two").unwrap();
        let first = scan(src.path(), &cache, now_ns() + LATER);
        // Plant a wrong hash for b under its true stamp: a scan that reuses it shows it.
        let text = std::fs::read_to_string(&cache).unwrap();
        let right = format!("{:032x}", hash_of(&first, "b"));
        let planted = text.replace(&right, &format!("{:032x}", 7));
        assert_ne!(planted, text, "b is in the cache: {text}");
        std::fs::write(&cache, planted).unwrap();
        let second = scan(src.path(), &cache, now_ns() + LATER);
        assert_eq!(hash_of(&second, "b"), 7, "b was not read again");
        assert_eq!(hash_of(&second, "a"), hash_of(&first, "a"));
    }

    #[test]
    fn new_content_is_read_even_with_the_same_size_and_modification_time() {
        let (src, _dir, cache) = source_and_cache();
        let file = src.path().join("page.html");
        std::fs::write(&file, "version 1").unwrap();
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        let first = scan(src.path(), &cache, now_ns() + LATER);
        // Same size, and the modification time put back: only the change time tells.
        std::fs::write(&file, "version 2").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = scan(src.path(), &cache, now_ns() + LATER);
        assert_ne!(hash_of(&second, "page.html"), hash_of(&first, "page.html"));
        assert_eq!(
            hash_of(&second, "page.html"),
            xxhash_rust::xxh3::xxh3_128(b"version 2")
        );
    }

    #[test]
    fn a_file_changed_just_before_its_scan_is_not_kept() {
        let (src, _dir, cache) = source_and_cache();
        std::fs::write(src.path().join("fresh"), "just written").unwrap();
        scan(src.path(), &cache, now_ns());
        let kept = KnownHashes::load_from(cache.clone(), now_ns());
        assert!(kept.known.is_empty(), "{:?}", kept.known);
    }
}
