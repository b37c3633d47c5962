//! Quoting for POSIX shell scripts.
//!
//! Prefer [`crate::host::Command::argv`]: an argument vector reaches the program untouched and
//! nothing in it is interpreted. When a task really needs a shell (pipes, `||`, redirections),
//! every value spliced into the script must go through [`quote`].

/// Quotes `value` so that `/bin/sh` reads it back as exactly one word with exactly these
/// bytes, whatever it contains (quotes, `$()`, backticks, newlines, `;`, globs, spaces).
///
/// Values made only of characters that are never special (`A-Z a-z 0-9 _ - . / : = @ % + ,`)
/// are returned as they are; everything else is wrapped in single quotes, with each `'`
/// written as `'\''`. A NUL byte cannot appear in a shell word at all: it is kept, and the host
/// then refuses the command as `rejected`.
///
/// ```
/// use quarry_sdk::shell::quote;
/// assert_eq!(quote("/data/logs"), "/data/logs");
/// assert_eq!(quote("a b"), "'a b'");
/// assert_eq!(quote("it's $(rm -rf /)"), r"'it'\''s $(rm -rf /)'");
/// assert_eq!(quote(""), "''");
/// ```
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes each value and joins them with spaces: a safe command line for a shell script.
///
/// ```
/// use quarry_sdk::shell::join;
/// assert_eq!(join(["docker", "rm", "-v", "a;b"]), "docker rm -v 'a;b'");
/// ```
pub fn join<I, S>(values: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    values
        .into_iter()
        .map(|v| quote(v.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `printf '%s\n' <quoted>` in a real /bin/sh and returns what it printed.
    fn roundtrip(value: &str) -> String {
        let script = format!("printf '%s' {}", quote(value));
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "script {script:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_values_come_back_verbatim() {
        let marker = std::env::temp_dir().join(format!("quarry-quote-{}", std::process::id()));
        let m = marker.display();
        let hostile = [
            "plain".to_string(),
            "".to_string(),
            "two words".to_string(),
            "'".to_string(),
            "''".to_string(),
            "it's".to_string(),
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("a; touch {m}"),
            format!("a\ntouch {m}"),
            format!("a && touch {m} || touch {m}"),
            "\"$HOME\"".to_string(),
            "*".to_string(),
            "-rf".to_string(),
            "~root".to_string(),
            "a\\b".to_string(),
            "ünïcødé ✓".to_string(),
            format!("'; touch {m}; echo '"),
        ];
        for value in &hostile {
            assert_eq!(&roundtrip(value), value, "value {value:?}");
        }
        assert!(!marker.exists(), "a quoted value executed a command");
    }

    #[test]
    fn join_is_one_word_per_value() {
        let script = format!(
            "for a in {}; do printf '<%s>' \"$a\"; done",
            join(["a b", "$x", ""])
        );
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "<a b><$x><>");
    }
}
