//! cutover: zero-downtime deploys. Each deploy builds a complete new release beside the live one
//! and switches `current` to it with one atomic rename.
//!
//! The modules follow the stages of a deploy: [`config`] reads what to deploy where, [`source`]
//! scans and hashes the local tree, [`plan`] diffs it against the live release's manifest,
//! [`remote`] moves files over SFTP (or locally), [`script`] renders the one shell script the
//! server runs, and [`commands`] strings the stages together for each command.

pub mod archive;
pub mod commands;
pub mod config;
pub mod error;
pub mod layout;
pub mod plan;
pub mod remote;
pub mod script;
pub mod shell;
pub mod source;
