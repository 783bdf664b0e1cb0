//! JSON text read without being parsed, for the readers that skim bodies and
//! answers: [`crate::cache`]'s canonical form of a body and
//! [`crate::usage`]'s usage read in place.

/// The end of the string whose opening quote is at `open` in `text`: the
/// index just past its closing quote; `None` when the string is not closed.
pub fn string_end(text: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', text.get(i..)?)?;
        if text[at] == b'"' {
            return Some(at + 1);
        }
        // An escape: the byte after the backslash is not the end.
        i = at + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_end_at_their_first_unescaped_quote() {
        let end = |text: &str| string_end(text.as_bytes(), 0);
        assert_eq!(end(r#""abc" rest"#), Some(5));
        assert_eq!(end(r#""a\"b""#), Some(6));
        assert_eq!(end(r#""a\\"b""#), Some(5));
        assert_eq!(end(r#""""#), Some(2));
        assert_eq!(string_end(br#"x "y" z"#, 2), Some(5));
        for open in [r#""abc"#, r#""ends in an escape\"#, r#""\"#, "\""] {
            assert_eq!(end(open), None, "{open}");
        }
    }
}
