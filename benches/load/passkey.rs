//! Passkeys for `passkey-login`: a software authenticator (webauthn-authenticator-rs's
//! `SoftPasskey`, as `tests/api/passkeys.rs` uses it) registers one credential per account in
//! setup, then signs each login's challenge as a browser's authenticator would. Every
//! registration and assertion is real, made from the options the server served, with the
//! origin of the default relying party.

use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::{Url, WebauthnAuthenticator};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

use crate::wire::Wire;

/// The default relying party's origin (`webauthn.rp_origins`).
const ORIGIN: &str = "http://localhost:8080";

/// One account's authenticator.
pub(crate) struct Authenticator {
    device: SoftPasskey,
}

fn origin() -> Result<Url, String> {
    Url::parse(ORIGIN).map_err(|e| e.to_string())
}

/// `{"challenge_id", "publicKey"}` of a ceremony's start.
fn options(body: &[u8]) -> Result<(String, Value), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("options JSON: {e}"))?;
    let id = v["challenge_id"]
        .as_str()
        .ok_or_else(|| format!("no challenge_id in {v}"))?
        .to_string();
    Ok((id, v["publicKey"].clone()))
}

/// Registers a passkey for the signed-in account (`access`); its authenticator.
pub(crate) async fn register(wire: &mut Wire, access: &str) -> Result<Authenticator, String> {
    let t = wire.target().clone();
    let start = t.post_json(
        "/api/auth/passkeys/register/start",
        &json!({}),
        Some(access),
    );
    wire.send_2xx(&start).await?;
    let (challenge_id, public_key) = options(wire.body())?;
    let opts: CreationChallengeResponse =
        serde_json::from_value(json!({ "publicKey": public_key })).map_err(|e| e.to_string())?;
    let mut device = SoftPasskey::new(true);
    let credential = device
        .do_registration(origin()?, opts)
        .map_err(|e| format!("the authenticator did not register: {e:?}"))?;
    let body = json!({"challenge_id": challenge_id, "name": "bench", "credential": credential});
    let finish = t.post_json("/api/auth/passkeys/register/finish", &body, Some(access));
    wire.send_2xx(&finish).await?;
    Ok(Authenticator { device })
}

/// A passkey login by email: start, sign, finish; Ok once the tokens are answered.
pub(crate) async fn login(
    wire: &mut Wire,
    email: &str,
    authenticator: &mut Authenticator,
) -> Result<(), String> {
    let t = wire.target().clone();
    let start = t.post_json(
        "/api/auth/passkeys/login/start",
        &json!({ "email": email }),
        None,
    );
    wire.send_2xx(&start).await?;
    let (challenge_id, public_key) = options(wire.body())?;
    let opts: RequestChallengeResponse =
        serde_json::from_value(json!({ "publicKey": public_key })).map_err(|e| e.to_string())?;
    let credential = authenticator
        .device
        .do_authentication(origin()?, opts)
        .map_err(|e| format!("the authenticator did not sign: {e:?}"))?;
    let body = json!({"challenge_id": challenge_id, "credential": credential});
    let finish = t.post_json("/api/auth/passkeys/login/finish", &body, None);
    wire.send_2xx(&finish).await
}
