//! cutover: zero-downtime deploys. Each deploy builds a complete new release beside the live one
//! and switches `current` to it with one atomic rename.
//!
//! The modules follow the stages of a deploy: [`config`] reads what to deploy where (a target
//! is a fleet of one or more hosts), [`source`] scans and hashes the local tree, [`survey`]
//! reads what a host holds now, [`lock`] takes its lock, [`plan`] diffs the tree against the
//! live release's manifest, [`deploy`] drives every host through prepare → barrier → swap →
//! commit or revert, [`script`] renders the one shell script a host runs and reads what it
//! says back, and [`remote`] carries it all over SSH and SFTP (or locally). [`commands`] holds
//! the thin command-line layer.
//!
//! The modules the binary, the tests and the benchmarks use are public; the others are private,
//! so the compiler reports what nothing uses.

mod archive;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod error;
pub mod layout;
pub mod lock;
pub mod output;
pub mod plan;
pub mod remote;
pub mod script;
pub mod shell;
pub mod source;
pub mod survey;
