//! What a message says: a subject, a plain-text body and an HTML body per purpose, in one place
//! so that every channel that renders text (SMTP today) says the same thing.
//!
//! Codes never go in a subject: subjects show on lock screens and in notification previews.
//! The texts are ASCII, so no reader's client has to guess a charset.

use super::Purpose;

/// One rendered message.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bodies hold the code.
        f.debug_struct("Rendered")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The subject of `purpose`'s message.
pub fn subject(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::VerifyPhone => "Your phone verification code",
        Purpose::Reactivate => "Your code to reactivate your account",
        Purpose::VerifyEmail => "Confirm your email address",
        Purpose::PasswordReset => "Your password reset code",
        Purpose::ChangeEmail => "Confirm your new email address",
        Purpose::PasswordChanged => "Your password was changed",
        Purpose::EmailChanged => "Your email address was changed",
    }
}

/// Whether `purpose`'s message carries a code (the others are notifications).
pub fn carries_code(purpose: Purpose) -> bool {
    match purpose {
        Purpose::VerifyPhone
        | Purpose::Reactivate
        | Purpose::VerifyEmail
        | Purpose::PasswordReset
        | Purpose::ChangeEmail => true,
        Purpose::PasswordChanged | Purpose::EmailChanged => false,
    }
}

/// What a message says around its code.
struct Wording {
    /// The paragraphs before the code (the whole message of a notification).
    lead: &'static [&'static str],
    /// What to do if the reader did not ask for it.
    otherwise: &'static str,
}

fn wording(purpose: Purpose) -> Wording {
    let (lead, otherwise): (&'static [&'static str], _) = match purpose {
        Purpose::VerifyPhone => (
            &["Enter this code to verify your phone number:"],
            "If you did not ask for it, ignore this message.",
        ),
        Purpose::Reactivate => (
            &[
                "Someone asked to reactivate your deactivated account.",
                "Enter this code to reactivate it:",
            ],
            "If it was not you, ignore this message: your account stays deactivated.",
        ),
        Purpose::VerifyEmail => (
            &["Enter this code to confirm that this email address is yours:"],
            "If you did not create an account, ignore this message.",
        ),
        Purpose::PasswordReset => (
            &[
                "Someone asked to reset the password of your account.",
                "Enter this code to choose a new password:",
            ],
            "If it was not you, ignore this message: your password stays as it is.",
        ),
        Purpose::ChangeEmail => (
            &[
                "Someone asked to make this the email address of their account.",
                "Enter this code to confirm the change:",
            ],
            "If it was not you, ignore this message: nothing changes.",
        ),
        Purpose::PasswordChanged => (
            &[
                "The password of your account was just changed, and other sessions may have \
               been signed out.",
            ],
            "If it was not you, reset your password at once with \"Forgot password\" on the \
             sign-in page, then check your account's email address and two-factor settings.",
        ),
        Purpose::EmailChanged => (
            &[
                "The email address of your account was just changed: this address no longer \
               signs in to it.",
            ],
            "If it was not you, contact support at once: someone else may have taken over \
             the account.",
        ),
    };
    Wording { lead, otherwise }
}

const VALIDITY: &str = "The code works once and for a limited time. Never share it.";

/// The message for `purpose`. A code purpose without a code (or a notification with one) still
/// renders, without the code: a notification never shows one.
pub fn render(purpose: Purpose, code: Option<&str>) -> Rendered {
    let Wording { lead, otherwise } = wording(purpose);
    let code = code.filter(|_| carries_code(purpose));

    let mut text = String::new();
    for paragraph in lead {
        text.push_str(&wrap(paragraph));
        text.push('\n');
    }
    if let Some(code) = code {
        text.push_str(&format!("    {code}\n\n{}\n", wrap(VALIDITY)));
    }
    text.push_str(&wrap(otherwise));

    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family: sans-serif\">\n",
        escape(subject(purpose))
    );
    for paragraph in lead {
        html.push_str(&format!("<p>{}</p>\n", escape(paragraph)));
    }
    if let Some(code) = code {
        html.push_str(&format!(
            "<p style=\"font-size: 24px; font-weight: bold; letter-spacing: 4px\">{}</p>\n\
             <p>{}</p>\n",
            escape(code),
            escape(VALIDITY)
        ));
    }
    html.push_str(&format!("<p>{}</p>\n</body>\n</html>\n", escape(otherwise)));

    Rendered {
        subject: subject(purpose).to_string(),
        text,
        html,
    }
}

/// `paragraph` in lines of at most 72 characters (longer words stay whole), each ending in a
/// newline: plain-text mail is read as it is laid out.
fn wrap(paragraph: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in paragraph.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 72 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Text as HTML character data or a quoted attribute value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Purpose; 7] = [
        Purpose::VerifyPhone,
        Purpose::Reactivate,
        Purpose::VerifyEmail,
        Purpose::PasswordReset,
        Purpose::ChangeEmail,
        Purpose::PasswordChanged,
        Purpose::EmailChanged,
    ];

    #[test]
    fn every_purpose_has_its_own_subject() {
        let mut seen = std::collections::BTreeSet::new();
        for p in ALL {
            let s = subject(p);
            assert!(!s.is_empty(), "{p:?}");
            assert!(seen.insert(s), "{p:?} shares its subject");
        }
    }

    #[test]
    fn codes_are_in_both_bodies_and_never_in_the_subject() {
        for p in ALL.into_iter().filter(|p| carries_code(*p)) {
            let r = render(p, Some("493817"));
            assert!(r.text.contains("493817"), "{p:?}");
            assert!(r.html.contains("493817"), "{p:?}");
            assert!(!r.subject.contains("493817"), "{p:?}");
            assert!(!format!("{r:?}").contains("493817"), "{p:?}");
        }
    }

    #[test]
    fn notifications_carry_no_code_and_say_what_to_do() {
        for p in ALL.into_iter().filter(|p| !carries_code(*p)) {
            // Even if a caller passed one by mistake.
            let r = render(p, Some("493817"));
            assert_eq!(r, render(p, None));
            for body in [&r.text, &r.html] {
                assert!(!body.contains("493817"), "{p:?}");
                assert!(!body.contains("code"), "{p:?}: {body}");
                assert!(body.contains("If it was not you"), "{p:?}");
            }
        }
        assert!(render(Purpose::PasswordChanged, None)
            .text
            .contains("password"));
        assert!(render(Purpose::EmailChanged, None)
            .text
            .contains("email address"));
    }

    #[test]
    fn texts_are_short_ascii_lines() {
        for p in ALL {
            let r = render(p, Some("123456"));
            for body in [&r.subject, &r.text] {
                assert!(body.is_ascii(), "{p:?}");
            }
            assert!(r.html.is_ascii(), "{p:?}");
            assert!(r.text.lines().all(|l| l.len() <= 72), "{p:?}: {}", r.text);
            assert!(
                r.html.lines().all(|l| l.len() <= 998),
                "{p:?}: RFC 5322's line limit"
            );
        }
    }

    #[test]
    fn paragraphs_wrap_at_72_columns() {
        let long = "word ".repeat(40);
        let wrapped = wrap(&long);
        assert!(wrapped.lines().all(|l| l.len() <= 72 && !l.ends_with(' ')));
        assert_eq!(wrapped.split_whitespace().count(), 40);
        assert_eq!(wrap("short"), "short\n");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        let r = render(Purpose::PasswordChanged, None);
        assert!(r.html.contains("&quot;Forgot password&quot;"));
    }
}
