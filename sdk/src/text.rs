//! Small text helpers for reports.

/// The first `max_chars` characters of `text` (a prefix, cut on a character boundary).
///
/// ```
/// assert_eq!(quarry_sdk::text::head("héllo", 2), "hé");
/// assert_eq!(quarry_sdk::text::head("hi", 10), "hi");
/// ```
pub fn head(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
