//! The CNJ unified process number, `NNNNNNN-DD.AAAA.J.TR.OOOO` (Resolution CNJ 65/2008).
//!
//! Fields: `NNNNNNN` sequential number within the originating unit and year, `DD` check
//! digits, `AAAA` year the case was filed, `J` justice segment, `TR` court, `OOOO`
//! originating unit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The layout of a formatted process number, as shown to users in error messages.
pub const LAYOUT: &str = "NNNNNNN-DD.AAAA.J.TR.OOOO";

/// Number of digits in a process number.
pub const DIGITS: usize = 20;

// Byte ranges of each field inside the formatted form.
const SEQUENTIAL: std::ops::Range<usize> = 0..7;
const CHECK: std::ops::Range<usize> = 8..10;
const YEAR: std::ops::Range<usize> = 11..15;
const SEGMENT: std::ops::Range<usize> = 16..17;
const COURT: std::ops::Range<usize> = 18..20;
const ORIGIN: std::ops::Range<usize> = 21..25;

/// Why a string is not a valid CNJ process number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CnjError {
    /// Nothing but whitespace was given.
    #[error("the process number is empty; expected {LAYOUT} or 20 digits")]
    Empty,
    /// The input does not hold exactly 20 digits.
    #[error("the process number has {found} digits, but 20 are expected ({LAYOUT})")]
    WrongLength {
        /// How many ASCII digits the input holds.
        found: usize,
    },
    /// A character other than an ASCII digit, `-` or `.` was found.
    #[error(
        "the process number contains the invalid character {character:?} at position \
         {position}; only digits, '-' and '.' are allowed"
    )]
    InvalidCharacter {
        /// The first offending character.
        character: char,
        /// Its 1-based character position in the input as given (leading whitespace counts).
        position: usize,
    },
    /// The input has 20 digits but its separators are missing or misplaced.
    #[error(
        "the process number is malformed: expected the layout {LAYOUT} \
         or 20 digits without separators"
    )]
    MalformedLayout,
    /// The check digits `DD` do not match the rest of the number.
    #[error(
        "the process number has check digits {given}, but the rest of the number requires \
         {expected} ({corrected})"
    )]
    WrongCheckDigits {
        /// The check digits found in the input.
        given: String,
        /// The check digits the rest of the number requires.
        expected: String,
        /// The input with the expected check digits, formatted.
        corrected: String,
    },
    /// A field passed to [`ProcessNumber::check_digits`] or [`ProcessNumber::from_parts`]
    /// is not made of the right number of digits.
    #[error("the {field} of a process number must be exactly {len} digits, got {value:?}")]
    InvalidField {
        /// Which field: `sequential`, `year`, `segment`, `court` or `origin`.
        field: &'static str,
        /// How many digits the field must have.
        len: usize,
        /// The value that was given.
        value: String,
    },
}

/// A CNJ unified process number that is known to be valid: layout and check digits.
///
/// Holds the formatted form `NNNNNNN-DD.AAAA.J.TR.OOOO`, so ordering and equality follow
/// it, and the same case compares equal whichever way it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessNumber(String);

impl ProcessNumber {
    /// Parses a process number written as `NNNNNNN-DD.AAAA.J.TR.OOOO` or as exactly 20
    /// digits, ignoring surrounding whitespace, and verifies its check digits.
    pub fn parse(input: &str) -> Result<Self, CnjError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(CnjError::Empty);
        }
        let leading_chars = input[..input.len() - input.trim_start().len()]
            .chars()
            .count();
        if let Some((index, character)) = trimmed
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_digit() || c == '-' || c == '.'))
        {
            return Err(CnjError::InvalidCharacter {
                character,
                position: leading_chars + index + 1,
            });
        }
        // Only ASCII remains, so bytes and characters coincide from here on.
        let found = trimmed.bytes().filter(u8::is_ascii_digit).count();
        if found != DIGITS {
            return Err(CnjError::WrongLength { found });
        }
        if trimmed.len() != DIGITS && !matches_layout(trimmed) {
            return Err(CnjError::MalformedLayout);
        }
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        let number = Self(format_digits(&digits));
        let expected = compute_check_digits(&number.rest_in_check_order());
        let given = number.dd();
        if given != expected {
            let corrected = Self::assemble(
                number.sequential(),
                &expected,
                number.year(),
                number.segment(),
                number.court(),
                number.origin(),
            );
            return Err(CnjError::WrongCheckDigits {
                given: given.to_owned(),
                expected,
                corrected,
            });
        }
        Ok(number)
    }

    /// Computes the check digits `DD` for the other fields (ISO 7064 MOD 97-10), always two
    /// digits from `02` to `98`.
    ///
    /// Each field must be exactly its width in ASCII digits: sequential 7, year 4,
    /// segment 1, court 2, origin 4.
    pub fn check_digits(
        sequential: &str,
        year: &str,
        segment: &str,
        court: &str,
        origin: &str,
    ) -> Result<String, CnjError> {
        let fields = [
            ("sequential", sequential, SEQUENTIAL.len()),
            ("year", year, YEAR.len()),
            ("segment", segment, SEGMENT.len()),
            ("court", court, COURT.len()),
            ("origin", origin, ORIGIN.len()),
        ];
        for (field, value, len) in fields {
            if value.len() != len || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CnjError::InvalidField {
                    field,
                    len,
                    value: value.to_owned(),
                });
            }
        }
        Ok(compute_check_digits(&format!(
            "{sequential}{year}{segment}{court}{origin}"
        )))
    }

    /// Builds the valid process number with these fields, computing its check digits.
    ///
    /// Fields are validated as in [`ProcessNumber::check_digits`].
    pub fn from_parts(
        sequential: &str,
        year: &str,
        segment: &str,
        court: &str,
        origin: &str,
    ) -> Result<Self, CnjError> {
        let dd = Self::check_digits(sequential, year, segment, court, origin)?;
        Ok(Self(Self::assemble(
            sequential, &dd, year, segment, court, origin,
        )))
    }

    /// The formatted form, `NNNNNNN-DD.AAAA.J.TR.OOOO`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 20 digits without separators, in the order they are written.
    pub fn digits(&self) -> String {
        self.0.chars().filter(char::is_ascii_digit).collect()
    }

    /// `NNNNNNN`: the sequential number within the originating unit and year.
    pub fn sequential(&self) -> &str {
        &self.0[SEQUENTIAL]
    }

    /// `DD`: the check digits.
    pub fn dd(&self) -> &str {
        &self.0[CHECK]
    }

    /// `AAAA`: the year the case was filed.
    pub fn year(&self) -> &str {
        &self.0[YEAR]
    }

    /// `J`: the justice segment (e.g. `4` federal, `5` labour, `8` state).
    pub fn segment(&self) -> &str {
        &self.0[SEGMENT]
    }

    /// `TR`: the court within the segment.
    pub fn court(&self) -> &str {
        &self.0[COURT]
    }

    /// `OOOO`: the originating unit within the court.
    pub fn origin(&self) -> &str {
        &self.0[ORIGIN]
    }

    /// The digits the check is computed over, in the order ISO 7064 needs them:
    /// `NNNNNNNAAAAJTROOOO`.
    fn rest_in_check_order(&self) -> String {
        [
            self.sequential(),
            self.year(),
            self.segment(),
            self.court(),
            self.origin(),
        ]
        .concat()
    }

    fn assemble(
        sequential: &str,
        dd: &str,
        year: &str,
        segment: &str,
        court: &str,
        origin: &str,
    ) -> String {
        format!("{sequential}-{dd}.{year}.{segment}.{court}.{origin}")
    }
}

/// Whether `s` has exactly the formatted layout, digit for digit and separator for separator.
fn matches_layout(s: &str) -> bool {
    s.len() == LAYOUT.len()
        && s.bytes().zip(LAYOUT.bytes()).all(|(c, l)| match l {
            b'-' | b'.' => c == l,
            _ => c.is_ascii_digit(),
        })
}

/// Formats 20 ASCII digits as `NNNNNNN-DD.AAAA.J.TR.OOOO`.
fn format_digits(digits: &str) -> String {
    debug_assert_eq!(digits.len(), DIGITS);
    ProcessNumber::assemble(
        &digits[0..7],
        &digits[7..9],
        &digits[9..13],
        &digits[13..14],
        &digits[14..16],
        &digits[16..20],
    )
}

/// ISO 7064 MOD 97-10 over ASCII digits: `98 - (rest * 100 mod 97)`.
///
/// The number has 18 digits plus the two appended zeros, beyond `u64`, so the remainder is
/// carried digit by digit. Comparing `DD` against this value, rather than only checking that
/// the whole is congruent to 1, also rejects the aliases `00`, `01` and `99` that would
/// satisfy the congruence for some numbers.
fn compute_check_digits(rest: &str) -> String {
    let remainder = rest
        .bytes()
        .chain(*b"00")
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    format!("{:02}", 98 - remainder)
}

impl fmt::Display for ProcessNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProcessNumber {
    type Err = CnjError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for ProcessNumber {
    type Error = CnjError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for ProcessNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ProcessNumber> for String {
    fn from(number: ProcessNumber) -> Self {
        number.0
    }
}

impl Serialize for ProcessNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProcessNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `String` rather than `&str`: borrowed strings fail for escaped JSON and owned input.
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: [&str; 2] = ["1500345-31.2017.8.26.0248", "0000832-35.2018.4.01.3202"];

    fn assert_wrong_check_digits(input: &str, given: &str, expected: &str) {
        match ProcessNumber::parse(input) {
            Err(CnjError::WrongCheckDigits {
                given: g,
                expected: e,
                ..
            }) => {
                assert_eq!(g, given, "{input}");
                assert_eq!(e, expected, "{input}");
            }
            other => panic!("{input}: expected a check-digit error, got {other:?}"),
        }
    }

    /// SplitMix64: deterministic, so a failure can be reproduced.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn digits(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| char::from(b'0' + (self.next() % 10) as u8))
                .collect()
        }
    }

    #[test]
    fn parses_known_valid_numbers_formatted() {
        for input in VALID {
            let number = ProcessNumber::parse(input).unwrap();
            assert_eq!(number.as_str(), input);
            assert_eq!(number.to_string(), input);
        }
    }

    #[test]
    fn parses_known_valid_numbers_as_digits() {
        let number = ProcessNumber::parse("15003453120178260248").unwrap();
        assert_eq!(number.as_str(), "1500345-31.2017.8.26.0248");
        let number = ProcessNumber::parse("00008323520184013202").unwrap();
        assert_eq!(number.as_str(), "0000832-35.2018.4.01.3202");
    }

    #[test]
    fn ignores_surrounding_whitespace() {
        for input in [
            "  1500345-31.2017.8.26.0248  ",
            "\t15003453120178260248\n",
            " \r\n0000832-35.2018.4.01.3202 ",
        ] {
            let number = ProcessNumber::parse(input).unwrap();
            assert!(VALID.contains(&number.as_str()), "{input:?}");
        }
    }

    #[test]
    fn formatted_and_digit_forms_are_equal() {
        assert_eq!(
            ProcessNumber::parse("1500345-31.2017.8.26.0248").unwrap(),
            ProcessNumber::parse(" 15003453120178260248").unwrap()
        );
    }

    #[test]
    fn accessors_return_each_field() {
        let number = ProcessNumber::parse("1500345-31.2017.8.26.0248").unwrap();
        assert_eq!(number.sequential(), "1500345");
        assert_eq!(number.dd(), "31");
        assert_eq!(number.year(), "2017");
        assert_eq!(number.segment(), "8");
        assert_eq!(number.court(), "26");
        assert_eq!(number.origin(), "0248");
        assert_eq!(number.digits(), "15003453120178260248");

        let number = ProcessNumber::parse("00008323520184013202").unwrap();
        assert_eq!(number.sequential(), "0000832");
        assert_eq!(number.dd(), "35");
        assert_eq!(number.year(), "2018");
        assert_eq!(number.segment(), "4");
        assert_eq!(number.court(), "01");
        assert_eq!(number.origin(), "3202");
        assert_eq!(number.digits(), "00008323520184013202");
    }

    #[test]
    fn whole_number_is_congruent_to_one_mod_97() {
        for input in VALID {
            let number = ProcessNumber::parse(input).unwrap();
            let check_order = format!("{}{}", number.rest_in_check_order(), number.dd());
            let value: u128 = check_order.parse().unwrap();
            assert_eq!(value % 97, 1, "{input}");
        }
    }

    #[test]
    fn rejects_wrong_check_digits() {
        assert_wrong_check_digits("1500345-32.2017.8.26.0248", "32", "31");
        assert_wrong_check_digits("0000832-36.2018.4.01.3202", "36", "35");
        assert_wrong_check_digits("15003453220178260248", "32", "31");
        assert_wrong_check_digits(" 00008323620184013202 ", "36", "35");
    }

    #[test]
    fn check_digit_error_message_names_given_and_expected() {
        let message = ProcessNumber::parse("1500345-32.2017.8.26.0248")
            .unwrap_err()
            .to_string();
        assert!(message.contains("32"), "{message}");
        assert!(message.contains("31"), "{message}");
        assert!(message.contains("1500345-31.2017.8.26.0248"), "{message}");
    }

    #[test]
    fn rejects_wrong_lengths() {
        for (input, found) in [
            ("1500345312017826024", 19),
            ("150034531201782602481", 21),
            ("1500345-31.2017.8.26.024", 19),
            ("1500345-31.2017.8.26.02481", 21),
            ("1", 1),
            ("-.", 0),
        ] {
            let err = ProcessNumber::parse(input).unwrap_err();
            assert_eq!(err, CnjError::WrongLength { found }, "{input}");
            let message = err.to_string();
            assert!(message.contains(&found.to_string()), "{message}");
            assert!(message.contains("20"), "{message}");
        }
    }

    #[test]
    fn rejects_invalid_characters_naming_the_first_one() {
        for (input, character, position) in [
            ("1500345-31.2017.8.26.024A", 'A', 25),
            ("A500345-31.2017.8.26.0248", 'A', 1),
            ("1500345/31.2017.8.26.0248", '/', 8),
            ("1500345 31.2017.8.26.0248", ' ', 8),
            ("  150034531x0178260248", 'x', 12),
            ("1500345-31.2017.8.26.0248\u{0}", '\u{0}', 26),
            ("１500345-31.2017.8.26.0248", '１', 1),
            ("1500345—31.2017.8.26.0248", '—', 8),
        ] {
            let err = ProcessNumber::parse(input).unwrap_err();
            assert_eq!(
                err,
                CnjError::InvalidCharacter {
                    character,
                    position
                },
                "{input:?}"
            );
            let message = err.to_string();
            assert!(message.contains(&format!("{character:?}")), "{message}");
            assert!(message.contains(&position.to_string()), "{message}");
        }
    }

    #[test]
    fn rejects_misplaced_separators() {
        for input in [
            "150034-531.2017.8.26.0248",
            "1500345.31-2017.8.26.0248",
            "1500345-31.2017.826.0.248",
            "1500345-31.2017.8.26.0248.",
            "1500345-312017826.0248",
            "1500345--31.2017.8.26.0248",
            "-15003453120178260248",
            "1500345-31201782602.48",
        ] {
            let err = ProcessNumber::parse(input).unwrap_err();
            assert_eq!(err, CnjError::MalformedLayout, "{input}");
            assert!(err.to_string().contains(LAYOUT));
        }
    }

    #[test]
    fn rejects_empty_input() {
        for input in ["", " ", "\t\n "] {
            assert_eq!(
                ProcessNumber::parse(input),
                Err(CnjError::Empty),
                "{input:?}"
            );
        }
        assert!(CnjError::Empty.to_string().contains("empty"));
    }

    #[test]
    fn from_str_and_try_from_agree_with_parse() {
        let parsed: ProcessNumber = "15003453120178260248".parse().unwrap();
        assert_eq!(parsed.as_str(), "1500345-31.2017.8.26.0248");
        assert_eq!(
            ProcessNumber::try_from("1500345-31.2017.8.26.0248"),
            Ok(parsed)
        );
        assert!("1500345-32.2017.8.26.0248"
            .parse::<ProcessNumber>()
            .is_err());
    }

    #[test]
    fn serializes_as_the_formatted_string() {
        let number = ProcessNumber::parse("15003453120178260248").unwrap();
        assert_eq!(
            serde_json::to_string(&number).unwrap(),
            "\"1500345-31.2017.8.26.0248\""
        );
    }

    #[test]
    fn deserializes_through_parse() {
        let number: ProcessNumber = serde_json::from_str("\" 15003453120178260248 \"").unwrap();
        assert_eq!(number.as_str(), "1500345-31.2017.8.26.0248");
        let err = serde_json::from_str::<ProcessNumber>("\"1500345-32.2017.8.26.0248\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("check digits"), "{err}");
        assert!(serde_json::from_str::<ProcessNumber>("15003453120178260248").is_err());
    }

    #[test]
    fn check_digits_and_from_parts_reproduce_known_numbers() {
        assert_eq!(
            ProcessNumber::check_digits("1500345", "2017", "8", "26", "0248").unwrap(),
            "31"
        );
        assert_eq!(
            ProcessNumber::check_digits("0000832", "2018", "4", "01", "3202").unwrap(),
            "35"
        );
        let number = ProcessNumber::from_parts("0000832", "2018", "4", "01", "3202").unwrap();
        assert_eq!(number.as_str(), "0000832-35.2018.4.01.3202");
    }

    #[test]
    fn check_digits_rejects_malformed_fields() {
        for (parts, field) in [
            (["150034", "2017", "8", "26", "0248"], "sequential"),
            (["1500345", "17", "8", "26", "0248"], "year"),
            (["1500345", "2017", "", "26", "0248"], "segment"),
            (["1500345", "2017", "8", "2a", "0248"], "court"),
            (["1500345", "2017", "8", "26", "02481"], "origin"),
        ] {
            let [s, y, j, tr, o] = parts;
            match ProcessNumber::check_digits(s, y, j, tr, o) {
                Err(CnjError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{parts:?}: expected InvalidField, got {other:?}"),
            }
            assert!(ProcessNumber::from_parts(s, y, j, tr, o).is_err());
        }
    }

    #[test]
    fn generated_numbers_parse_only_with_their_check_digits() {
        let mut rng = SplitMix(0x00C0_FFEE);
        for _ in 0..2_000 {
            let sequential = rng.digits(7);
            let year = rng.digits(4);
            let segment = rng.digits(1);
            let court = rng.digits(2);
            let origin = rng.digits(4);
            let dd =
                ProcessNumber::check_digits(&sequential, &year, &segment, &court, &origin).unwrap();
            let number =
                ProcessNumber::from_parts(&sequential, &year, &segment, &court, &origin).unwrap();
            assert_eq!(number.dd(), dd);
            assert_eq!(ProcessNumber::parse(number.as_str()), Ok(number.clone()));
            assert_eq!(ProcessNumber::parse(&number.digits()), Ok(number.clone()));

            for other in 0..100u32 {
                let other = format!("{other:02}");
                if other == dd {
                    continue;
                }
                let input = format!("{sequential}-{other}.{year}.{segment}.{court}.{origin}");
                match ProcessNumber::parse(&input) {
                    Err(CnjError::WrongCheckDigits {
                        given,
                        expected,
                        corrected,
                    }) => {
                        assert_eq!(given, other);
                        assert_eq!(expected, dd);
                        assert_eq!(corrected, number.as_str());
                    }
                    result => panic!("{input}: expected a check-digit error, got {result:?}"),
                }
            }
        }
    }

    #[test]
    fn check_digits_are_always_between_02_and_98() {
        let mut rng = SplitMix(7);
        for _ in 0..10_000 {
            let rest = rng.digits(18);
            let dd: u32 = compute_check_digits(&rest).parse().unwrap();
            assert!((2..=98).contains(&dd), "{rest}: {dd}");
        }
    }
}
