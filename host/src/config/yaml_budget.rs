//! The size a YAML text expands to, measured on the parser's event stream WITHOUT expanding
//! aliases, so that [`super::parse_yaml`] can refuse an alias bomb (one big anchored list
//! referenced many times, or anchors of anchors) before deserializing builds it in memory.
//!
//! The events come from `libyaml-rs`, the parser `yaml_serde` itself runs on (the same crate
//! and version, through the lock file), so both see the same nodes, anchors and aliases. The
//! count is conservative: every alias counts as a full copy of its anchor, merge keys included.

use std::collections::HashMap;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

/// Most nodes (scalars, sequences, mappings) a config may expand to, aliases counted as copies.
/// Far above any real config (ROCK's are a few hundred nodes) and about what the 4 MiB file
/// cap allows without aliases.
pub const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// Most bytes of scalar text a config may expand to, aliases counted as copies: 4 times the
/// file cap.
pub const MAX_EXPANDED_SCALAR_BYTES: u64 = 16 << 20;

/// What a node expands to.
#[derive(Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    /// The limit this size is over, as a reason for the config error.
    fn over_limit(&self) -> Option<String> {
        if self.nodes > MAX_EXPANDED_NODES {
            Some(format!(
                "expands to more than {MAX_EXPANDED_NODES} YAML nodes once aliases are expanded (the limit for a config file): refused"
            ))
        } else if self.bytes > MAX_EXPANDED_SCALAR_BYTES {
            Some(format!(
                "expands to more than {} MiB of YAML scalar text once aliases are expanded (the limit for a config file): refused",
                MAX_EXPANDED_SCALAR_BYTES >> 20
            ))
        } else {
            None
        }
    }
}

/// Refuses `text` when it expands past [`MAX_EXPANDED_NODES`] or [`MAX_EXPANDED_SCALAR_BYTES`];
/// the error names the limit. Memory and time stay linear in the text. A syntax error ends the
/// count quietly: the deserializer reports it (and sees no more than was counted here).
pub(super) fn check(text: &str) -> Result<(), String> {
    let mut events = Events::new(text.as_bytes());
    // Open collections, innermost last: their anchor and what they hold so far.
    let mut open: Vec<(Option<Vec<u8>>, Size)> = Vec::new();
    let mut anchors: HashMap<Vec<u8>, Size> = HashMap::new();
    let mut total = Size::default();
    while let Some(event) = events.next() {
        let (anchor, node) = match event {
            Event::Start(anchor) => {
                open.push((anchor, Size { nodes: 1, bytes: 0 }));
                continue;
            }
            Event::End => match open.pop() {
                Some(closed) => closed,
                None => continue,
            },
            Event::Scalar { anchor, bytes } => (anchor, Size { nodes: 1, bytes }),
            // An unknown anchor is the deserializer's error to report.
            Event::Alias(name) => (
                None,
                anchors
                    .get(&name)
                    .copied()
                    .unwrap_or(Size { nodes: 1, bytes: 0 }),
            ),
            Event::Other => continue,
        };
        if let Some(name) = anchor {
            anchors.insert(name, node);
        }
        let parent = open.last_mut().map_or(&mut total, |(_, size)| size);
        parent.add(node);
        if let Some(reason) = parent.over_limit() {
            return Err(reason);
        }
    }
    Ok(())
}

/// One parser event, reduced to what the count needs.
enum Event {
    /// A sequence or mapping starts, with its anchor.
    Start(Option<Vec<u8>>),
    /// A sequence or mapping ends.
    End,
    Scalar {
        anchor: Option<Vec<u8>>,
        bytes: u64,
    },
    Alias(Vec<u8>),
    /// Stream and document boundaries.
    Other,
}

/// libyaml's event parser over a string, safe to use: [`Events::next`] yields events until the
/// end of the stream or the first syntax error.
struct Events<'a> {
    /// Boxed: the parser points to itself (its read handler's data), so it must not move.
    parser: Box<MaybeUninit<sys::yaml_parser_t>>,
    /// The input the parser reads from, kept borrowed as long as the parser lives.
    _input: &'a [u8],
    /// Whether the parser was set up (only an allocation failure prevents it).
    initialized: bool,
    /// The stream ended or a syntax error was met: no more events.
    done: bool,
}

impl<'a> Events<'a> {
    fn new(input: &'a [u8]) -> Events<'a> {
        let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        let p = parser.as_mut_ptr();
        // SAFETY: `p` points to writable memory for a parser; initialize zeroes and sets it up
        // (it fails only on an allocation failure, then `initialized` keeps `next` and `drop`
        // from touching it). The input outlives the parser (`'a`) and the boxed parser never
        // moves.
        let initialized = unsafe {
            if sys::yaml_parser_initialize(p).fail {
                false
            } else {
                sys::yaml_parser_set_encoding(p, sys::YAML_UTF8_ENCODING);
                sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
                true
            }
        };
        Events {
            parser,
            _input: input,
            initialized,
            done: !initialized,
        }
    }

    fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let mut raw = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized (`done` is false); a successful parse fills the
        // event, whose anchor pointers are NUL-terminated strings owned by the event, read
        // before `yaml_event_delete` frees them. A failed parse leaves nothing to free.
        unsafe {
            if sys::yaml_parser_parse(self.parser.as_mut_ptr(), raw.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let e = raw.assume_init_mut();
            let event = match e.type_ {
                sys::YAML_STREAM_END_EVENT => {
                    self.done = true;
                    Event::Other
                }
                sys::YAML_SEQUENCE_START_EVENT => Event::Start(owned(e.data.sequence_start.anchor)),
                sys::YAML_MAPPING_START_EVENT => Event::Start(owned(e.data.mapping_start.anchor)),
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::End,
                sys::YAML_SCALAR_EVENT => Event::Scalar {
                    anchor: owned(e.data.scalar.anchor),
                    bytes: e.data.scalar.length,
                },
                sys::YAML_ALIAS_EVENT => {
                    Event::Alias(owned(e.data.alias.anchor).unwrap_or_default())
                }
                _ => Event::Other,
            };
            sys::yaml_event_delete(e);
            Some(event)
        }
    }
}

/// A copy of a NUL-terminated libyaml string; `None` for a null pointer.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string.
unsafe fn owned(s: *const u8) -> Option<Vec<u8>> {
    // SAFETY: guaranteed by the caller.
    (!s.is_null()).then(|| {
        unsafe { std::ffi::CStr::from_ptr(s.cast()) }
            .to_bytes()
            .to_vec()
    })
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        if self.initialized {
            // SAFETY: the parser was initialized and is deleted once; deleting it after a
            // syntax error or the end of the stream is what libyaml expects.
            unsafe { sys::yaml_parser_delete(self.parser.as_mut_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `check` counted, through a budget large enough to never refuse.
    fn size(text: &str) -> (u64, u64) {
        let mut events = Events::new(text.as_bytes());
        let mut counted = (0, 0);
        while let Some(e) = events.next() {
            match e {
                Event::Start(_) => counted.0 += 1,
                Event::Scalar { bytes, .. } => {
                    counted.0 += 1;
                    counted.1 += bytes;
                }
                _ => {}
            }
        }
        counted
    }

    #[test]
    fn plain_configs_pass_and_every_node_is_seen() {
        let text = "scheduler:\n  tasks:\n    - task_class: probe\n      params: {mode: ok}\n";
        assert_eq!(check(text), Ok(()));
        // mapping, 'scheduler', mapping, 'tasks', sequence, mapping, 3 scalars, mapping, 2.
        assert_eq!(size(text).0, 12);
    }

    #[test]
    fn aliases_count_as_copies_of_their_anchor() {
        let list = (0..1000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // 4 nodes + a list of 1001 nodes written once and referenced 997 times: 999 002 nodes.
        let refs = "*a, ".repeat(996);
        let under = format!("a: &a [{list}]\nb: [{refs}*a]\n");
        assert_eq!(check(&under), Ok(()));
        let over = format!("a: &a [{list}]\nb: [{refs}*a, *a]\n");
        let e = check(&over).unwrap_err();
        assert!(e.contains("more than 1000000 YAML nodes"), "{e}");
    }

    #[test]
    fn nested_anchors_multiply_without_being_expanded() {
        // The "billion laughs": 10 levels of 10 aliases each, 10^10 nodes from a few hundred
        // bytes; refused from the counts alone.
        let mut text = "l0: &l0 [lol]\n".to_string();
        for i in 1..=10 {
            let refs = vec![format!("*l{}", i - 1); 10].join(", ");
            text.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        let e = check(&text).unwrap_err();
        assert!(e.contains("more than 1000000 YAML nodes"), "{e}");
    }

    #[test]
    fn a_big_scalar_repeated_is_refused_by_its_bytes() {
        let text = format!(
            "a: &a {}\nb: [{}*a]\n",
            "x".repeat(1 << 20),
            "*a, ".repeat(16)
        );
        let e = check(&text).unwrap_err();
        assert!(e.contains("more than 16 MiB of YAML scalar text"), "{e}");
        assert!(size(&text).1 > 1 << 20);
    }

    #[test]
    fn syntax_errors_are_left_to_the_deserializer() {
        assert_eq!(check("scheduler: [oops"), Ok(()));
        let e = crate::config::parse_yaml::<serde_json::Value>("scheduler: [oops").unwrap_err();
        assert!(!e.reason.contains("refused"), "{e}");
    }

    #[test]
    fn an_alias_bomb_before_a_syntax_error_is_still_refused() {
        let list = vec!["1"; 10_000].join(", ");
        let text = format!("a: &a [{list}]\nb: [{}*a]\nc: [oops", "*a, ".repeat(200));
        let e = crate::config::parse_yaml::<serde_json::Value>(&text).unwrap_err();
        assert!(e.reason.contains("more than 1000000 YAML nodes"), "{e}");
        assert_eq!(e.field, "(file)");
    }
}
