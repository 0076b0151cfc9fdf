//! One module per command: flags in, the stages called, text or `--json` out. The stages
//! themselves live elsewhere (`deploy`, `survey`, `lock`, …): these modules stay thin.

pub mod check;
pub mod deploy;
pub mod init;
pub mod releases;
pub mod rollback;
pub mod verify;
