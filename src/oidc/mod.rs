//! bp-auth as an OpenID Connect relying party: the configured providers, their discovery
//! documents and keys (cached), the authorization URL of a sign-in (code flow, PKCE S256, our
//! `state` and `nonce`), and the callback's code exchange and ID-token verification.
//!
//! Every check of the ID token (signature against the provider's JWKS, `iss`, `aud`, `azp`,
//! `exp`, `iat`, `nonce`, the algorithms the provider announced) is the `openidconnect` crate's;
//! this module only hands it the provider's metadata, our client id and the nonce, and reads
//! the claims it vouched for.
//!
//! A leaf beside the layers, as `delivery` is: it makes outbound HTTP requests and knows no
//! user. What a flow keeps between requests is the actors' business (`actors/identities.rs`).
//!
//! # Caching
//!
//! A provider's discovery document (with its JWKS) is fetched on first use, not at start (a
//! provider that is down must not keep bp-auth from starting), and again after
//! [`METADATA_TTL`]. An ID token signed with a `kid` the cached JWKS lacks (the provider rotated
//! its keys) makes one fetch of the JWKS and one more verification; such fetches happen at most
//! once per [`JWKS_REFRESH_MIN`] per provider, so tokens with made-up `kid`s cannot make us
//! hammer the provider. One fetch at a time per provider: concurrent sign-ins wait for it.

pub mod redirect;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
    TokenResponse,
};
use url::Url;

use crate::config::{Config, ConfigError};
use crate::domain::identities::{ProviderClaims, SUBJECT_MAX_LEN};

/// How long a discovery document is trusted before it is fetched again.
pub const METADATA_TTL: Duration = Duration::from_secs(3_600);

/// The shortest time between two fetches of a provider's JWKS for an unknown `kid`.
pub const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);

/// The longest one request to a provider may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a step with the provider failed, in words the callback turns into an `#error=` code.
/// The messages carry no secret (codes, tokens and nonces never reach them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached, or answered something that is no answer.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the code (used already, expired, wrong PKCE verifier).
    #[error("the provider refused the code: {0}")]
    CodeRefused(String),
    /// The ID token did not verify (signature, issuer, audience, expiry, nonce, subject).
    #[error("the ID token did not verify: {0}")]
    InvalidIdToken(&'static str),
}

impl OidcError {
    /// The `#error=` code of the callback.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "provider_unavailable",
            Self::CodeRefused(_) => "code_refused",
            Self::InvalidIdToken(_) => "invalid_id_token",
        }
    }
}

/// What failed in a verification, without openidconnect's message (which may quote claims,
/// the nonce among them).
fn verification_failure(e: &ClaimsVerificationError) -> &'static str {
    match e {
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidAudience(_) => "audience",
        ClaimsVerificationError::InvalidIssuer(_) => "issuer",
        ClaimsVerificationError::InvalidNonce(_) => "nonce",
        ClaimsVerificationError::InvalidSubject(_) => "subject",
        ClaimsVerificationError::SignatureVerification(_) => "signature",
        ClaimsVerificationError::InvalidAuthTime(_)
        | ClaimsVerificationError::InvalidAuthContext(_) => "authentication",
        _ => "claims",
    }
}

/// A provider's name as the paths use it: 1 to 32 of `a-z`, `0-9`, `-`, `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} must be 1 to 32 of a-z, 0-9, '-' and '_'"
        ))
    }
}

/// `oidc.public_url` parsed: an http(s) URL without credentials, query or fragment.
pub fn public_base(raw: &str) -> Result<Url, String> {
    if raw.trim().is_empty() {
        return Err("required once a provider is configured (bp-auth's own URL)".into());
    }
    let url = Url::parse(raw.trim()).map_err(|e| format!("{raw:?}: {e}"))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.host_str().is_some();
    if !plain {
        return Err(format!(
            "{raw:?} must be an http(s) URL without credentials, query or fragment"
        ));
    }
    Ok(url)
}

/// The redirect URI of provider `name` under `base`.
fn callback_url(base: &Url, name: &str) -> String {
    format!(
        "{}/api/auth/oidc/{name}/callback",
        base.as_str().trim_end_matches('/')
    )
}

/// The client openidconnect builds from discovered metadata.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovery document as fetched, with when it and its JWKS were.
struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
    keys_fetched_at: Instant,
}

/// One configured provider.
pub struct Provider {
    pub name: String,
    pub display_name: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    /// The configured scopes but `openid`, which openidconnect always asks for.
    scopes: Vec<Scope>,
    redirect_uri: RedirectUrl,
    cache: tokio::sync::Mutex<Option<Arc<Discovered>>>,
    http: openidconnect::reqwest::Client,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// The redirect URI registered with the provider.
    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// The issuer, as configured (and as discovery must confirm).
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> Client {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        )
        .set_redirect_uri(self.redirect_uri.clone())
    }

    /// The cached discovery document, fetched if absent or stale. openidconnect checks that
    /// the document's issuer is the configured one.
    async fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some(d) = cache
            .as_ref()
            .filter(|d| d.fetched_at.elapsed() < METADATA_TTL)
        {
            return Ok(d.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %self.name, error = %e, "OpenID Connect discovery failed");
                OidcError::Unavailable(format!("discovery: {e}"))
            })?;
        let now = Instant::now();
        let d = Arc::new(Discovered {
            metadata,
            fetched_at: now,
            keys_fetched_at: now,
        });
        *cache = Some(d.clone());
        Ok(d)
    }

    /// The discovery document with a JWKS fetched anew, unless `seen` is no longer the cached
    /// one (someone refreshed meanwhile) or the keys were fetched less than
    /// [`JWKS_REFRESH_MIN`] ago; `None` when nothing new was fetched.
    async fn refreshed_keys(&self, seen: &Arc<Discovered>) -> Option<Arc<Discovered>> {
        let mut cache = self.cache.lock().await;
        let current = cache.as_ref()?.clone();
        if !Arc::ptr_eq(&current, seen) {
            return Some(current);
        }
        if current.keys_fetched_at.elapsed() < JWKS_REFRESH_MIN {
            return None;
        }
        let uri = current.metadata.jwks_uri().clone();
        let fetched = CoreJsonWebKeySet::fetch_async(&uri, &self.http).await;
        // A failed fetch counts too: the bound is on requests to the provider, not successes.
        let jwks = match fetched {
            Ok(jwks) => Some(jwks),
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "JWKS fetch failed");
                None
            }
        };
        let d = Arc::new(Discovered {
            metadata: match &jwks {
                Some(jwks) => current.metadata.clone().set_jwks(jwks.clone()),
                None => current.metadata.clone(),
            },
            fetched_at: current.fetched_at,
            keys_fetched_at: Instant::now(),
        });
        *cache = Some(d.clone());
        jwks.map(|_| d)
    }

    /// The URL to send the browser to: the authorization code flow with `state`, `nonce` and
    /// the S256 challenge of `pkce_verifier`.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<Url, OidcError> {
        let d = self.discovered().await?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_string(),
        ));
        let (state, nonce) = (state.to_string(), nonce.to_string());
        let (url, _, _) = self
            .client(&d.metadata)
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scopes(self.scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .url();
        Ok(url)
    }

    /// Exchanges `code` (with the PKCE verifier) at the token endpoint and verifies the ID
    /// token it answers, expecting `nonce`: what the provider says about the user.
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<ProviderClaims, OidcError> {
        let d = self.discovered().await?;
        let client = self.client(&d.metadata);
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Unavailable(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    OidcError::CodeRefused(r.error().to_string())
                }
                RequestTokenError::Request(e) => OidcError::Unavailable(e.to_string()),
                RequestTokenError::Parse(e, _) => {
                    OidcError::Unavailable(format!("token response: {e}"))
                }
                RequestTokenError::Other(e) => OidcError::Unavailable(e),
            })?;
        let id_token = answer
            .id_token()
            .ok_or(OidcError::InvalidIdToken("no ID token"))?;
        let nonce = Nonce::new(nonce.to_string());
        let verified = {
            let verifier = client.id_token_verifier();
            id_token.claims(&verifier, &nonce).map(claims_of)
        };
        let claims = match verified {
            Ok(c) => c,
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // Perhaps a key the provider rotated in since we fetched its JWKS.
                let Some(d) = self.refreshed_keys(&d).await else {
                    return Err(OidcError::InvalidIdToken("signature"));
                };
                let client = self.client(&d.metadata);
                let verifier = client.id_token_verifier();
                id_token
                    .claims(&verifier, &nonce)
                    .map(claims_of)
                    .map_err(|e| OidcError::InvalidIdToken(verification_failure(&e)))?
            }
            Err(e) => return Err(OidcError::InvalidIdToken(verification_failure(&e))),
        };
        let (subject, email, email_verified, name) = claims;
        if subject.is_empty() || subject.len() > SUBJECT_MAX_LEN {
            return Err(OidcError::InvalidIdToken("subject"));
        }
        Ok(ProviderClaims {
            provider: self.name.clone(),
            subject,
            email,
            email_verified,
            name,
        })
    }
}

/// The claims bp-auth uses from a verified ID token: `sub`, `email`, `email_verified`, `name`.
fn claims_of(
    c: &openidconnect::core::CoreIdTokenClaims,
) -> (String, Option<String>, bool, Option<String>) {
    (
        c.subject().as_str().to_string(),
        c.email().map(|e| e.as_str().to_string()),
        c.email_verified().unwrap_or(false),
        c.name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string()),
    )
}

/// Every configured provider, by name.
#[derive(Debug, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Arc<Provider>>,
}

impl Providers {
    /// The providers of `oidc.providers` (the configuration was validated: the URLs parse and
    /// the secrets resolve).
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let oidc = &config.oidc;
        if oidc.providers.is_empty() {
            return Ok(Self::default());
        }
        let invalid = |e: String| ConfigError::Invalid(e);
        let base = public_base(&oidc.public_url).map_err(invalid)?;
        // No redirects: a provider's endpoints answer themselves (and a redirect is how a
        // request is steered somewhere it should not go).
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| invalid(format!("oidc: HTTP client: {e}")))?;
        let mut by_name = BTreeMap::new();
        for (name, p) in &oidc.providers {
            let at = |e: String| invalid(format!("oidc.providers.{name}: {e}"));
            let issuer = IssuerUrl::new(p.issuer.trim_end_matches('/').to_string())
                .map_err(|e| at(format!("issuer: {e}")))?;
            let redirect_uri = RedirectUrl::new(callback_url(&base, name))
                .map_err(|e| at(format!("redirect URI: {e}")))?;
            let provider = Provider {
                name: name.clone(),
                display_name: if p.display_name.trim().is_empty() {
                    name.clone()
                } else {
                    p.display_name.clone()
                },
                issuer,
                client_id: ClientId::new(p.client_id.clone()),
                client_secret: p.secret().map_err(at)?.map(ClientSecret::new),
                scopes: p
                    .scopes
                    .iter()
                    .filter(|s| s.as_str() != "openid")
                    .map(|s| Scope::new(s.clone()))
                    .collect(),
                redirect_uri,
                cache: tokio::sync::Mutex::new(None),
                http: http.clone(),
            };
            by_name.insert(name.clone(), Arc::new(provider));
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_safe() {
        for ok in ["google", "okta-eu", "a_1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Google", "a/b", "a b", "é", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_redirect_uri_hangs_under_the_public_url() {
        let base = public_base("https://auth.example.com/").unwrap();
        assert_eq!(
            callback_url(&base, "google"),
            "https://auth.example.com/api/auth/oidc/google/callback"
        );
        let prefixed = public_base("https://example.com/auth").unwrap();
        assert_eq!(
            callback_url(&prefixed, "google"),
            "https://example.com/auth/api/auth/oidc/google/callback"
        );
        for bad in [
            "",
            "auth.example.com",
            "https://u@x.example",
            "https://x.example/?a",
        ] {
            assert!(public_base(bad).is_err(), "{bad}");
        }
    }

    /// A provider whose JWKS endpoint (a bare HTTP responder on loopback) counts its requests.
    async fn counting_provider() -> (Provider, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let body = r#"{"keys":[]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let base = format!("http://{addr}");
        let metadata = CoreProviderMetadata::new(
            IssuerUrl::new(base.clone()).unwrap(),
            openidconnect::AuthUrl::new(format!("{base}/auth")).unwrap(),
            openidconnect::JsonWebKeySetUrl::new(format!("{base}/jwks")).unwrap(),
            vec![openidconnect::ResponseTypes::new(vec![
                openidconnect::core::CoreResponseType::Code,
            ])],
            vec![openidconnect::core::CoreSubjectIdentifierType::Public],
            vec![openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            openidconnect::EmptyAdditionalProviderMetadata {},
        );
        let long_ago = Instant::now()
            .checked_sub(JWKS_REFRESH_MIN + Duration::from_secs(1))
            .unwrap();
        let provider = Provider {
            name: "test".into(),
            display_name: "Test".into(),
            issuer: IssuerUrl::new(base.clone()).unwrap(),
            client_id: ClientId::new("client".into()),
            client_secret: None,
            scopes: vec![],
            redirect_uri: RedirectUrl::new(format!("{base}/cb")).unwrap(),
            cache: tokio::sync::Mutex::new(Some(Arc::new(Discovered {
                metadata,
                fetched_at: Instant::now(),
                keys_fetched_at: long_ago,
            }))),
            http: openidconnect::reqwest::Client::new(),
        };
        (provider, hits)
    }

    #[tokio::test]
    async fn unknown_kids_fetch_the_keys_at_most_once_per_interval() {
        use std::sync::atomic::Ordering;
        let (provider, hits) = counting_provider().await;
        let seen = provider.cache.lock().await.clone().unwrap();
        let fresh = provider.refreshed_keys(&seen).await.expect("fetched");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Another token with a made-up kid at once: no request to the provider.
        assert!(provider.refreshed_keys(&fresh).await.is_none());
        assert!(provider.refreshed_keys(&fresh).await.is_none());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // A verification that began with the old keys gets the new ones, without a request.
        let again = provider.refreshed_keys(&seen).await.expect("the new keys");
        assert!(Arc::ptr_eq(&again, &fresh));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn errors_name_their_callback_codes() {
        assert_eq!(
            OidcError::Unavailable("x".into()).code(),
            "provider_unavailable"
        );
        assert_eq!(OidcError::CodeRefused("x".into()).code(), "code_refused");
        assert_eq!(
            OidcError::InvalidIdToken("nonce").code(),
            "invalid_id_token"
        );
    }
}
