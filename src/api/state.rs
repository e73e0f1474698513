//! What every handler shares, and why each piece is here.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::error::ApiError;
use super::throttle::Throttle;
use super::verifier::Verifier;
use crate::actors::messages::TouchApiKey;
use crate::actors::Directory;
use crate::clock;
use crate::config::Config;
use crate::domain::apikey;
use crate::domain::user::UserState;
use crate::domain::DomainError;
use crate::hashing::HashPool;

pub struct AppState {
    /// The way to every user's actor and published view: the handlers' one door to state.
    pub directory: Directory,
    /// Password hashing off the async threads, bounded, so a login flood sheds with 503
    /// instead of stalling every other request.
    pub hashes: HashPool,
    /// Read-only settings (lifetimes, cookie flags, CORS origins, plans).
    pub config: Arc<Config>,
    /// Per-address and per-account limits. Shared by every worker because an attacker's
    /// requests land on all of them.
    pub throttle: Throttle,
    /// The signing keys and the cache of tokens verified with them, replaced whole when keys
    /// rotate (SIGHUP), so a request sees one consistent set and no stale cache entry.
    pub keyring: ArcSwap<Verifier>,
    /// The OpenID Connect providers, with their cached discovery documents and keys.
    pub oidc: crate::oidc::Providers,
    /// `oidc.redirect_allowlist`, parsed once.
    pub redirects: Vec<crate::oidc::redirect::Allowed>,
}

impl AppState {
    pub fn keyring(&self) -> Arc<Verifier> {
        self.keyring.load_full()
    }

    /// The user an API key belongs to. A key whose checksum fails is refused before any
    /// lookup; a found key is checked against its user's current state, so a rotated or
    /// disabled key fails at once even if the cache still knows it.
    pub fn api_key_user(&self, key: &str) -> Result<Arc<UserState>, ApiError> {
        if !apikey::well_formed(key) {
            return Err(DomainError::InvalidToken.into());
        }
        let digest = apikey::digest(key);
        let user_id = self
            .directory
            .user_by_api_key(&digest)?
            .ok_or(DomainError::InvalidToken)?;
        let mut user = self.directory.view(user_id)?;
        if user
            .as_ref()
            .and_then(|u| u.usable_api_key(&digest))
            .is_none()
        {
            // The index names the user but the view lacks the key: on an engine other nodes
            // write, another node may have created it a moment ago, its notice not yet here.
            // The stored user decides (one revision read; then the index entry is forgotten).
            user = self.directory.view_as_stored(user_id)?;
        }
        let touch = match user.as_ref().and_then(|u| u.usable_api_key(&digest)) {
            Some(k) => k.touch_due(clock::now()),
            None => {
                self.directory.forget_api_key(&digest);
                return Err(DomainError::InvalidToken.into());
            }
        };
        let user = user.ok_or(DomainError::InvalidToken)?;
        if touch {
            self.directory.tell(user.id, TouchApiKey { digest });
        }
        Ok(user)
    }
}
