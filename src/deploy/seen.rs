//! What this machine last saw live on a host: the release, and the digest of the tree it holds
//! (the one its `.cutover/current-digest` names). Kept in `$XDG_CACHE_HOME/cutover/live/`
//! (`~/.cache/cutover/live/`), one small file per user, host, port and deploy path.
//!
//! It is a prediction and nothing more. A deploy whose source has the digest seen last expects
//! nothing to have changed, and spends its first flight of requests on proving it (is `current`
//! still that release, is the release still whole) instead of half-taking the lock for a build
//! it will most likely not make: a deploy that changes nothing then costs one flight after the
//! handshake instead of two. When the prediction is wrong (another machine deployed since), the
//! lock is taken one round trip later than usual; nothing else differs. What the server says
//! decides, always: the file is never a reason to skip a check, and a missing, unreadable or
//! malformed one is the same as none.

use std::path::PathBuf;

use crate::config::{Host, Target};
use crate::layout::ReleaseId;

/// Where the release and digest last seen live on one host's deploy path are kept.
pub struct Seen {
    file: PathBuf,
}

impl Seen {
    /// None for a `local` target (no round trip to save) and when there is no home to keep it
    /// in.
    pub fn of(target: &Target) -> Option<Seen> {
        let Host::Ssh { host, port, user } = &target.host else {
            return None;
        };
        let key = format!(
            "{user}\0{}\0{port}\0{}",
            host.to_ascii_lowercase(),
            target.path
        );
        let name = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()));
        Some(Seen {
            file: crate::config::cache_dir()?.join("live").join(name),
        })
    }

    /// The release and digest seen live last time, when the file holds a well-formed pair.
    pub fn read(&self) -> Option<(ReleaseId, String)> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let (id, digest) = text.trim_end().split_once(' ')?;
        let digest_ok = digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        Some((ReleaseId::parse(id)?, digest.to_string())).filter(|_| digest_ok)
    }

    /// Remember that `id`, holding a tree with `digest`, is live. Best effort: a cache that
    /// cannot be written costs the next deploy a round trip, not its result.
    pub fn write(&self, id: &ReleaseId, digest: &str) {
        let Some(dir) = self.file.parent() else {
            return;
        };
        let tmp = self
            .file
            .with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, format!("{id} {digest}\n")))
            .and_then(|_| std::fs::rename(&tmp, &self.file));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_wrote_and_nothing_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Seen {
            file: dir.path().join("live").join("x"),
        };
        assert_eq!(seen.read(), None);
        let id = ReleaseId::parse("20261203120000").unwrap();
        let digest = "0123456789abcdef0123456789abcdef";
        seen.write(&id, digest);
        assert_eq!(seen.read(), Some((id.clone(), digest.to_string())));
        for bad in [
            "20261203120000",
            "20261203120000 0123",
            "2026120312000x 0123456789abcdef0123456789abcdef",
            "20261203120000 0123456789abcdef0123456789abcdeg",
            "../../etc 0123456789abcdef0123456789abcdef",
        ] {
            std::fs::write(&seen.file, bad).unwrap();
            assert_eq!(seen.read(), None, "{bad:?}");
        }
    }
}
