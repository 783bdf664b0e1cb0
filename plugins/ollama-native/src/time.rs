//! RFC 3339 timestamps (Ollama's `created_at`) to Unix seconds. A plugin has no
//! clock, so the `created` of an answer comes from the upstream's own timestamp.

/// Unix seconds of `2024-05-01T12:34:56.789Z` (any offset); 0 when unreadable.
pub fn unix_seconds(ts: &str) -> i64 {
    parse(ts).unwrap_or(0)
}

fn parse(ts: &str) -> Option<i64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (y, mo, d) = (
        num(ts.get(0..4)?)?,
        num(ts.get(5..7)?)?,
        num(ts.get(8..10)?)?,
    );
    let (h, mi, s) = (
        num(ts.get(11..13)?)?,
        num(ts.get(14..16)?)?,
        num(ts.get(17..19)?)?,
    );
    let rest = ts.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest.as_bytes().first() {
        None | Some(b'Z') | Some(b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = num(rest.get(1..3)?)?;
            let om = num(rest.get(4..6)?)?;
            let secs = oh * 3600 + om * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_instants() {
        assert_eq!(super::unix_seconds("1970-01-01T00:00:00Z"), 0);
        assert_eq!(
            super::unix_seconds("2024-05-01T12:34:56.789123Z"),
            1_714_566_896
        );
        assert_eq!(
            super::unix_seconds("2024-05-01T14:34:56+02:00"),
            1_714_566_896
        );
        assert_eq!(super::unix_seconds("garbage"), 0);
    }
}
