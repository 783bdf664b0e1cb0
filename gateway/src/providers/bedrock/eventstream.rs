//! AWS's `application/vnd.amazon.eventstream` framing, decoded as bytes arrive:
//! each message is `total length (u32) | headers length (u32) | prelude CRC |
//! headers | payload | message CRC`, big-endian, CRC-32 (IEEE) over the prelude
//! and over everything before the last four bytes. A bad CRC or an impossible
//! length ends the stream with an error rather than a guess.

/// One decoded message: its string headers and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// A string header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The largest message accepted (AWS documents 16 MiB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Collects bytes across pushes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder {
    /// Every message completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 12 {
                break;
            }
            let total = be32(&self.buf[0..4]) as usize;
            let headers_len = be32(&self.buf[4..8]) as usize;
            if crc32fast::hash(&self.buf[0..8]) != be32(&self.buf[8..12]) {
                return Err("an event-stream prelude failed its CRC check".into());
            }
            if !(16..=MAX_MESSAGE).contains(&total) || headers_len > total - 16 {
                return Err(format!(
                    "an event-stream message has an impossible length ({total} bytes)"
                ));
            }
            if self.buf.len() < total {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..total).collect();
            if crc32fast::hash(&frame[..total - 4]) != be32(&frame[total - 4..]) {
                return Err("an event-stream message failed its CRC check".into());
            }
            let headers = parse_headers(&frame[12..12 + headers_len])?;
            out.push(Message {
                headers,
                payload: frame[12 + headers_len..total - 4].to_vec(),
            });
        }
        Ok(out)
    }
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let short = || "an event-stream header is cut short".to_owned();
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = *b.first().ok_or_else(short)? as usize;
        let name = b.get(1..1 + name_len).ok_or_else(short)?;
        let name = String::from_utf8_lossy(name).into_owned();
        b = &b[1 + name_len..];
        let kind = *b.first().ok_or_else(short)?;
        b = &b[1..];
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            other => return Err(format!("unknown event-stream header type {other}")),
        };
        match fixed {
            Some(n) => b = b.get(n..).ok_or_else(short)?,
            None => {
                let len = u16::from_be_bytes([
                    *b.first().ok_or_else(short)?,
                    *b.get(1).ok_or_else(short)?,
                ]) as usize;
                let value = b.get(2..2 + len).ok_or_else(short)?;
                if kind == 7 {
                    out.push((name, String::from_utf8_lossy(value).into_owned()));
                }
                b = &b[2 + len..];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes a message with string headers, following the format as documented.
    pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        for (name, value) in headers {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(7);
            h.extend_from_slice(&(value.len() as u16).to_be_bytes());
            h.extend_from_slice(value.as_bytes());
        }
        let total = 12 + h.len() + payload.len() + 4;
        let mut m = Vec::with_capacity(total);
        m.extend_from_slice(&(total as u32).to_be_bytes());
        m.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let prelude_crc = crc32fast::hash(&m);
        m.extend_from_slice(&prelude_crc.to_be_bytes());
        m.extend_from_slice(&h);
        m.extend_from_slice(payload);
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m
    }

    #[test]
    fn messages_are_decoded_wherever_the_bytes_are_split() {
        let a = encode(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            br#"{"role":"assistant"}"#,
        );
        let b = encode(
            &[(":event-type", "messageStop")],
            br#"{"stopReason":"end_turn"}"#,
        );
        let all = [a.clone(), b].concat();
        for size in [1, 3, 7, all.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in all.chunks(size) {
                got.extend(d.push(piece).expect("decodes"));
            }
            assert_eq!(got.len(), 2, "split by {size}");
            assert_eq!(got[0].header(":event-type"), Some("messageStart"));
            assert_eq!(got[0].payload, br#"{"role":"assistant"}"#);
            assert_eq!(got[1].header(":event-type"), Some("messageStop"));
        }
        // A flipped byte fails the check instead of producing garbage.
        let mut bad = a;
        let n = bad.len();
        bad[n - 6] ^= 1;
        assert!(Decoder::default().push(&bad).is_err());
        let mut bad_prelude = encode(&[], b"{}");
        bad_prelude[9] ^= 1;
        assert!(Decoder::default().push(&bad_prelude).is_err());
    }
}
