//! One SSH connection per command: the route from `~/.ssh/config` (jump hosts included), each
//! host key verified before anything is sent to that host, public-key authentication, an SFTP
//! channel for files and one exec channel for the script.
//!
//! Split by concern, in the order a connection goes through them: [`connect`] (TCP, jump
//! hosts, handshake, why it failed), [`host_key`] (whether to trust the server's key),
//! [`auth`] (which keys to offer, and what to say when none works) and [`session`] (the
//! logged-in session a deploy uses). Failures are types ([`ConnectError`],
//! [`HostKeyRefusal`], [`AuthFailure`]) rather than text, so `cutover check` can tell the
//! stages apart without reading messages, and each carries its own `hint()`: the fix a user
//! should try, printed on a `hint:` line of its own.

pub mod auth;
pub mod connect;
pub mod host_key;
pub mod session;

pub use auth::{AuthFailure, AuthFailureReason, Tried, KEY_ENV, PASSPHRASE_ENV};
pub use connect::{ConnectError, ForwardFailure, Handshake};
pub use host_key::{HostKeyRefusal, OfferedKey};
pub use session::SshSession;

/// One SSH server on the route: the target, or a jump host on the way to it. Every message
/// names it, so a refusal from a bastion is never mistaken for one from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub jump: bool,
}

impl Peer {
    /// `host`, or `[host]:port` off port 22: the name known_hosts files it under.
    pub fn address(&self) -> String {
        display_name(&self.host, self.port)
    }
}

/// `jump host [bastion]:2222`, or the target's address alone.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.jump {
            f.write_str("jump host ")?;
        }
        f.write_str(&self.address())
    }
}

/// The fix for an SSH error found anywhere in `err`'s chain of causes, for a `hint:` line.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<ConnectError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<HostKeyRefusal>() {
            return Some(e.hint());
        }
        cause.downcast_ref::<AuthFailure>().map(AuthFailure::hint)
    })
}

fn display_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}
