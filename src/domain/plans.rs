//! The plans BlitzPulse sells: what each grants. `config.toml` can redefine them or add more
//! (`[plans.<name>]`); these are the built-in catalogue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One plan's entitlements.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Plan {
    pub features: Vec<String>,
    pub limits: BTreeMap<String, i64>,
    /// Features granted only once the user's phone is verified.
    pub verified_phone_features: Vec<String>,
}

fn plan(features: &[&str], limits: &[(&str, i64)], phone: &[&str]) -> Plan {
    Plan {
        features: features.iter().map(|s| s.to_string()).collect(),
        limits: limits.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        verified_phone_features: phone.iter().map(|s| s.to_string()).collect(),
    }
}

/// The plans BlitzPulse sells; `config.toml` can redefine or add to them.
pub fn catalogue() -> BTreeMap<String, Plan> {
    BTreeMap::from([
        (
            "free".to_string(),
            plan(
                &["dashboard", "watchlists"],
                &[
                    ("api_requests_per_day", 1_000),
                    ("watchlists", 3),
                    ("alerts", 5),
                ],
                &["sms_alerts"],
            ),
        ),
        (
            "pro".to_string(),
            plan(
                &["dashboard", "watchlists", "alerts", "api_access", "exports"],
                &[
                    ("api_requests_per_day", 50_000),
                    ("watchlists", 50),
                    ("alerts", 200),
                ],
                &["sms_alerts"],
            ),
        ),
        (
            "enterprise".to_string(),
            plan(
                &[
                    "dashboard",
                    "watchlists",
                    "alerts",
                    "api_access",
                    "exports",
                    "sso",
                    "audit_log",
                ],
                &[
                    ("api_requests_per_day", 1_000_000),
                    ("watchlists", 1_000),
                    ("alerts", 10_000),
                ],
                &["sms_alerts", "voice_alerts"],
            ),
        ),
    ])
}
