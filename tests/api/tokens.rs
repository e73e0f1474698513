//! Access-token verification against tampered and forged tokens: every one is a 401 with the
//! right code (never a 500), the signature is checked before any claim, and the JWKS publishes
//! the key that signs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bp_auth::domain::ids::{SessionId, UserId};
use bp_auth::domain::time::Timestamp;
use bp_auth::domain::tokens::{KeyPair, Keyring};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

fn genuine_header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})
}

/// An app, a logged-in user's genuine access token, and the server's key pair.
async fn setup() -> (TestApp, String, KeyPair) {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let pair = signing_key(app.data_dir.path());
    (app, t.access, pair)
}

#[actix_web::test]
async fn resigning_the_genuine_header_and_claims_is_accepted() {
    // The forging machinery itself: the same header and claims signed with the server's key
    // are a valid token, so the refusals below are about what each case changes.
    let (app, token, pair) = setup().await;
    let forged = sign_with(&pair, &jwt_header(&token), &jwt_claims(&token));
    assert_eq!(app.me(&forged).await.status(), 200);
    let again = sign_with(&pair, &genuine_header(&pair.kid), &jwt_claims(&token));
    assert_eq!(app.me(&again).await.status(), 200);
}

#[actix_web::test]
async fn changed_payload_with_the_original_signature() {
    let (app, token, _) = setup().await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = jwt_claims(&token);
    claims["role"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_invalid_token(&app, &forged, "role changed").await;
    let mut claims = jwt_claims(&token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap_or(0) + 86_400);
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_invalid_token(&app, &forged, "exp extended").await;
}

#[actix_web::test]
async fn alg_none_with_an_empty_signature() {
    let (app, token, pair) = setup().await;
    let claims = jwt_claims(&token);
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": pair.kid});
        let forged = format!("{}.{}.", b64(&header), b64(&claims));
        assert_invalid_token(&app, &forged, alg).await;
        let two_segments = format!("{}.{}", b64(&header), b64(&claims));
        assert_invalid_token(&app, &two_segments, alg).await;
    }
}

#[actix_web::test]
async fn hs256_signed_with_the_public_key() {
    let (app, token, _) = setup().await;
    let jwks = json_of(app.get("/.well-known/jwks.json").await).await;
    let jwk = &jwks["keys"][0];
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("x is base64url");
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": jwk["kid"]});
    let signing_input = format!("{}.{}", b64(&header), b64(&jwt_claims(&token)));
    let mut mac = Hmac::<Sha256>::new_from_slice(&x).expect("hmac key");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let forged = format!("{signing_input}.{sig}");
    assert_invalid_token(&app, &forged, "HS256 keyed with the public key").await;
}

#[actix_web::test]
async fn unknown_kid_signed_with_the_real_key() {
    let (app, token, pair) = setup().await;
    let claims = jwt_claims(&token);
    for kid in ["unknown", "../x", "../../keys/server", "", "0"] {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        assert_invalid_token(&app, &sign_with(&pair, &header, &claims), kid).await;
    }
    let header = json!({"alg": "EdDSA", "typ": "at+jwt"});
    assert_invalid_token(&app, &sign_with(&pair, &header, &claims), "no kid").await;
}

#[actix_web::test]
async fn embedded_jwk_does_not_pick_the_key() {
    let (app, token, pair) = setup().await;
    let attacker = KeyPair::from_seed(&[42; 32]);
    let claims = jwt_claims(&token);
    // The attacker's own kid and key, offered in the header.
    let header =
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid, "jwk": attacker.jwk()});
    assert_invalid_token(
        &app,
        &sign_with(&attacker, &header, &claims),
        "own kid + jwk",
    )
    .await;
    // The server's kid with the attacker's key embedded.
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": pair.kid, "jwk": attacker.jwk()});
    assert_invalid_token(
        &app,
        &sign_with(&attacker, &header, &claims),
        "real kid + jwk",
    )
    .await;
    // A jku pointing elsewhere.
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid, "jku": "http://127.0.0.1:1/jwks.json"});
    assert_invalid_token(&app, &sign_with(&attacker, &header, &claims), "jku").await;
}

#[actix_web::test]
async fn one_bit_flipped_in_the_signature() {
    let (app, token, _) = setup().await;
    let dot = token.rfind('.').expect("dot");
    let sig = URL_SAFE_NO_PAD.decode(&token[dot + 1..]).expect("sig");
    for bit in [0, 7, 100, 255, 511] {
        let mut s = sig.clone();
        s[bit / 8] ^= 1 << (bit % 8);
        let forged = format!("{}.{}", &token[..dot], URL_SAFE_NO_PAD.encode(&s));
        assert_invalid_token(&app, &forged, &format!("bit {bit}")).await;
    }
    // Truncated and extended signatures.
    assert_invalid_token(&app, &token[..token.len() - 4], "truncated").await;
    assert_invalid_token(&app, &format!("{token}AAAA"), "extended").await;
}

#[actix_web::test]
async fn wrong_audience_or_issuer() {
    let (app, token, pair) = setup().await;
    let (sub, tid, sid) = session_of(&token);
    let now = Timestamp(now_secs());
    let other_aud = Keyring::new(pair.clone(), vec![], "bp-auth".into(), "other".into(), 30);
    let c = other_aud.claims(sub, tid, Some(sid), "owner", now, 900);
    assert_invalid_token(&app, &other_aud.sign(&c, "at+jwt"), "aud other").await;
    let other_iss = Keyring::new(
        pair.clone(),
        vec![],
        "someone-else".into(),
        "blitzpulse".into(),
        30,
    );
    let c = other_iss.claims(sub, tid, Some(sid), "owner", now, 900);
    assert_invalid_token(&app, &other_iss.sign(&c, "at+jwt"), "iss other").await;
    // The same forgery with the right audience and issuer is accepted: only aud/iss differed.
    let right = forging_keyring(&app);
    let c = right.claims(sub, tid, Some(sid), "owner", now, 900);
    assert_eq!(app.me(&right.sign(&c, "at+jwt")).await.status(), 200);
}

#[actix_web::test]
async fn wrong_typ_is_refused() {
    let (app, token, pair) = setup().await;
    let (sub, tid, sid) = session_of(&token);
    let ring = forging_keyring(&app);
    let now = Timestamp(now_secs());
    let with_sid = ring.claims(sub, tid, Some(sid), "owner", now, 300);
    assert_invalid_token(&app, &ring.sign(&with_sid, "mfa+jwt"), "mfa+jwt with sid").await;
    let pending = ring.claims(sub, tid, None, "owner", now, 300);
    assert_invalid_token(&app, &ring.sign(&pending, "mfa+jwt"), "mfa+jwt").await;
    let claims = jwt_claims(&token);
    for typ in ["JWT", "at+JWT", "jwt"] {
        let header = json!({"alg": "EdDSA", "typ": typ, "kid": pair.kid});
        assert_invalid_token(&app, &sign_with(&pair, &header, &claims), typ).await;
    }
    let header = json!({"alg": "EdDSA", "kid": pair.kid});
    assert_invalid_token(&app, &sign_with(&pair, &header, &claims), "no typ").await;
}

#[actix_web::test]
async fn unknown_critical_header_is_refused() {
    let (app, token, pair) = setup().await;
    let header =
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": pair.kid, "crit": ["exp"], "exp": 1});
    assert_invalid_token(
        &app,
        &sign_with(&pair, &header, &jwt_claims(&token)),
        "crit",
    )
    .await;
}

#[actix_web::test]
async fn expired_token_is_token_expired() {
    let (app, token, _) = setup().await;
    // Issued an hour ago for ten minutes: expired 50 minutes ago, well past the 30 s leeway.
    let expired = forge_for_session(&app, &token, 3600, 600);
    expect_error(app.me(&expired).await, 401, "token_expired").await;
    // Expired 60 s ago: still past the leeway.
    let late = forge_for_session(&app, &token, 960, 900);
    expect_error(app.me(&late).await, 401, "token_expired").await;
}

#[actix_web::test]
async fn expiry_within_the_leeway_is_accepted() {
    let (app, token, _) = setup().await;
    // Expired 5 s ago: within the 30 s of tolerated skew.
    let skewed = forge_for_session(&app, &token, 905, 900);
    assert_eq!(app.me(&skewed).await.status(), 200);
}

#[actix_web::test]
async fn signature_is_checked_before_expiry() {
    let (app, token, _) = setup().await;
    let expired = forge_for_session(&app, &token, 3600, 600);
    let dot = expired.rfind('.').expect("dot");
    let mut sig = URL_SAFE_NO_PAD.decode(&expired[dot + 1..]).expect("sig");
    sig[10] ^= 0x01;
    let forged = format!("{}.{}", &expired[..dot], URL_SAFE_NO_PAD.encode(&sig));
    assert_invalid_token(&app, &forged, "expired with a bad signature").await;
}

#[actix_web::test]
async fn revoked_session_is_session_revoked() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let t = app.login(&e).await;
    let other = app.login(&e).await;
    assert_eq!(app.me(&t.access).await.status(), 200);
    let res = app.logout_bearer(Some(&t.access), &json!({})).await;
    assert_eq!(res.status(), 204);
    expect_error(app.me(&t.access).await, 401, "session_revoked").await;
    // A fresh token for the revoked session, genuinely signed, is refused as well.
    let (sub, tid, sid) = session_of(&t.access);
    let ring = forging_keyring(&app);
    let c = ring.claims(sub, tid, Some(sid), "owner", Timestamp(now_secs()), 900);
    expect_error(
        app.me(&ring.sign(&c, "at+jwt")).await,
        401,
        "session_revoked",
    )
    .await;
    // The user's other session is untouched.
    assert_eq!(app.me(&other.access).await.status(), 200);
}

#[actix_web::test]
async fn genuine_signature_for_an_unknown_user_or_session_is_401() {
    let (app, token, _) = setup().await;
    let ring = forging_keyring(&app);
    let now = Timestamp(now_secs());
    let (sub, tid, _) = session_of(&token);
    let signed_for = |sub: UserId, sid: SessionId| {
        ring.sign(
            &ring.claims(sub, tid, Some(sid), "owner", now, 900),
            "at+jwt",
        )
    };
    let res = app
        .me(&signed_for(UserId::generate(), SessionId::generate()))
        .await;
    assert_eq!(res.status(), 401, "unknown user");
    let res = app.me(&signed_for(sub, SessionId::generate())).await;
    assert_eq!(res.status(), 401, "unknown session");
}

#[actix_web::test]
async fn malformed_claims_are_401_not_500() {
    let (app, _, pair) = setup().await;
    let header = genuine_header(&pair.kid);
    for claims in [
        json!({}),
        json!([]),
        json!("string"),
        json!({"iss": "bp-auth", "aud": "blitzpulse", "sub": "not-a-uuid", "tid": "x", "sid": "y", "role": "owner", "iat": 0, "exp": 1, "jti": "z"}),
        json!({"iss": "bp-auth", "aud": "blitzpulse", "exp": "tomorrow"}),
    ] {
        assert_invalid_token(
            &app,
            &sign_with(&pair, &header, &claims),
            &claims.to_string(),
        )
        .await;
    }
    // Not even JSON in the segments.
    let forged = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode("not json"),
        URL_SAFE_NO_PAD.encode("{}"),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    assert_invalid_token(&app, &forged, "header not JSON").await;
    assert_invalid_token(&app, "%%%.%%%.%%%", "not base64").await;
}

#[actix_web::test]
async fn jwks_lists_the_signing_key() {
    let (app, token, pair) = setup().await;
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    assert_common_headers(res.headers());
    let jwks = json_of(res).await;
    let keys = jwks["keys"].as_array().expect("keys");
    let kid = jwt_header(&token)["kid"].clone();
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} in {jwks}"));
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "EdDSA");
    let x = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().expect("x"))
        .expect("x is base64url without padding");
    assert_eq!(x.len(), 32);
    assert_eq!(x, pair.signing.verifying_key().as_bytes());
    assert!(key.get("d").is_none(), "the private key is never published");
}

#[actix_web::test]
async fn data_dir_keyring_loads_and_matches_the_jwks() {
    // What a restart does: load the keyring from the data dir the server has been running on.
    let (app, token, _) = setup().await;
    let ring = app.keyring();
    assert_eq!(json!(ring.active_kid()), jwt_header(&token)["kid"]);
    let jwks = json_of(app.get("/.well-known/jwks.json").await).await;
    assert_eq!(ring.jwks(), jwks);
}
