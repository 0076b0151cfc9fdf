//! The local side of a deploy: walk the source tree and describe it as a [`Manifest`].
//!
//! `walk` decides which paths are deployed (ignore rules, symlinks, modes) and hashes the files;
//! `manifest` is the text format stored on the server for every release, and the validation that
//! makes a manifest read back from a server safe to act on.

pub mod manifest;
pub mod walk;

pub use manifest::{Entry, Kind, Manifest};
