//! Server-sent events as they arrive: bytes split anywhere in, each event's
//! `data:` payload out. Shared by the stream translators.

/// Collects lines across pushes.
#[derive(Debug, Default)]
pub struct SseData {
    line: Vec<u8>,
}

impl SseData {
    /// Calls `on_data` with every complete `data:` line's payload (without the
    /// prefix, one optional space, or a trailing `\r`), stopping at its first
    /// error.
    pub fn push<E>(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if let Some(data) = line.strip_prefix(b"data:") {
                on_data(data.strip_prefix(b" ").unwrap_or(data))?;
            }
        }
        Ok(())
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
}
