//! Passkeys (API.md "Passkeys (WebAuthn)"): registration, the list, renaming and deleting,
//! login with an email or usernameless, the second factor after a password, and every refusal
//! (a replayed, foreign, expired or cloned assertion; a credential id of another account).
//!
//! Every registration and assertion is real: made by webauthn-authenticator-rs's software
//! authenticators from the options the server served, with the origin of the default relying
//! party (`http://localhost:8080`). `SoftPasskey` keeps no resident credentials, so for a
//! usernameless login the test plays the part a discoverable authenticator plays: it picks the
//! credential it holds for the site and returns the user handle it was given at registration
//! (the handle is not signed; the server must check it names the credential's owner). The
//! cloned authenticator is a `SoftToken` copied from its serialised state, counter and all.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::{Url, WebauthnAuthenticator};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs_proto::{CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse};

use crate::helpers::*;
use crate::mfa::{challenge, enrolled_user, expect_signed_in, login_pending};

const REGISTER_START: &str = "/api/auth/passkeys/register/start";
const REGISTER_FINISH: &str = "/api/auth/passkeys/register/finish";
const LIST: &str = "/api/auth/passkeys";
const LOGIN_START: &str = "/api/auth/passkeys/login/start";
const LOGIN_FINISH: &str = "/api/auth/passkeys/login/finish";
const MFA_START: &str = "/api/auth/mfa/passkey/start";
const ORIGIN: &str = "http://localhost:8080";

// ---------------------------------------------------------------------------------------------
// The user's authenticator.
// ---------------------------------------------------------------------------------------------

/// A software authenticator and what a discoverable one would remember of each credential it
/// made: its id and the user handle it was made for (and, for forging, its `authData`).
struct Authenticator<A> {
    device: A,
    credentials: Vec<Made>,
}

#[derive(Debug, Clone)]
struct Made {
    id: Vec<u8>,
    handle: Vec<u8>,
    /// From the registration's attestation object: the credential id and public key.
    auth_data: Vec<u8>,
}

/// The `authData` of an attestation object.
fn auth_data_of(attestation_object: &[u8]) -> Vec<u8> {
    use serde_cbor_2::Value as Cbor;
    let Ok(Cbor::Map(map)) = serde_cbor_2::from_slice(attestation_object) else {
        panic!("an attestation object is a CBOR map")
    };
    match map.get(&Cbor::Text("authData".into())) {
        Some(Cbor::Bytes(b)) => b.clone(),
        other => panic!("authData: {other:?}"),
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

impl Authenticator<SoftPasskey> {
    fn new() -> Self {
        Self {
            device: SoftPasskey::new(true),
            credentials: Vec::new(),
        }
    }
}

impl Authenticator<SoftToken> {
    fn token() -> Self {
        Self {
            device: SoftToken::new(true).unwrap().0,
            credentials: Vec::new(),
        }
    }

    /// A copy of this authenticator, its keys and its signature counter as they are now.
    fn clone_device(&self) -> Self {
        Self {
            device: SoftToken::from_cbor(&self.device.to_cbor().unwrap()).unwrap(),
            credentials: self.credentials.clone(),
        }
    }
}

impl<A: WebauthnAuthenticator> Authenticator<A> {
    /// `navigator.credentials.create({publicKey})` with the options as served; the
    /// credential as a browser's `toJSON()` writes it.
    fn create(&mut self, public_key: &Value) -> Value {
        let options: CreationChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("creation options");
        let handle = options.public_key.user.id.clone();
        let credential = self
            .device
            .do_registration(origin(), options)
            .expect("the authenticator registers");
        self.credentials.push(Made {
            id: credential.raw_id.clone(),
            handle,
            auth_data: auth_data_of(&credential.response.attestation_object),
        });
        serde_json::to_value(credential).unwrap()
    }

    /// `navigator.credentials.get({publicKey})` with the options as served. With no
    /// credentials listed (usernameless), it picks its first credential and returns its user
    /// handle, as a discoverable one does.
    fn get(&mut self, public_key: &Value) -> Value {
        let mut options: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("request options");
        let discoverable = options.public_key.allow_credentials.is_empty();
        if discoverable {
            let listed = json!([{"type": "public-key", "id": b64(&self.credentials[0].id)}]);
            options.public_key.allow_credentials = serde_json::from_value(listed).unwrap();
        }
        let mut credential = self
            .device
            .do_authentication(origin(), options)
            .expect("the authenticator signs");
        if discoverable {
            credential.response.user_handle = Some(self.credentials[0].handle.clone());
        }
        serde_json::to_value(credential).unwrap()
    }

    /// An assertion of this authenticator's credential for options that list another's:
    /// what a user answering with the wrong (or a stolen) authenticator sends.
    fn get_listing_mine(&mut self, public_key: &Value) -> Value {
        let mut public_key = public_key.clone();
        public_key["allowCredentials"] =
            json!([{"type": "public-key", "id": b64(&self.credentials[0].id)}]);
        public_key["userVerification"] = json!("required");
        self.get_exact(&public_key)
    }

    fn get_exact(&mut self, public_key: &Value) -> Value {
        let options: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).unwrap();
        let credential: PublicKeyCredential = self
            .device
            .do_authentication(origin(), options)
            .expect("the authenticator signs");
        serde_json::to_value(credential).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

/// A ceremony's options: `{"challenge_id", "publicKey"}` and nothing else; returns both.
async fn options_of(res: Response, what: &str) -> (String, Value) {
    assert_no_store(res.headers());
    let v = expect_status(res, 200, what).await;
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["challenge_id", "publicKey"], "{what}: {v}");
    assert_uuid_v7(&v["challenge_id"], "challenge_id");
    let challenge = v["publicKey"]["challenge"].as_str().expect("a challenge");
    assert!(
        URL_SAFE_NO_PAD.decode(challenge).unwrap().len() >= 16,
        "a base64url challenge: {v}"
    );
    (
        v["challenge_id"].as_str().unwrap().to_string(),
        v["publicKey"].clone(),
    )
}

async fn register_start(app: &impl Server, access: &str) -> (String, Value) {
    let res = app.post_bearer(REGISTER_START, access, None).await;
    options_of(res, "register/start").await
}

async fn register_finish(
    app: &impl Server,
    access: &str,
    challenge_id: &str,
    name: &str,
    credential: &Value,
) -> Response {
    let body = json!({"challenge_id": challenge_id, "name": name, "credential": credential});
    app.post_bearer(REGISTER_FINISH, access, Some(&body)).await
}

/// Registers a passkey of `authenticator` as `name`; asserts the answer; returns it.
async fn register<A: WebauthnAuthenticator>(
    app: &impl Server,
    access: &str,
    authenticator: &mut Authenticator<A>,
    name: &str,
) -> Value {
    let (challenge_id, options) = register_start(app, access).await;
    let credential = authenticator.create(&options);
    let res = register_finish(app, access, &challenge_id, name, &credential).await;
    let v = expect_status(res, 201, "register/finish").await;
    assert_passkey(&v, name);
    assert!(v["last_used_at"].is_null(), "{v}");
    v
}

/// A passkey as the API shows it.
fn assert_passkey(v: &Value, name: &str) {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "id", "last_used_at", "name"], "{v}");
    assert_uuid_v7(&v["id"], "id");
    assert_rfc3339_z(&v["created_at"], "created_at");
    assert_eq!(v["name"], name, "{v}");
}

async fn list(app: &impl Server, access: &str) -> Vec<Value> {
    let res = app.get_bearer(LIST, access).await;
    assert_no_store(res.headers());
    let v = expect_status(res, 200, "list").await;
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    v["passkeys"].as_array().expect("passkeys").clone()
}

async fn login_start(app: &impl Server, email: Option<&str>) -> (String, Value) {
    let body = match email {
        Some(e) => json!({ "email": e }),
        None => json!({}),
    };
    options_of(app.post_json(LOGIN_START, &body).await, "login/start").await
}

async fn login_finish(app: &impl Server, challenge_id: &str, credential: &Value) -> Response {
    let body = json!({"challenge_id": challenge_id, "credential": credential});
    app.client()
        .post(app.url(LOGIN_FINISH))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A passkey login (usernameless without `email`): asserts the token response and its cookie;
/// returns the tokens.
async fn passkey_login<A: WebauthnAuthenticator>(
    app: &impl Server,
    email: Option<&str>,
    authenticator: &mut Authenticator<A>,
) -> Tokens {
    let (challenge_id, options) = login_start(app, email).await;
    let credential = authenticator.get(&options);
    let res = login_finish(app, &challenge_id, &credential).await;
    assert_no_store(res.headers());
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("bp_token="))
        .expect("the login sets bp_token");
    let v = expect_status(res, 200, "login/finish").await;
    let tokens = assert_token_response(&v, 900);
    assert!(
        cookie.starts_with(&format!("bp_token={};", tokens.access)),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    tokens
}

async fn sessions(app: &impl Server, access: &str) -> Vec<Value> {
    let v = expect_status(
        app.get_bearer("/api/auth/sessions", access).await,
        200,
        "sessions",
    )
    .await;
    v["sessions"].as_array().unwrap().clone()
}

async fn event_types(app: &impl Server, access: &str) -> Vec<String> {
    let v = expect_status(
        app.get_bearer("/api/auth/me/events", access).await,
        200,
        "events",
    )
    .await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn sid(t: &Tokens) -> String {
    jwt_claims(&t.access)["sid"].as_str().unwrap().to_string()
}

/// The shape of a JSON value: every string replaced by `"string"`, every list by the shape of
/// its first element; numbers, booleans and keys kept.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), shape(v))).collect(),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::String(_) => "string".into(),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_passkey_is_registered_listed_renamed_and_deleted() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let profile = app.profile(&t.access).await;
    assert_eq!(profile["mfa_enabled"], false);

    let (challenge_id, options) = register_start(&app, &t.access).await;
    assert_eq!(options["rp"]["id"], "localhost", "{options}");
    assert_eq!(options["rp"]["name"], "BlitzPulse", "{options}");
    assert_eq!(options["user"]["name"], e, "{options}");
    let handle = URL_SAFE_NO_PAD
        .decode(options["user"]["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        uuid::Uuid::from_slice(&handle).unwrap().to_string(),
        profile["id"].as_str().unwrap(),
        "the user handle is the user's id"
    );
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert_eq!(options["timeout"], 300_000);
    let mut laptop = Authenticator::new();
    let credential = laptop.create(&options);
    let res = register_finish(&app, &t.access, &challenge_id, "  Laptop ", &credential).await;
    let added = expect_status(res, 201, "register/finish").await;
    assert_passkey(&added, "Laptop");
    // The ceremony was used.
    let again = register_finish(&app, &t.access, &challenge_id, "Laptop", &credential).await;
    expect_error(again, 400, "invalid_challenge").await;

    // The second registration excludes the first credential.
    let (_, options) = register_start(&app, &t.access).await;
    let excluded = options["excludeCredentials"].as_array().expect("a list");
    assert_eq!(excluded.len(), 1, "{options}");
    assert_eq!(excluded[0]["id"], b64(&laptop.credentials[0].id));
    let phone = register(&app, &t.access, &mut Authenticator::new(), "Phone").await;

    let listed = list(&app, &t.access).await;
    assert_eq!(listed, [added.clone(), phone.clone()], "oldest first");
    assert_eq!(app.profile(&t.access).await["mfa_enabled"], true);
    let entitlements = expect_status(
        app.get_bearer("/api/auth/me/entitlements", &t.access).await,
        200,
        "entitlements",
    )
    .await;
    assert_eq!(entitlements["mfa_enabled"], true);

    // Rename.
    let path = format!("{LIST}/{}", added["id"].as_str().unwrap());
    let res = app
        .send_bearer(
            Method::PATCH,
            &path,
            &t.access,
            Some(&json!({"name": "Work laptop"})),
        )
        .await;
    let renamed = expect_status(res, 200, "rename").await;
    assert_passkey(&renamed, "Work laptop");
    assert_eq!(renamed["id"], added["id"]);
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(65)}),
        json!({}),
    ] {
        let res = app
            .send_bearer(Method::PATCH, &path, &t.access, Some(&bad))
            .await;
        expect_validation(res).await;
    }

    // Delete both; the last one turns MFA off.
    let res = app
        .send_bearer(Method::DELETE, &path, &t.access, None)
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.profile(&t.access).await["mfa_enabled"],
        true,
        "one left"
    );
    let phone_path = format!("{LIST}/{}", phone["id"].as_str().unwrap());
    let res = app
        .send_bearer(Method::DELETE, &phone_path, &t.access, None)
        .await;
    assert_eq!(res.status(), 204);
    assert!(list(&app, &t.access).await.is_empty());
    assert_eq!(app.profile(&t.access).await["mfa_enabled"], false);
    let res = app
        .send_bearer(Method::DELETE, &path, &t.access, None)
        .await;
    expect_error(res, 404, "not_found").await;
    let res = app
        .send_bearer(Method::PATCH, &path, &t.access, Some(&json!({"name": "x"})))
        .await;
    expect_error(res, 404, "not_found").await;
    let res = app
        .send_bearer(
            Method::DELETE,
            &format!("{LIST}/not-an-id"),
            &t.access,
            None,
        )
        .await;
    expect_error(res, 404, "not_found").await;

    let types = event_types(&app, &t.access).await;
    assert_eq!(
        types[..4],
        [
            "passkey_removed",
            "passkey_removed",
            "passkey_added",
            "passkey_added"
        ],
        "{types:?}"
    );
    // The deleted credential logs in no more.
    let (challenge_id, options) = login_start(&app, None).await;
    let stale = laptop.get(&options);
    let res = login_finish(&app, &challenge_id, &stale).await;
    expect_error(res, 401, "invalid_credentials").await;
}

#[actix_web::test]
async fn passkeys_are_managed_from_a_session_only() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let key = app.new_api_key(&t.access).await;
    for (method, path) in [
        (Method::POST, REGISTER_START),
        (Method::POST, REGISTER_FINISH),
        (Method::GET, LIST),
        (
            Method::PATCH,
            "/api/auth/passkeys/01938f6e-7a1b-7c3d-9e4f-5a6b7c8d9e0f",
        ),
        (
            Method::DELETE,
            "/api/auth/passkeys/01938f6e-7a1b-7c3d-9e4f-5a6b7c8d9e0f",
        ),
    ] {
        let res = app
            .send_bearer(method.clone(), path, &key, Some(&json!({"name": "x"})))
            .await;
        expect_error(res, 403, "session_required").await;
        let res = reqwest::Client::new()
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        expect_error(res, 401, "not_authenticated").await;
    }
    let res = app.get("/api/auth/passkeys/login/start").await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
}

#[actix_web::test]
async fn usernameless_and_email_logins_open_multi_factor_sessions() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    let added = register(&app, &t.access, &mut laptop, "Laptop").await;

    // Usernameless: nothing listed, the authenticator names the user.
    let (_, options) = login_start(&app, None).await;
    assert_eq!(options["allowCredentials"], json!([]), "{options}");
    assert_eq!(options["userVerification"], "required");
    assert_eq!(options["rpId"], "localhost");
    let first = passkey_login(&app, None, &mut laptop).await;
    let me = app.profile(&first.access).await;
    assert_eq!(me["email"], e);

    // With the email: its credential listed.
    let (_, options) = login_start(&app, Some(&e.to_uppercase())).await;
    let allowed = options["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1, "{options}");
    assert_eq!(allowed[0]["id"], b64(&laptop.credentials[0].id));
    let second = passkey_login(&app, Some(&e), &mut laptop).await;

    let listed = sessions(&app, &second.access).await;
    for t in [&first, &second] {
        let s = listed
            .iter()
            .find(|s| s["id"] == sid(t).as_str())
            .expect("the passkey session is listed");
        assert_eq!(s["mfa"], true, "a passkey is two factors: {s}");
    }
    let password_session = listed.iter().find(|s| s["id"] == sid(&t).as_str()).unwrap();
    assert_eq!(password_session["mfa"], false);
    let types = event_types(&app, &second.access).await;
    assert_eq!(types[..3], ["login", "login", "passkey_added"], "{types:?}");
    let used = &list(&app, &second.access).await[0];
    assert_eq!(used["id"], added["id"]);
    assert_rfc3339_z(&used["last_used_at"], "last_used_at");
    // The session works and refreshes like any other.
    let res = app.refresh_raw(&second.refresh).await;
    expect_status(res, 200, "refresh").await;
}

#[actix_web::test]
async fn a_passkey_is_the_second_factor_after_a_password() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    register(&app, &t.access, &mut laptop, "Laptop").await;

    // The password alone no longer signs in.
    let pending = login_pending(&app, &e).await;
    let res = app.post_bearer(MFA_START, &pending, None).await;
    let (challenge_id, options) = options_of(res, "mfa/passkey/start").await;
    assert_eq!(options["allowCredentials"].as_array().unwrap().len(), 1);
    // A wrong answer: an assertion made for another ceremony.
    let (_, other) = options_of(
        app.post_bearer(MFA_START, &pending, None).await,
        "another start",
    )
    .await;
    let stray = laptop.get(&other);
    let res = challenge(
        &app,
        &pending,
        &json!({"challenge_id": challenge_id, "credential": stray}),
    )
    .await;
    expect_error(res, 401, "invalid_code").await;
    // The ceremony was used by the wrong answer; a fresh one with the right answer signs in.
    let (challenge_id, options) = options_of(
        app.post_bearer(MFA_START, &pending, None).await,
        "mfa/passkey/start",
    )
    .await;
    let credential = laptop.get(&options);
    let body = json!({"challenge_id": challenge_id, "credential": credential});
    let signed_in = expect_signed_in(challenge(&app, &pending, &body).await).await;
    let listed = sessions(&app, &signed_in.access).await;
    let s = listed
        .iter()
        .find(|s| s["id"] == sid(&signed_in).as_str())
        .unwrap();
    assert_eq!(s["mfa"], true);
    let types = event_types(&app, &signed_in.access).await;
    assert_eq!(types[..2], ["login", "mfa_failed"], "{types:?}");
    // The pending token is spent.
    let res = challenge(&app, &pending, &body).await;
    expect_error(res, 401, "invalid_token").await;
    // An unknown ceremony at the challenge.
    let pending = login_pending(&app, &e).await;
    let body =
        json!({"challenge_id": "01938f6e-7a1b-7c3d-9e4f-5a6b7c8d9e0f", "credential": credential});
    expect_error(
        challenge(&app, &pending, &body).await,
        400,
        "invalid_challenge",
    )
    .await;
    let res = challenge(&app, &pending, &json!({"challenge_id": challenge_id})).await;
    let detail = expect_validation(res).await;
    assert_eq!(detail[0]["loc"], json!(["body", "credential"]));
    // Neither the cookie nor an access token starts the ceremony.
    expect_error(
        app.post_bearer(MFA_START, &signed_in.access, None).await,
        401,
        "invalid_token",
    )
    .await;
    expect_error(
        app.post_json(MFA_START, &json!({})).await,
        401,
        "not_authenticated",
    )
    .await;

    // A user with TOTP and no passkey has no passkey to ask for.
    let (e, _, _, _) = enrolled_user(&app).await;
    let pending = login_pending(&app, &e).await;
    let res = app.post_bearer(MFA_START, &pending, None).await;
    expect_error(res, 400, "no_passkey").await;
}

#[actix_web::test]
async fn a_replayed_assertion_is_refused() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    register(&app, &t.access, &mut laptop, "Laptop").await;
    let (challenge_id, options) = login_start(&app, Some(&e)).await;
    let credential = laptop.get(&options);
    expect_status(
        login_finish(&app, &challenge_id, &credential).await,
        200,
        "login",
    )
    .await;
    // The same request again: its ceremony is used.
    let res = login_finish(&app, &challenge_id, &credential).await;
    expect_error(res, 400, "invalid_challenge").await;
    // The same assertion for a new ceremony, named or usernameless: it signed another challenge.
    for email in [Some(e.as_str()), None] {
        let (challenge_id, _) = login_start(&app, email).await;
        let res = login_finish(&app, &challenge_id, &credential).await;
        expect_error(res, 401, "invalid_credentials").await;
    }
    // Garbage where the credential goes, or no ceremony at all.
    let (challenge_id, _) = login_start(&app, Some(&e)).await;
    let res = login_finish(&app, &challenge_id, &json!({"id": "x"})).await;
    expect_error(res, 401, "invalid_credentials").await;
    let res = login_finish(&app, &challenge_id, &credential).await;
    expect_error(res, 400, "invalid_challenge").await;
    let res = login_finish(&app, "not-a-challenge", &credential).await;
    expect_error(res, 400, "invalid_challenge").await;
    let types = event_types(&app, &t.access).await;
    assert_eq!(types[..2], ["login_failed", "login_failed"], "{types:?}");
}

#[actix_web::test]
async fn another_accounts_credential_is_refused_and_belongs_to_it_alone() {
    let app = spawn_app().await;
    let (ada_email, ada) = app.new_user().await;
    let (bob_email, bob) = app.new_user().await;
    let mut ada_key = Authenticator::new();
    let mut bob_key = Authenticator::new();
    register(&app, &ada.access, &mut ada_key, "Ada's").await;
    register(&app, &bob.access, &mut bob_key, "Bob's").await;

    // Bob's authenticator answers a login for Ada's email.
    let (challenge_id, options) = login_start(&app, Some(&ada_email)).await;
    let foreign = bob_key.get_listing_mine(&options);
    let res = login_finish(&app, &challenge_id, &foreign).await;
    expect_error(res, 401, "invalid_credentials").await;
    // Usernameless, Bob's credential claiming to be Ada's (her user handle).
    let (challenge_id, options) = login_start(&app, None).await;
    let mut claimed = bob_key.get(&options);
    claimed["response"]["userHandle"] = json!(b64(&ada_key.credentials[0].handle));
    let res = login_finish(&app, &challenge_id, &claimed).await;
    expect_error(res, 401, "invalid_credentials").await;
    assert_eq!(event_types(&app, &ada.access).await[0], "login_failed");
    assert_eq!(event_types(&app, &bob.access).await[0], "login_failed");

    // Ada's credential id registered to Bob: with attestation "none" (what browsers send by
    // default) a client can present any credential id and public key it has seen, signed by
    // nothing. The registration verifies; the global index refuses it.
    let (challenge_id, options) = register_start(&app, &bob.access).await;
    let forged = none_attestation(&ada_key.credentials[0], &options);
    let res = register_finish(&app, &bob.access, &challenge_id, "Not mine", &forged).await;
    expect_error(res, 409, "passkey_exists").await;
    assert_eq!(list(&app, &bob.access).await.len(), 1, "nothing was added");
    // The same forgery of a credential nobody has is taken: the index, not the form, decided.
    let (challenge_id, options) = register_start(&app, &bob.access).await;
    let mut unheard = ada_key.credentials[0].clone();
    unheard.auth_data[55] ^= 0xff;
    unheard.id[0] ^= 0xff;
    let forged = none_attestation(&unheard, &options);
    let res = register_finish(&app, &bob.access, &challenge_id, "Forged", &forged).await;
    expect_status(res, 201, "a credential id of no one").await;
    // Ada's passkey still logs her in, and only her.
    let t = passkey_login(&app, None, &mut ada_key).await;
    assert_eq!(app.profile(&t.access).await["email"], ada_email);
    let _ = bob_email;
}

/// A registration answering the ceremony `options` with `credential`'s id and public key (its
/// `authData` from a genuine registration) and attestation "none": no signature, as any client
/// may send.
fn none_attestation(credential: &Made, options: &Value) -> Value {
    use serde_cbor_2::Value as Cbor;
    let object = Cbor::Map(
        [
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(Default::default())),
            (
                Cbor::Text("authData".into()),
                Cbor::Bytes(credential.auth_data.clone()),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let client_data = json!({
        "type": "webauthn.create",
        "challenge": options["challenge"],
        "origin": ORIGIN,
        "crossOrigin": false,
    });
    json!({
        "id": b64(&credential.id),
        "rawId": b64(&credential.id),
        "type": "public-key",
        "response": {
            "attestationObject": b64(&serde_cbor_2::to_vec(&object).unwrap()),
            "clientDataJSON": b64(client_data.to_string().as_bytes()),
        },
        "clientExtensionResults": {},
    })
}

#[actix_web::test]
async fn an_expired_ceremony_is_refused() {
    let app = spawn_app_with(|c| c.webauthn.challenge_ttl_seconds = 1).await;
    let (e, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    let (challenge_id, options) = register_start(&app, &t.access).await;
    assert_eq!(
        options["timeout"], 1_000,
        "the browser is told the same lifetime"
    );
    let credential = laptop.create(&options);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let res = register_finish(&app, &t.access, &challenge_id, "Late", &credential).await;
    expect_error(res, 400, "invalid_challenge").await;
    register(&app, &t.access, &mut laptop, "Laptop").await;
    for email in [Some(e.as_str()), None] {
        let (challenge_id, options) = login_start(&app, email).await;
        let credential = laptop.get(&options);
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let res = login_finish(&app, &challenge_id, &credential).await;
        expect_error(res, 400, "invalid_challenge").await;
    }
    // In time, it works.
    passkey_login(&app, Some(&e), &mut laptop).await;
}

#[actix_web::test]
async fn a_cloned_authenticator_is_refused_and_the_operator_told() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let env = [
        ("RUST_LOG", "warn,bp_auth::audit=info"),
        ("BP_AUTH__LOG__FORMAT", "json"),
    ];
    let server = ServerProcess::start_logged(dir.path(), &env, &log).await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    let mut key = Authenticator::token();
    register(&server, &t.access, &mut key, "Security key").await;
    // A copy taken now, with the counter where it is; the original is used twice after.
    let mut clone = key.clone_device();
    for email in [Some(e.as_str()), None] {
        passkey_login(&server, email, &mut key).await;
    }
    for email in [Some(e.as_str()), None] {
        let (challenge_id, options) = login_start(&server, email).await;
        let copied = clone.get(&options);
        let res = login_finish(&server, &challenge_id, &copied).await;
        expect_error(res, 401, "invalid_credentials").await;
    }
    // The genuine authenticator goes on working.
    let t = passkey_login(&server, None, &mut key).await;
    let types = event_types(&server, &t.access).await;
    assert_eq!(
        types[..3],
        ["login", "login_failed", "login_failed"],
        "{types:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let alerts = text
            .lines()
            .filter(|l| l.contains("passkey_refused") && l.contains("counter_went_back"))
            .collect::<Vec<_>>();
        if alerts.len() >= 2 {
            assert!(alerts.iter().all(|l| l.contains("WARN")), "{alerts:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert in the log:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn an_email_without_passkeys_gets_options_of_the_same_shape() {
    let app = spawn_app().await;
    let (with_passkey, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    register(&app, &t.access, &mut laptop, "Laptop").await;
    let (without_passkey, _) = app.new_user().await;
    let (_, real) = login_start(&app, Some(&with_passkey)).await;
    // Decoys list 0 to 3 credentials; find unknown emails whose decoys list one, as the real
    // account does, and compare everything else.
    let mut found = None;
    for i in 0..40 {
        let ghost = format!("ghost-{i}-{}", email());
        let (_, options) = login_start(&app, Some(&ghost)).await;
        let (_, again) = login_start(&app, Some(&ghost)).await;
        assert_eq!(
            options["allowCredentials"], again["allowCredentials"],
            "the same decoys every time"
        );
        assert_ne!(options["challenge"], again["challenge"]);
        if options["allowCredentials"].as_array().unwrap().len() == 1 {
            found = Some((ghost, options));
            break;
        }
    }
    let (ghost, decoy) = found.expect("a decoy with one credential among 40 emails");
    assert_eq!(shape(&decoy), shape(&real), "{decoy} / {real}");
    let mut keys: Vec<&str> = real
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "allowCredentials",
            "challenge",
            "rpId",
            "timeout",
            "userVerification"
        ],
        "{real}"
    );
    // A registered email without passkeys is answered like an unknown one.
    let (_, none) = login_start(&app, Some(&without_passkey)).await;
    let (_, none_again) = login_start(&app, Some(&without_passkey)).await;
    assert_eq!(none["allowCredentials"], none_again["allowCredentials"]);
    for options in [&none, &decoy] {
        let listed = options["allowCredentials"].as_array().unwrap();
        if let Some(first) = listed.first() {
            assert_eq!(shape(first), shape(&real["allowCredentials"][0]));
        }
    }
    // Finishing a decoy's ceremony is refused like a wrong assertion, whatever is sent.
    let (challenge_id, _) = login_start(&app, Some(&ghost)).await;
    let (_, genuine_options) = login_start(&app, Some(&with_passkey)).await;
    let answer = laptop.get(&genuine_options);
    let res = login_finish(&app, &challenge_id, &answer).await;
    expect_error(res, 401, "invalid_credentials").await;
    let res = login_finish(&app, &challenge_id, &answer).await;
    expect_error(res, 400, "invalid_challenge").await;
    // An email that does not parse is a validation error, as elsewhere.
    let res = app
        .post_json(LOGIN_START, &json!({"email": "not an email"}))
        .await;
    let detail = expect_validation(res).await;
    assert_eq!(detail[0]["loc"], json!(["body", "email"]));
    // No body, `{}` and `null` are all usernameless.
    for body in [None, Some(json!({})), Some(json!({"email": null}))] {
        let mut req = app.client().post(app.url(LOGIN_START));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let (_, options) = options_of(req.send().await.unwrap(), "usernameless").await;
        assert_eq!(options["allowCredentials"], json!([]), "{body:?}");
    }
}

#[actix_web::test]
async fn a_deactivated_account_is_told_so_only_after_the_assertion() {
    let app = spawn_app().await;
    let (e, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    register(&app, &t.access, &mut laptop, "Laptop").await;
    let res = app
        .post_bearer(
            "/api/auth/deactivate",
            &t.access,
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(res.status(), 204);
    // A wrong assertion: refused as any other.
    let (challenge_id, _) = login_start(&app, Some(&e)).await;
    let (_, other) = login_start(&app, Some(&e)).await;
    let stray = laptop.get(&other);
    let res = login_finish(&app, &challenge_id, &stray).await;
    expect_error(res, 401, "invalid_credentials").await;
    // The right one, by email or usernameless: deactivated.
    for email in [Some(e.as_str()), None] {
        let (challenge_id, options) = login_start(&app, email).await;
        let credential = laptop.get(&options);
        let res = login_finish(&app, &challenge_id, &credential).await;
        expect_error(res, 403, "account_deactivated").await;
    }
}

#[actix_web::test]
async fn failed_assertions_count_against_the_client_address() {
    let app = spawn_app_with(|c| c.rate_limit.login_failures_per_ip = 3).await;
    let (e, t) = app.new_user().await;
    let mut laptop = Authenticator::new();
    register(&app, &t.access, &mut laptop, "Laptop").await;
    for _ in 0..3 {
        let (challenge_id, _) = login_start(&app, Some("ghost@example.com")).await;
        let res = login_finish(&app, &challenge_id, &json!({"id": "x"})).await;
        expect_error(res, 401, "invalid_credentials").await;
    }
    let (challenge_id, options) = login_start(&app, Some(&e)).await;
    let credential = laptop.get(&options);
    let res = login_finish(&app, &challenge_id, &credential).await;
    assert_eq!(
        res.status(),
        429,
        "the right passkey too, while the address is throttled"
    );
    assert!(res.headers().contains_key("retry-after"));
    // So is a password login from there, which shares the count.
    assert_eq!(app.login_raw(&e, PASSWORD).await.status(), 429);
}

#[actix_web::test]
async fn bodies_are_checked_before_any_ceremony() {
    let app = spawn_app().await;
    let (_, t) = app.new_user().await;
    let (challenge_id, _) = register_start(&app, &t.access).await;
    let finish = |body: Value| {
        let app = &app;
        let access = t.access.clone();
        async move { app.post_bearer(REGISTER_FINISH, &access, Some(&body)).await }
    };
    for (body, loc, kind) in [
        (
            json!({"challenge_id": challenge_id, "name": "x"}),
            "credential",
            "missing",
        ),
        (
            json!({"challenge_id": challenge_id, "name": "x", "credential": "abc"}),
            "credential",
            "dict_type",
        ),
        (
            json!({"challenge_id": challenge_id, "name": "x\u{7}", "credential": {}}),
            "name",
            "value_error",
        ),
        (
            json!({"challenge_id": challenge_id, "name": "x".repeat(65), "credential": {}}),
            "name",
            "string_too_long",
        ),
        (
            json!({"name": "x", "credential": {}}),
            "challenge_id",
            "missing",
        ),
        (
            json!({"challenge_id": 5, "name": "x", "credential": {}}),
            "challenge_id",
            "string_type",
        ),
    ] {
        let detail = expect_validation(finish(body.clone()).await).await;
        assert_eq!(detail[0]["loc"], json!(["body", loc]), "{body}");
        assert_eq!(detail[0]["type"], kind, "{body}");
    }
    // A credential object that is no registration: refused as one that fails verification.
    let res =
        finish(json!({"challenge_id": challenge_id, "name": "x", "credential": {"id": 1}})).await;
    expect_error(res, 400, "invalid_passkey").await;
    let res = finish(json!({"challenge_id": "nope", "name": "x", "credential": {}})).await;
    expect_error(res, 400, "invalid_challenge").await;
    // Not JSON, and too large.
    let res = app
        .post_body(LOGIN_FINISH, "application/json", "{not json")
        .await;
    let detail = expect_validation(res).await;
    assert_eq!(detail[0]["type"], "json_invalid");
    let big = json!({"challenge_id": "x", "credential": {"pad": "x".repeat(20_000)}});
    let res = app.post_json(LOGIN_FINISH, &big).await;
    expect_error(res, 413, "payload_too_large").await;
    let res = app
        .post_json(LOGIN_FINISH, &json!({"challenge_id": "x"}))
        .await;
    expect_validation(res).await;
}

#[actix_web::test]
async fn a_passkey_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    let mut laptop = Authenticator::new();
    let added = register(&server, &t.access, &mut laptop, "Laptop").await;
    passkey_login(&server, None, &mut laptop).await;
    server.kill();

    let server = ServerProcess::start(dir.path(), &[]).await;
    // The credential id index and the stored counter came back: usernameless, then by email.
    let t = passkey_login(&server, None, &mut laptop).await;
    passkey_login(&server, Some(&e), &mut laptop).await;
    let listed = list(&server, &t.access).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], added["id"]);
    assert_eq!(server.profile(&t.access).await["mfa_enabled"], true);
}

#[actix_web::test]
async fn the_documented_endpoints_are_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = expect_status(app.get("/openapi.json").await, 200, "openapi").await;
    for (path, method, statuses) in [
        (REGISTER_START, "post", &["200", "401", "403", "409"][..]),
        (
            REGISTER_FINISH,
            "post",
            &["201", "400", "401", "403", "409", "413", "422"][..],
        ),
        (LIST, "get", &["200", "401", "403"][..]),
        (
            "/api/auth/passkeys/{id}",
            "patch",
            &["200", "401", "403", "404", "413", "422"][..],
        ),
        (
            "/api/auth/passkeys/{id}",
            "delete",
            &["204", "401", "403", "404"][..],
        ),
        (
            LOGIN_START,
            "post",
            &["200", "403", "413", "422", "429"][..],
        ),
        (
            LOGIN_FINISH,
            "post",
            &["200", "400", "401", "403", "413", "422", "429"][..],
        ),
        (MFA_START, "post", &["200", "400", "401", "429"][..]),
        (
            "/api/auth/mfa/challenge",
            "post",
            &["200", "400", "401"][..],
        ),
    ] {
        let op = &doc["paths"][path][method];
        for status in statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    assert!(
        doc["paths"][LOGIN_START]["post"]["requestBody"]["required"].is_null(),
        "an optional body"
    );
}

#[actix_web::test]
async fn passkeys_move_with_an_export_and_an_admin_mfa_reset_removes_them() {
    use crate::operate::{bp_auth_ok, copy_keys};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    let mut laptop = Authenticator::new();
    register(&server, &t.access, &mut laptop, "Laptop").await;

    // Exported from the running server and imported elsewhere, the passkey still logs in
    // usernameless: its credential id was claimed again with the user.
    let out = dir.path().join("export.jsonl");
    let out_arg = out.to_str().unwrap();
    bp_auth_ok(dir.path(), &["admin", "export", "--out", out_arg]);
    let restored = tempfile::tempdir().unwrap();
    copy_keys(dir.path(), restored.path());
    bp_auth_ok(restored.path(), &["admin", "import", "--in", out_arg]);
    {
        let other = ServerProcess::start(restored.path(), &[]).await;
        let t = passkey_login(&other, None, &mut laptop).await;
        assert_eq!(list(&other, &t.access).await.len(), 1);
    }

    // The operator's reset removes every second factor, passkeys too, on the running server.
    let run = bp_auth_ok(dir.path(), &["admin", "mfa", "reset", &e]);
    assert!(run.stdout.contains("\"mfa_enabled\":false"), "{run:?}");
    assert!(list(&server, &t.access).await.is_empty());
    assert_eq!(server.profile(&t.access).await["mfa_enabled"], false);
    let (challenge_id, options) = login_start(&server, None).await;
    let credential = laptop.get(&options);
    let res = login_finish(&server, &challenge_id, &credential).await;
    expect_error(res, 401, "invalid_credentials").await;
    // The account can enrol again.
    register(&server, &t.access, &mut laptop, "Laptop again").await;
}
