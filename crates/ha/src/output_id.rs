//! The deterministic ID of an output block (DESIGN.md decision 2).

use std::fmt;
use std::str::FromStr;

/// The ID of an output block: the message ID of the input block that caused it (`input`) and
/// its position among that input's output blocks (`seq`). Ordered by input, then position, so
/// IDs are monotonic along a single-input path. Text form: `INPUT.SEQ`, e.g. `1042.0`.
///
/// This is the canonical definition; the Kafka connectors carry it in a record header and in
/// binary payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputId {
    pub input: u64,
    pub seq: u32,
}

impl OutputId {
    pub const fn new(input: u64, seq: u32) -> OutputId {
        OutputId { input, seq }
    }

    /// The smallest ID greater than this one (the next position of the same input, or the
    /// first position of the next input after the last position). Saturates at the maximum.
    pub const fn next(self) -> OutputId {
        if self.seq < u32::MAX {
            OutputId::new(self.input, self.seq + 1)
        } else if self.input < u64::MAX {
            OutputId::new(self.input + 1, 0)
        } else {
            self
        }
    }
}

impl fmt::Display for OutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.input, self.seq)
    }
}

/// Text that is not an output ID, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not an output ID (INPUT.SEQ, e.g. 1042.0): {reason}")]
pub struct BadOutputId {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for OutputId {
    type Err = BadOutputId;

    /// Parses `INPUT.SEQ`: two unsigned decimal numbers (INPUT up to 2^64-1, SEQ up to
    /// 2^32-1) separated by one dot. Surrounding whitespace is allowed; signs, inner spaces
    /// and other separators are not.
    fn from_str(s: &str) -> Result<OutputId, BadOutputId> {
        let bad = |reason| BadOutputId {
            text: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("it is empty"));
        }
        let (i, q) = t
            .split_once('.')
            .ok_or_else(|| bad("there is no '.' between INPUT and SEQ"))?;
        if q.contains('.') {
            return Err(bad("there is more than one '.'"));
        }
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(i) {
            return Err(bad("INPUT must be an unsigned decimal number"));
        }
        if !digits(q) {
            return Err(bad("SEQ must be an unsigned decimal number"));
        }
        let input = i
            .parse()
            .map_err(|_| bad("INPUT is larger than 18446744073709551615"))?;
        let seq = q
            .parse()
            .map_err(|_| bad("SEQ is larger than 4294967295"))?;
        Ok(OutputId { input, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        for id in [
            OutputId::new(0, 0),
            OutputId::new(1042, 3),
            OutputId::new(u64::MAX, u32::MAX),
        ] {
            assert_eq!(id.to_string().parse::<OutputId>(), Ok(id));
        }
        assert_eq!(OutputId::new(1042, 0).to_string(), "1042.0");
        assert_eq!(" 7.2\n".parse::<OutputId>(), Ok(OutputId::new(7, 2)));
        assert_eq!("007.02".parse::<OutputId>(), Ok(OutputId::new(7, 2)));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let reason = |s: &str| s.parse::<OutputId>().unwrap_err().reason;
        assert_eq!(reason(""), "it is empty");
        assert_eq!(reason("   "), "it is empty");
        assert_eq!(reason("1042"), "there is no '.' between INPUT and SEQ");
        assert_eq!(reason("1.2.3"), "there is more than one '.'");
        assert_eq!(reason(".1"), "INPUT must be an unsigned decimal number");
        assert_eq!(reason("-1.0"), "INPUT must be an unsigned decimal number");
        assert_eq!(reason("+1.0"), "INPUT must be an unsigned decimal number");
        assert_eq!(reason("1 .0"), "INPUT must be an unsigned decimal number");
        assert_eq!(reason("1."), "SEQ must be an unsigned decimal number");
        assert_eq!(reason("1042.-1"), "SEQ must be an unsigned decimal number");
        assert_eq!(reason("1.x"), "SEQ must be an unsigned decimal number");
        assert_eq!(
            reason("18446744073709551616.0"),
            "INPUT is larger than 18446744073709551615"
        );
        assert_eq!(reason("1.4294967296"), "SEQ is larger than 4294967295");
        let e = "abc".parse::<OutputId>().unwrap_err();
        assert_eq!(e.text, "abc");
        assert!(e
            .to_string()
            .starts_with("'abc' is not an output ID (INPUT.SEQ, e.g. 1042.0): "));
    }

    #[test]
    fn order_is_input_then_seq() {
        assert!(OutputId::new(9, 5) < OutputId::new(10, 0));
        assert!(OutputId::new(10, 0) < OutputId::new(10, 1));
        assert_eq!(
            OutputId::new(3, 3).max(OutputId::new(3, 1)),
            OutputId::new(3, 3)
        );
    }

    #[test]
    fn next_is_the_smallest_greater_id() {
        assert_eq!(OutputId::new(4, 1).next(), OutputId::new(4, 2));
        assert_eq!(OutputId::new(4, u32::MAX).next(), OutputId::new(5, 0));
        let max = OutputId::new(u64::MAX, u32::MAX);
        assert_eq!(max.next(), max);
    }
}
