//! Registry passwords: ROCK's base64 form, decoded and checked here, and the redaction of every
//! form of a password from text that is recorded (outcome, errors, logs).
//!
//! A [`Password`] never prints itself: its `Debug` shows `[REDACTED]` and it has no `Display`,
//! so a stray `{:?}` in an error message cannot leak it.

use std::fmt;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The standard base64 alphabet (RFC 4648 §4), the one `base64 -d` decodes.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A registry password configured literally, in ROCK's form: base64 of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    /// The value as configured.
    configured: String,
    /// The decoded bytes re-encoded: standard alphabet, padded, one line.
    canonical: String,
    /// The password itself.
    plain: Vec<u8>,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(")?;
        f.write_str(REDACTED)?;
        f.write_str(")")
    }
}

impl Password {
    /// Checks and decodes a configured base64 password. The error never contains the value.
    pub fn from_base64(configured: &str) -> Result<Password, &'static str> {
        let plain = decode_base64(configured)?;
        if plain.is_empty() {
            return Err("decodes to an empty password");
        }
        Ok(Password {
            configured: configured.to_string(),
            canonical: encode_base64(&plain),
            plain,
        })
    }

    /// The password as standard, padded, single-line base64: what is written to the worker
    /// and decoded there with `base64 -d`.
    pub fn canonical_base64(&self) -> &str {
        &self.canonical
    }

    /// Every form in which this password could show up in text: as configured (whole and
    /// line by line), canonical base64, and the password itself when it is UTF-8 (also without
    /// a trailing line break, which `echo pw | base64` adds and `docker login` strips).
    pub fn forms(&self) -> Vec<String> {
        let mut forms = vec![self.configured.clone(), self.canonical.clone()];
        forms.extend(self.configured.lines().map(str::to_string));
        if let Ok(plain) = std::str::from_utf8(&self.plain) {
            forms.push(plain.to_string());
            forms.push(plain.trim_end_matches(['\n', '\r']).to_string());
        }
        forms
    }
}

/// Decodes standard base64. Line breaks are ignored (as `base64 -d` does); padding may be
/// left out. The error describes the problem without quoting the input.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, &'static str> {
    const NOT_BASE64: &str = "is not valid base64 (expected the characters A-Z, a-z, 0-9, '+', '/', and '=' padding at the end)";
    let chars: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'\n' | b'\r'))
        .collect();
    if chars.is_empty() {
        return Err("must not be empty");
    }
    let data_len = chars.iter().position(|&b| b == b'=').unwrap_or(chars.len());
    let padding = chars.len() - data_len;
    if chars[data_len..].iter().any(|&b| b != b'=')
        || padding > 2
        || (padding > 0 && !chars.len().is_multiple_of(4))
        || data_len % 4 == 1
    {
        return Err(NOT_BASE64);
    }
    let mut out = Vec::with_capacity(data_len * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in &chars[..data_len] {
        let v = ALPHABET.iter().position(|&a| a == b).ok_or(NOT_BASE64)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Encodes bytes as standard, padded base64 on one line.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Replaces every occurrence of any of a set of secrets with [`REDACTED`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Non-empty secrets, longest first (so a secret containing another is replaced whole).
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for the given secrets (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_known_values() {
        for (plain, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("pass", "cGFzcw=="),
            ("s3cr3t-P@ss\n", "czNjcjN0LVBAc3MK"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), b64);
            if !b64.is_empty() {
                assert_eq!(decode_base64(b64).unwrap(), plain.as_bytes());
            }
        }
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_base64(&encode_base64(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn base64_accepts_line_breaks_and_missing_padding() {
        assert_eq!(decode_base64("cGFz\ncw==\n").unwrap(), b"pass");
        assert_eq!(decode_base64("cGFzcw").unwrap(), b"pass");
        assert_eq!(decode_base64("Zm8").unwrap(), b"fo");
    }

    #[test]
    fn bad_base64_is_refused_without_quoting_it() {
        for bad in [
            "",
            "\n",
            "cGFzcw=",
            "cGFzc",
            "cG Fzcw==",
            "cGFz-w==",
            "cGFz_w==",
            "=cGF",
            "cG=zcw==",
            "cGFzcw===",
            "cGFzcw==x",
            "pässwörd",
        ] {
            let e = decode_base64(bad).expect_err(bad);
            assert!(bad.trim().is_empty() || !e.contains(bad), "{e}");
        }
        assert_eq!(Password::from_base64("").unwrap_err(), "must not be empty");
    }

    #[test]
    fn a_password_never_prints_itself() {
        let p = Password::from_base64("c2VjcmV0LXB3").unwrap();
        let shown = format!("{p:?} {:?}", Some(&p));
        assert!(
            !shown.contains("c2VjcmV0LXB3") && !shown.contains("secret-pw"),
            "{shown}"
        );
        assert!(shown.contains(REDACTED));
    }

    #[test]
    fn redaction_covers_every_form() {
        // "s3cret\n", as `echo s3cret | base64` gives it, wrapped as base64 may be.
        let p = Password::from_base64("czNj\ncmV0Cg").unwrap();
        assert_eq!(p.canonical_base64(), "czNjcmV0Cg==");
        let r = Redactor::new(p.forms());
        let text = "x s3cret y czNjcmV0Cg== z czNj\ncmV0Cg w czNjcmV0Cg";
        let out = r.redact(text);
        assert!(
            !out.contains("s3cret") && !out.contains("czNjcmV0Cg"),
            "{out}"
        );
        assert!(!out.contains("czNj\ncmV0"), "{out}");
        assert_eq!(r.redact("nothing secret here"), "nothing secret here");
        assert_eq!(Redactor::new([String::new()]).redact("abc"), "abc");
    }

    #[test]
    fn longer_secrets_are_replaced_first() {
        let r = Redactor::new(["ab".to_string(), "abcd".to_string()]);
        assert_eq!(r.redact("abcd ab"), format!("{REDACTED} {REDACTED}"));
    }
}
