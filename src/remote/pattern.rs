//! OpenSSH's host patterns, shared by the ssh config reader (`Host`, `Match host ...`) and the
//! known_hosts matcher: `*` and `?` wildcards, and lists in which a matching `!pattern` vetoes
//! the whole list.
//!
//! One implementation for both, because a difference between them would be a security bug of
//! the quiet kind: a `Host` block and a known_hosts line written with the same pattern must
//! select the same hosts, as they do for `ssh`, which uses one matcher for both. Matching is on
//! bytes, as `match_pattern` does on C strings, so `?` is one byte of a UTF-8 name, not one
//! character; nobody writes non-ASCII host patterns, and agreeing with `ssh` matters more.

/// OpenSSH's `match_pattern`: `*` matches any run of bytes (also none), `?` exactly one byte,
/// anything else itself. One backtrack point instead of OpenSSH's recursion, so a hostile
/// pattern (`*a*a*a*...b`) costs linear work per star rather than exponential.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where to resume after the most recent `*`: the pattern index past it, and the text index
    // it is currently assumed to stretch to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                backtrack = Some((p, t));
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                // Let the last `*` swallow one more byte and try again from there.
                Some((after_star, star_end)) => {
                    p = after_star;
                    t = star_end + 1;
                    backtrack = Some((after_star, t));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// OpenSSH's `match_pattern_list`, answered as a yes or no: true when some pattern matches and
/// no negated one (`!pattern`) does. A list of negations alone never matches. With `fold_case`
/// the patterns are lowercased first (the caller lowercases `subject`), as `ssh` does for host
/// names; user names are compared as written.
pub fn list_matches<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
    subject: &str,
    fold_case: bool,
) -> bool {
    let mut matched = false;
    for pattern in patterns {
        let folded;
        let pattern = if fold_case {
            folded = pattern.to_ascii_lowercase();
            folded.as_str()
        } else {
            pattern
        };
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard(negated, subject) => return false,
            Some(_) => {}
            None => matched |= wildcard(pattern, subject),
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(wildcard("*", ""));
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("a*c", "ac"));
        assert!(wildcard("*.example.com", "x.y.example.com"));
        assert!(!wildcard("*.example.com", "example.com"));
        assert!(wildcard("**", "anything"));
    }

    #[test]
    fn question_mark_is_exactly_one_byte() {
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(!wildcard("a?c", "abbc"));
        // one byte, as OpenSSH on a C string: a two-byte character needs two
        assert!(!wildcard("?", "é"));
        assert!(wildcard("??", "é"));
    }

    #[test]
    fn backtracking_finds_the_later_match() {
        assert!(wildcard("*ab", "aab"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("*a*b?c", "xxaxxbyc"));
        assert!(wildcard("a**", "a"));
        assert!(!wildcard("*ab", "aba"));
        assert!(!wildcard("", "a"));
        // would take exponential time with naive recursion
        let text = "a".repeat(64);
        assert!(!wildcard(&format!("{}b", "*a".repeat(30)), &text));
    }

    #[test]
    fn brackets_are_literal() {
        assert!(wildcard("[host]:22*", "[host]:2222"));
        assert!(!wildcard("[ab]", "a"));
    }

    #[test]
    fn a_matching_negation_vetoes_the_list() {
        let list = ["*.example.com", "!secret.example.com"];
        assert!(list_matches(list, "www.example.com", false));
        assert!(!list_matches(list, "secret.example.com", false));
        // order does not matter
        assert!(!list_matches(
            ["!secret.example.com", "*.example.com"],
            "secret.example.com",
            false
        ));
        // negations alone select nothing
        assert!(!list_matches(["!x"], "y", false));
    }

    #[test]
    fn fold_case_lowercases_the_patterns_only() {
        assert!(list_matches(["WEB*"], "web1", true));
        assert!(!list_matches(["WEB*"], "web1", false));
        assert!(!list_matches(["web*"], "WEB1", true));
    }
}
