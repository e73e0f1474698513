//! The access envelope: what a user may do, derived from the tenant's plan, the user's role,
//! status and verified phone. Pure, so the ETag is a function of exactly what is shown.

use std::collections::BTreeMap;

use serde::Serialize;

use super::plans::Plan;
use super::secrets::sha256;
use super::user::{Status, UserState};

/// `GET /api/auth/me/entitlements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlements {
    pub user_id: String,
    pub tenant_id: String,
    pub plan: String,
    pub role: &'static str,
    pub status: &'static str,
    /// Sorted, without duplicates.
    pub features: Vec<String>,
    pub limits: BTreeMap<String, i64>,
    pub phone_verified: bool,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    pub api_key_active: bool,
}

impl Entitlements {
    /// A deactivated user keeps their plan on record but is entitled to nothing. A plan that is
    /// no longer configured grants nothing rather than failing.
    pub fn derive(user: &UserState, plan: Option<&Plan>) -> Self {
        let active = user.status == Status::Active;
        let mut features = Vec::new();
        let mut limits = BTreeMap::new();
        if let (true, Some(plan)) = (active, plan) {
            features.extend(plan.features.iter().cloned());
            if user.phone_verified {
                features.extend(plan.verified_phone_features.iter().cloned());
            }
            limits = plan.limits.clone();
        }
        features.sort();
        features.dedup();
        Self {
            user_id: user.id.to_string(),
            tenant_id: user.tenant.id.to_string(),
            plan: user.tenant.plan.clone(),
            role: user.role.as_str(),
            status: user.status.as_str(),
            features,
            limits,
            phone_verified: user.phone_verified,
            email_verified: user.email_verified,
            mfa_enabled: user.mfa_enabled(),
            api_key_active: user.api_key.as_ref().is_some_and(|k| !k.disabled),
        }
    }

    /// A weak validator that changes whenever anything shown changes.
    pub fn etag(&self) -> String {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let digest = sha256(&body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("W/\"{hex}\"")
    }
}

/// RFC 9110 `If-None-Match` with weak comparison: a list of entity tags, or `*`.
pub fn if_none_match_hits(header: &str, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || (!t.is_empty() && opaque(t) == ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credentials::Email;
    use crate::domain::time::Timestamp;
    use crate::domain::user::NewUser;

    fn user() -> UserState {
        UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: None,
                phone: Some("+447700900123".into()),
                password_hash: String::new(),
            },
            Timestamp(0),
        )
    }

    fn free() -> Plan {
        Plan {
            features: vec!["watchlists".into(), "dashboard".into()],
            limits: BTreeMap::from([("watchlists".into(), 3)]),
            verified_phone_features: vec!["sms_alerts".into()],
        }
    }

    #[test]
    fn phone_verification_adds_features_and_changes_the_etag() {
        let mut u = user();
        let before = Entitlements::derive(&u, Some(&free()));
        assert_eq!(before.features, vec!["dashboard", "watchlists"]);
        u.phone_verified = true;
        let after = Entitlements::derive(&u, Some(&free()));
        assert_eq!(
            after.features,
            vec!["dashboard", "sms_alerts", "watchlists"]
        );
        assert_ne!(before.etag(), after.etag());
        assert_eq!(after.etag(), Entitlements::derive(&u, Some(&free())).etag());
    }

    #[test]
    fn deactivated_users_get_nothing() {
        let mut u = user();
        u.status = Status::Deactivated;
        let e = Entitlements::derive(&u, Some(&free()));
        assert!(e.features.is_empty() && e.limits.is_empty());
        assert_eq!(e.status, "deactivated");
    }

    #[test]
    fn weak_comparison_lists_and_star() {
        let tag = "W/\"abc\"";
        assert!(if_none_match_hits("W/\"abc\"", tag));
        assert!(if_none_match_hits("\"abc\"", tag));
        assert!(if_none_match_hits("\"x\", W/\"abc\"", tag));
        assert!(if_none_match_hits("*", tag));
        assert!(!if_none_match_hits("\"abd\"", tag));
        assert!(!if_none_match_hits("", tag));
    }
}
