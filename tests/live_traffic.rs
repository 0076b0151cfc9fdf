//! Zero downtime, measured: nginx serves `current` while cutover deploys and rolls back over a
//! real sshd, the deploy script running in its one exec call. The test body is in
//! tests/common/traffic.rs (tests/sftp_only.rs runs it without exec).
mod common;

use common::site::TargetKind;

/// While cutover deploys a site back and forth over SSH, then rolls it back twice, requests to
/// nginx keep getting whole files of one version or the other: zero connection errors, zero
/// 404s, zero 5xx, zero mixed or truncated bodies, over keep-alive and fresh connections alike.
#[test]
fn requests_never_fail_while_deploys_and_rollbacks_alternate_two_versions() {
    common::traffic::requests_never_fail_while_deploys_and_rollbacks_alternate_two_versions(
        TargetKind::Ssh,
    );
}
