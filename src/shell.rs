//! The one shell-quoting helper.
//!
//! Every value that reaches a rendered script or a remote command line goes through [`quote`].
//! The template engine uses it as its escape function, so `{{value}}` in a template is always a
//! single-quoted shell word; nothing in a file name, hook or path can become shell code.

/// Quote `s` as one POSIX shell word: wrap it in single quotes and write each embedded single
/// quote as `'\''`. Inside single quotes no character is special (not `$`, backquote, backslash
/// or newline), so this is safe for any string — the one thing a single-quoted word cannot hold
/// is NUL, which no path can contain either.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `s` as one shell word for a command shown to people: as it is when it is one plain word
/// (`web07`, `db-1.example.com`), else [`quote`]d.
pub fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:@%+=,/".contains(c));
    if plain {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::{quote, word};

    #[test]
    fn a_plain_word_is_shown_as_it_is_anything_else_quoted() {
        assert_eq!(word("web07"), "web07");
        assert_eq!(word("10.0.0.7:2222"), "10.0.0.7:2222");
        assert_eq!(word("a b"), "'a b'");
        assert_eq!(word(""), "''");
    }

    #[test]
    fn plain_words_are_wrapped_in_single_quotes() {
        assert_eq!(quote("abc"), "'abc'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn single_quotes_are_closed_escaped_and_reopened() {
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn quoted_words_round_trip_through_a_real_shell() {
        let hostile = "a'b\"c$(touch /tmp/x)`id`;|&<>\n\t -rf * ? [ ] \\ ${HOME} %s%n # ~ é";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(hostile)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile);
    }
}
