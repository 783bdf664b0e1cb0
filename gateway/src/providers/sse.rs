//! Server-sent events as they arrive: bytes split anywhere in, each event's
//! `data:` payload out. Shared by the stream translators.

/// A line's `data:` payload (without the prefix, one optional space, or a
/// trailing `\r`), if it is a data line.
pub fn data_of(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    Some(data.strip_prefix(b" ").unwrap_or(data))
}

/// Collects lines across pushes.
#[derive(Debug)]
pub struct SseData {
    line: Vec<u8>,
    /// Lines longer than this are skipped whole.
    max_line: usize,
    /// The line being collected went past `max_line`.
    overlong: bool,
}

impl Default for SseData {
    fn default() -> Self {
        Self::with_max_line(usize::MAX)
    }
}

impl SseData {
    /// Skips lines longer than `max_line` bytes (their start is not kept).
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            line: Vec::new(),
            max_line,
            overlong: false,
        }
    }

    /// Calls `on_data` with every complete `data:` line's payload
    /// ([`data_of`]), stopping at its first error.
    pub fn push<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_data: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(n) = memchr::memchr(b'\n', bytes) {
            let (head, rest) = bytes.split_at(n);
            bytes = &rest[1..];
            if self.line.is_empty() && !self.overlong {
                // The whole line is in this push: read it where it lies.
                if head.len() <= self.max_line
                    && let Some(data) = data_of(head)
                {
                    on_data(data)?;
                }
                continue;
            }
            self.extend(head);
            let line = std::mem::take(&mut self.line);
            let overlong = std::mem::take(&mut self.overlong);
            if !overlong && let Some(data) = data_of(&line) {
                on_data(data)?;
            }
        }
        self.extend(bytes);
        Ok(())
    }

    /// The stream ended: a last line without its newline, read as a line.
    pub fn finish<E>(&mut self, on_data: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.line.is_empty() || self.overlong {
            return Ok(());
        }
        self.push(b"\n", on_data)
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line {
            self.line.clear();
            self.overlong = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lines_are_found_across_pushes() {
        let mut sse = SseData::default();
        let mut seen: Vec<String> = Vec::new();
        for piece in [
            "event: a\nda",
            "ta: {\"x\":1}\r",
            "\n\n: comment\ndata:[DONE]\n",
        ] {
            sse.push::<()>(piece.as_bytes(), |d| {
                seen.push(String::from_utf8_lossy(d).into_owned());
                Ok(())
            })
            .expect("no error");
        }
        assert_eq!(seen, ["{\"x\":1}", "[DONE]"]);
        let err = sse.push(b"data: 1\ndata: 2\n", |d| {
            if d == b"1" { Err(1) } else { Ok(()) }
        });
        assert_eq!(err, Err(1));
    }

    #[test]
    fn overlong_lines_are_skipped_whole_and_a_last_line_is_read_at_the_end() {
        let mut sse = SseData::with_max_line(12);
        let mut seen: Vec<String> = Vec::new();
        let mut take = |d: &[u8]| {
            seen.push(String::from_utf8_lossy(d).into_owned());
            Ok::<(), ()>(())
        };
        for piece in [
            "data: 1\ndata: a-very-long",
            "-line\ndata: 2\ndata: long-",
            "-too\ndata: 3",
        ] {
            sse.push(piece.as_bytes(), &mut take).expect("no error");
        }
        sse.finish(&mut take).expect("no error");
        assert_eq!(seen, ["1", "2", "3"]);
    }
}
