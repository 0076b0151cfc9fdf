//! What the scripts print on stdout for the client, and the words the client answers with.
//!
//! ```text
//! cutover-started release=ID          first line: the script runs (and has read all of itself)
//! cutover-await upload|go|commit      it waits for a word on its stdin
//! cutover-ready release=ID …          built and before_swap passed: ready to switch
//! cutover-swapped release=ID swap=M   current points at the new release
//! cutover-verified ok|failed          the verify hooks' verdict
//! cutover-reverted release=ID         switched back
//! cutover-result release=ID … status=N   committed and tidied up (the trash is emptied after)
//! ```
//!
//! The check script prints `cutover-check begin`, one `check<TAB>NAME<TAB>ok|fail|warn<TAB>
//! DETAIL<TAB>FIX` line per finding, and `cutover-check end`. Anything else on stdout is ignored.

/// The first line of every deploy and rollback script.
pub const STARTED: &str = "cutover-started ";
/// The line of a script that switched back (see [`Line::Reverted`]).
pub const REVERTED: &str = "cutover-reverted";

/// The words the client sends.
pub mod word {
    /// Every file of the upload is in staging.
    pub const UPLOAD_DONE: &str = "upload-done";
    /// Switch now.
    pub const GO: &str = "go";
    /// Stop before the switch; remove what was built.
    pub const ABORT: &str = "abort";
    /// Every host switched and verified: make it final.
    pub const COMMIT: &str = "commit";
    /// Switch back.
    pub const REVERT: &str = "revert";
}

/// One protocol line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Started,
    Await(String),
    Ready {
        links: u64,
        warnings: u64,
    },
    Swapped {
        swap: String,
    },
    Verified(bool),
    Reverted,
    Result {
        links: u64,
        warnings: u64,
        status: u32,
    },
    /// Not a protocol line.
    Other,
}

impl Line {
    pub fn parse(line: &str) -> Line {
        let Some((head, rest)) = line.split_once(' ').or(Some((line, ""))) else {
            return Line::Other;
        };
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_default()
                .to_string()
        };
        let number = |name: &str| field(name).parse::<u64>().unwrap_or(0);
        match head {
            "cutover-started" => Line::Started,
            "cutover-await" => Line::Await(rest.trim().to_string()),
            "cutover-ready" => Line::Ready {
                links: number("links"),
                warnings: number("warnings"),
            },
            "cutover-swapped" => Line::Swapped {
                swap: field("swap"),
            },
            "cutover-verified" => Line::Verified(rest.trim() == "ok"),
            "cutover-reverted" => Line::Reverted,
            "cutover-result" => Line::Result {
                links: number("links"),
                warnings: number("warnings"),
                status: number("status") as u32,
            },
            _ => Line::Other,
        }
    }
}

/// One finding of the check script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub name: String,
    /// `ok`, `warn`, or anything else (a failure).
    pub status: String,
    pub detail: String,
    pub fix: Option<String>,
}

/// What the check script printed.
#[derive(Debug, Default)]
pub struct CheckOutput {
    pub began: bool,
    pub ended: bool,
    pub findings: Vec<Finding>,
}

/// `cutover-check begin`, then `check<TAB>NAME<TAB>STATUS<TAB>DETAIL<TAB>FIX` lines, then
/// `cutover-check end`.
pub fn parse_check(stdout: &str) -> CheckOutput {
    let mut out = CheckOutput::default();
    for line in stdout.lines() {
        if line.starts_with("cutover-check begin") {
            out.began = true;
        } else if line == "cutover-check end" {
            out.ended = true;
        } else if let Some(rest) = line.strip_prefix("check\t") {
            let mut f = rest.splitn(4, '\t');
            let name = f.next().unwrap_or_default().to_string();
            let status = f.next().unwrap_or_default().to_string();
            let detail = f.next().unwrap_or_default().trim_end().to_string();
            let fix = f
                .next()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from);
            out.findings.push(Finding {
                name,
                status,
                detail,
                fix,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_are_recognised() {
        assert_eq!(
            Line::parse("cutover-started release=20260101000000"),
            Line::Started
        );
        assert_eq!(Line::parse("cutover-await go"), Line::Await("go".into()));
        assert_eq!(
            Line::parse("cutover-ready release=1 links=3 warnings=1"),
            Line::Ready {
                links: 3,
                warnings: 1
            }
        );
        assert_eq!(
            Line::parse("cutover-verified failed"),
            Line::Verified(false)
        );
        assert_eq!(
            Line::parse("cutover-result release=1 links=2 warnings=0 swap=mv-T status=3"),
            Line::Result {
                links: 2,
                warnings: 0,
                status: 3
            }
        );
        assert_eq!(Line::parse("This account is for sftp only"), Line::Other);
        assert_eq!(Line::parse(""), Line::Other);
    }

    #[test]
    fn check_lines_become_findings() {
        let out = parse_check(
            "cutover-check begin 0.1.0\n\
             check\ttools\tok\tall there\t\n\
             check\tlock\tfail\t/app/.cutover/lock is held\tcutover unlock t\n\
             noise\n\
             check\treleases\twarn\told-site\t\n\
             cutover-check end\n",
        );
        assert!(out.began && out.ended);
        assert_eq!(out.findings.len(), 3);
        assert_eq!(out.findings[1].fix.as_deref(), Some("cutover unlock t"));
        assert_eq!(out.findings[2].fix, None);
    }
}
