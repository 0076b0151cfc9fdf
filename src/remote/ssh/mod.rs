//! One SSH connection per command: the route from `~/.ssh/config` (jump hosts included), each
//! host key verified before anything is sent to that host, public-key authentication, an SFTP
//! channel for files and one exec channel for the script.
//!
//! Split by concern, in the order a connection goes through them: [`connect`] (TCP, jump
//! hosts, handshake, why it failed), [`host_key`] (whether to trust the server's key),
//! [`auth`] (which keys to offer, and what to say when none works) and [`session`] (the
//! logged-in session a deploy uses). The rest of cutover sees only what is re-exported here.

mod auth;
mod connect;
mod host_key;
mod session;

pub use auth::PASSPHRASE_ENV;
pub use connect::{ConnectError, Handshake};
pub use session::{ExecRefused, SshSession};

fn display_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}
