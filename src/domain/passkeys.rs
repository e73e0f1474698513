//! Passkeys (WebAuthn): a user's registered passkey as it is kept, the rules for its name, the
//! ceremonies waiting for their answer, the relying party built from the settings, and the
//! decoy options an email without passkeys gets at login.
//!
//! Every step of the WebAuthn verification is webauthn-rs's (the kanidm project's): this module
//! and `user/passkeys.rs` only decide what to hand it and what its verdict changes.
//!
//! ```text
//!   register/start ──▶ CEREMONY(challenge_id, registration state, ttl) in the user's actor
//!        register/finish(challenge_id, credential): the ceremony is taken (used once, right or
//!        wrong) ──▶ verified by webauthn-rs ──▶ PASSKEY(id, name, credential), its credential
//!        id claimed in the global index in the same write (409 if another account has it)
//!
//!   login/start(email) ──▶ CEREMONY(challenge_id, authentication state) in the user's actor,
//!        routed by the directory's table (challenge_id → user); an email with no passkey (or
//!        no account) gets decoy options and a table entry that only ever refuses
//!   login/start() ──▶ CEREMONY(challenge_id, discoverable state) in the directory's table
//!        login/finish(challenge_id, credential): the ceremony is taken ──▶ the credential id
//!        names the user (global index) ──▶ verified ──▶ the stored counter and backup state
//!        follow the authenticator's; a counter that went back is refused (a clone)
//! ```

use serde::{Deserialize, Serialize};
use webauthn_rs::fake::{FakePasskeyDistribution, WebauthnFakeCredentialGenerator};
use webauthn_rs::prelude::{
    Passkey, RequestChallengeResponse, Url, Webauthn, WebauthnBuilder, WebauthnError,
};
use webauthn_rs_proto::AllowCredentials;

use super::credentials::FieldProblem;
use super::error::DomainError;
use super::ids::{ChallengeId, PasskeyId};
use super::time::Timestamp;

/// The most passkeys one account may have: every one is in each of its snapshots and in every
/// login's options.
pub const MAX_PASSKEYS: usize = 16;

/// The most ceremonies one user may have waiting at once; a new one past it ends the oldest.
pub const MAX_PENDING: usize = 8;

/// The longest name of a passkey, in characters.
pub const NAME_MAX_LEN: usize = 64;

/// A passkey's name has no control character (as [`super::credentials::FULL_NAME_PATTERN`]),
/// and something besides white space.
pub const NAME_PATTERN: &str =
    r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$";

/// A passkey of a user: our id and name for it, and webauthn-rs's credential (public key,
/// signature counter, backup state), which only webauthn-rs reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPasskey {
    pub id: PasskeyId,
    pub name: String,
    pub created_at: Timestamp,
    /// The last login or second factor it proved; `None` until then.
    pub last_used_at: Option<Timestamp>,
    /// The authenticator's credential id: the key of the global index.
    pub credential_id: Vec<u8>,
    /// The highest signature counter an accepted assertion carried (0: none yet, or an
    /// authenticator that keeps no counter).
    pub sign_count: u32,
    /// webauthn-rs's `Passkey` as JSON. JSON rather than bincode because webauthn-rs grows its
    /// credential with defaulted fields, which only a self-describing format reads back; and a
    /// string compares whole, where `Passkey`'s own equality looks at the credential id alone
    /// (the actor writes a snapshot only when the state compares different, and a new counter
    /// must be written).
    pub credential: String,
}

impl StoredPasskey {
    pub fn new(passkey: &Passkey, name: String, now: Timestamp) -> Result<Self, DomainError> {
        Ok(Self {
            id: PasskeyId::generate(),
            name,
            created_at: now,
            last_used_at: None,
            credential_id: passkey.cred_id().to_vec(),
            sign_count: 0,
            credential: encode(passkey)?,
        })
    }

    /// The credential, for webauthn-rs. `None` only if the stored JSON is not a credential this
    /// build of webauthn-rs reads: the passkey then cannot be used (its assertions are refused).
    pub fn passkey(&self) -> Option<Passkey> {
        serde_json::from_str(&self.credential).ok()
    }

    /// Replaces the credential after a use (its counter and backup state moved).
    pub fn store(&mut self, passkey: &Passkey) -> Result<(), DomainError> {
        self.credential = encode(passkey)?;
        Ok(())
    }
}

fn encode(passkey: &Passkey) -> Result<String, DomainError> {
    serde_json::to_string(passkey).map_err(|_| DomainError::InvalidPasskey)
}

/// A passkey's name as given: trimmed, 1 to [`NAME_MAX_LEN`] characters, no control character.
pub fn parse_name(raw: &str) -> Result<String, FieldProblem> {
    if raw.chars().any(char::is_control) {
        return Err(FieldProblem::new(
            "value_error",
            "Value error, the name must not contain control characters",
        ));
    }
    if raw.chars().count() > NAME_MAX_LEN {
        return Err(FieldProblem::new(
            "string_too_long",
            format!("String should have at most {NAME_MAX_LEN} characters"),
        ));
    }
    let name = raw.trim();
    if name.is_empty() {
        return Err(FieldProblem::new(
            "string_too_short",
            "String should have at least 1 character",
        ));
    }
    Ok(name.to_string())
}

/// Ceremonies waiting for their answer: at most [`MAX_PENDING`], each until its expiry. An
/// answer takes its ceremony, right or wrong, so each is answered once.
#[derive(Debug)]
pub struct Pending<T> {
    entries: Vec<(ChallengeId, Timestamp, T)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> Pending<T> {
    /// Keeps `value` as ceremony `id` for `ttl` seconds from `now`, ending the oldest past the
    /// bound.
    pub fn open(&mut self, id: ChallengeId, value: T, ttl: u64, now: Timestamp) {
        self.entries.retain(|(_, expires, _)| *expires > now);
        while self.entries.len() >= MAX_PENDING {
            self.entries.remove(0);
        }
        self.entries.push((id, now.plus(ttl), value));
    }

    /// The ceremony `id`, gone from here whatever happens next; `None` if unknown, answered
    /// already or expired.
    pub fn take(&mut self, id: ChallengeId, now: Timestamp) -> Option<T> {
        let i = self.entries.iter().position(|(c, _, _)| *c == id)?;
        let (_, expires, value) = self.entries.remove(i);
        (expires > now).then_some(value)
    }

    /// Whether no ceremony is still waiting at `now` (an actor holding one is not retired).
    pub fn is_quiet(&self, now: Timestamp) -> bool {
        self.entries.iter().all(|(_, expires, _)| *expires <= now)
    }
}

/// The relying party's settings, as configured.
#[derive(Debug, Clone)]
pub struct RelyingParty<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The origins whose ceremonies count; the first must be on `id` (its domain or a
    /// subdomain).
    pub origins: &'a [String],
    /// What the browser is told to give the user, and how long a ceremony waits.
    pub challenge_ttl: u64,
}

impl RelyingParty<'_> {
    /// The webauthn-rs instance every ceremony uses.
    pub fn build(&self) -> Result<Webauthn, String> {
        let urls = self
            .origins
            .iter()
            .map(|o| Url::parse(o).map_err(|e| format!("webauthn origin {o:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let (first, more) = urls
            .split_first()
            .ok_or("webauthn.rp_origins must name at least one origin")?;
        let refused = |e: WebauthnError| {
            format!(
                "webauthn.rp_id {:?} must be the domain of {first} or a parent of it ({e})",
                self.id
            )
        };
        let mut builder = WebauthnBuilder::new(self.id, first)
            .map_err(refused)?
            .rp_name(self.name)
            .timeout(std::time::Duration::from_secs(self.challenge_ttl));
        for url in more {
            builder = builder.append_allowed_origin(url);
        }
        builder.build().map_err(refused)
    }
}

/// Deterministic decoy credential ids: what a login for an email with no passkey (or no
/// account) lists, so that the options do not tell which emails have passkeys. The same email
/// always gets the same ids, drawn from the distribution webauthn-rs models on real accounts
/// (some none, most one, a few more, of the lengths common authenticators use); only a holder
/// of the key could tell them from real ones.
pub struct Decoys {
    generator: WebauthnFakeCredentialGenerator<FakePasskeyDistribution>,
}

impl Decoys {
    /// From a 32-byte secret (derived from the server key).
    pub fn new(key: &[u8; 32]) -> Result<Self, String> {
        WebauthnFakeCredentialGenerator::new(key)
            .map(|generator| Self { generator })
            .map_err(|e| e.to_string())
    }

    /// The options of a login ceremony for `email_key` with its decoy credentials: the shape of
    /// [`login_options`] exactly, from a challenge webauthn-rs made. No state is kept for it:
    /// any answer is refused.
    pub fn options(
        &self,
        webauthn: &Webauthn,
        email_key: &str,
    ) -> Result<RequestChallengeResponse, WebauthnError> {
        let ids = self.generator.generate(email_key.as_bytes())?;
        let (mut options, _) = webauthn.start_discoverable_authentication()?;
        options.public_key.allow_credentials = ids
            .into_iter()
            .map(|id| AllowCredentials {
                type_: "public-key".into(),
                id,
                transports: None,
            })
            .collect();
        // As `start_passkey_authentication` writes them: no extensions, no hints, modal.
        options.public_key.extensions = None;
        options.public_key.hints = None;
        options.mediation = None;
        Ok(options)
    }
}

impl std::fmt::Debug for Decoys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoys(<key>)")
    }
}

/// The options of a login that named an email, as sent: webauthn-rs's, without the transports
/// of the listed credentials, which decoys could only guess at (a browser offers every
/// transport without them).
pub fn login_options(mut options: RequestChallengeResponse) -> RequestChallengeResponse {
    for c in &mut options.public_key.allow_credentials {
        c.transports = None;
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    #[test]
    fn a_ceremony_is_answered_once_and_expires() {
        let mut p = Pending::default();
        let (a, b) = (ChallengeId::generate(), ChallengeId::generate());
        p.open(a, "a", 300, T0);
        p.open(b, "b", 300, T0);
        assert!(!p.is_quiet(T0));
        assert_eq!(p.take(a, T0.plus(10)), Some("a"));
        assert_eq!(p.take(a, T0.plus(10)), None, "used once");
        assert_eq!(p.take(b, T0.plus(300)), None, "expired");
        assert_eq!(p.take(ChallengeId::generate(), T0), None);
        assert!(p.is_quiet(T0));
    }

    #[test]
    fn ceremonies_are_bounded_and_the_oldest_goes_first() {
        let mut p = Pending::default();
        let ids: Vec<ChallengeId> = (0..MAX_PENDING + 3)
            .map(|i| {
                let id = ChallengeId::generate();
                p.open(id, i, 300, T0);
                id
            })
            .collect();
        assert_eq!(p.entries.len(), MAX_PENDING);
        for id in &ids[..3] {
            assert_eq!(p.take(*id, T0), None);
        }
        assert_eq!(p.take(ids[3], T0), Some(3));
        // Expired ones make room first.
        p.open(ChallengeId::generate(), 99, 300, T0.plus(400));
        assert_eq!(p.entries.len(), 1);
        assert!(p.is_quiet(T0.plus(700)));
    }

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(parse_name("  YubiKey 5 ").unwrap(), "YubiKey 5");
        assert_eq!(parse_name(&"é".repeat(64)).unwrap().chars().count(), 64);
        assert_eq!(
            parse_name(&"x".repeat(65)).unwrap_err().kind,
            "string_too_long"
        );
        assert_eq!(parse_name("   ").unwrap_err().kind, "string_too_short");
        assert_eq!(parse_name("").unwrap_err().kind, "string_too_short");
        assert_eq!(parse_name("a\u{7}b").unwrap_err().kind, "value_error");
    }

    #[test]
    fn the_name_pattern_admits_exactly_what_parses() {
        let admits = |s: &str| {
            let printable = |c: char| !c.is_control();
            s.chars().all(printable) && s.chars().any(|c| !c.is_whitespace())
        };
        for s in [
            "a",
            " a ",
            "Work laptop",
            "\u{a0}x",
            "\t",
            " ",
            "",
            "x\u{85}",
        ] {
            assert_eq!(
                admits(s),
                parse_name(s).is_ok() || s.chars().count() > NAME_MAX_LEN,
                "{s:?}"
            );
        }
        assert_eq!(
            NAME_PATTERN,
            r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
        );
    }

    fn webauthn() -> Webauthn {
        RelyingParty {
            id: "localhost",
            name: "BlitzPulse",
            origins: &["http://localhost:8080".into()],
            challenge_ttl: 300,
        }
        .build()
        .unwrap()
    }

    #[test]
    fn the_relying_party_must_own_its_first_origin() {
        let rp = |id, origins: &[String]| {
            RelyingParty {
                id,
                name: "BlitzPulse",
                origins,
                challenge_ttl: 300,
            }
            .build()
        };
        assert!(rp("example.com", &["https://app.example.com".into()]).is_ok());
        assert!(rp(
            "example.com",
            &["https://example.com".into(), "https://other.test".into()]
        )
        .is_ok());
        let err = rp("example.com", &["https://example.org".into()]).unwrap_err();
        assert!(err.contains("webauthn.rp_id"), "{err}");
        assert!(rp("localhost", &[]).is_err());
        assert!(rp("localhost", &["not a url".into()]).is_err());
    }

    #[test]
    fn decoys_are_stable_per_email_and_differ_between_emails() {
        let decoys = Decoys::new(&[7; 32]).unwrap();
        let w = webauthn();
        let ids = |email: &str| -> Vec<Vec<u8>> {
            decoys
                .options(&w, email)
                .unwrap()
                .public_key
                .allow_credentials
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        let mut differ = false;
        for i in 0..20 {
            let email = format!("ghost{i}@example.com");
            assert_eq!(ids(&email), ids(&email), "the same ids each time");
            differ |= ids(&email) != ids(&format!("other{i}@example.com"));
        }
        assert!(differ);
        let other_key = Decoys::new(&[8; 32]).unwrap();
        let moved = (0..20).any(|i| {
            let email = format!("ghost{i}@example.com");
            other_key
                .options(&w, &email)
                .unwrap()
                .public_key
                .allow_credentials
                .len()
                != ids(&email).len()
                || ids(&email).is_empty()
        });
        assert!(moved, "another key, other decoys");
    }

    #[test]
    fn decoy_options_have_the_shape_of_real_ones() {
        use webauthn_authenticator_rs::prelude::WebauthnAuthenticator;
        use webauthn_authenticator_rs::softpasskey::SoftPasskey;
        let w = webauthn();
        let origin = Url::parse("http://localhost:8080").unwrap();
        let mut soft = SoftPasskey::new(true);
        let (ccr, reg) = w
            .start_passkey_registration(uuid::Uuid::now_v7(), "ada", "Ada", None)
            .unwrap();
        let credential = soft.do_registration(origin, ccr).unwrap();
        let passkey = w.finish_passkey_registration(&credential, &reg).unwrap();
        let (real, _) = w.start_passkey_authentication(&[passkey]).unwrap();
        let real = serde_json::to_value(login_options(real)).unwrap();
        // An email whose decoy lists one credential, as the real one does.
        let decoys = Decoys::new(&[7; 32]).unwrap();
        let decoy = (0..)
            .map(|i| {
                decoys
                    .options(&w, &format!("ghost{i}@example.com"))
                    .unwrap()
            })
            .find(|o| o.public_key.allow_credentials.len() == 1)
            .unwrap();
        let decoy = serde_json::to_value(decoy).unwrap();
        fn shape(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), shape(v)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                serde_json::Value::Array(a) => a.iter().map(shape).collect(),
                serde_json::Value::String(_) => "string".into(),
                other => other.clone(),
            }
        }
        assert_eq!(shape(&real), shape(&decoy), "{real} / {decoy}");
        assert_ne!(
            real["publicKey"]["challenge"],
            decoy["publicKey"]["challenge"]
        );
    }
}
