//! The scheme and host the client addressed, as the origin check needs them.
//!
//! actix's `connection_info()` believes `Forwarded`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` from any peer, so a client could name its own origin for the server's.
//! Here they count only from `server.trusted_proxies` (as `X-Forwarded-For` does in the
//! throttle); from anyone else the answer is the connection's own scheme and `Host`.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::HttpRequest;

/// Where the client believes it is talking to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// `http` or `https`, lowercase.
    pub scheme: String,
    /// `host[:port]` as the client wrote it.
    pub host: String,
}

impl Addressed {
    /// `scheme://host`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// The scheme and host of `req`, from the forwarding headers only if the TCP peer is one of
/// `trusted`.
pub fn addressed(req: &HttpRequest, trusted: &[IpAddr]) -> Addressed {
    let own_scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let own_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let from_proxy = req
        .peer_addr()
        .is_some_and(|peer| trusted.contains(&peer.ip()));
    if !from_proxy {
        return Addressed {
            scheme: own_scheme.into(),
            host: own_host,
        };
    }
    let scheme = forwarded_param(req, "proto")
        .or_else(|| last_value(req, "x-forwarded-proto"))
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| own_scheme.into());
    let host = forwarded_param(req, "host")
        .or_else(|| last_value(req, "x-forwarded-host"))
        .unwrap_or(own_host);
    Addressed { scheme, host }
}

/// The right-most value of a comma-separated header: the one the nearest proxy (the trusted
/// one) wrote, whatever the client put before it.
fn last_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .last()
        .map(str::to_string)
}

/// `param` of the right-most `Forwarded` element (RFC 7239) that has it.
fn forwarded_param(req: &HttpRequest, param: &str) -> Option<String> {
    req.headers()
        .get_all(header::FORWARDED)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(param)
                    .then(|| v.trim().trim_matches('"').to_string())
            })
        })
        .filter(|v| !v.is_empty())
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const PROXY: &str = "10.0.0.1";

    fn request(peer: &str) -> TestRequest {
        TestRequest::default()
            .peer_addr(format!("{peer}:40000").parse().unwrap())
            .insert_header((header::HOST, "auth.example.com"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header(("x-forwarded-host", "evil.example"))
    }

    fn trusted() -> Vec<IpAddr> {
        vec![PROXY.parse().unwrap()]
    }

    #[test]
    fn forwarding_headers_from_other_peers_are_ignored() {
        let req = request("192.0.2.7")
            .insert_header((header::FORWARDED, "proto=https;host=evil.example"))
            .to_http_request();
        assert_eq!(
            addressed(&req, &trusted()).origin(),
            "http://auth.example.com"
        );
    }

    #[test]
    fn a_trusted_proxy_names_scheme_and_host() {
        let req = request(PROXY).to_http_request();
        assert_eq!(addressed(&req, &trusted()).origin(), "https://evil.example");
    }

    #[test]
    fn forwarded_wins_and_its_last_element_counts() {
        let req = request(PROXY)
            .insert_header((
                header::FORWARDED,
                "proto=http;host=client.example, for=192.0.2.7;Proto=HTTPS;host=\"app.example:8443\"",
            ))
            .to_http_request();
        assert_eq!(
            addressed(&req, &trusted()).origin(),
            "https://app.example:8443"
        );
    }

    #[test]
    fn the_last_forwarded_proto_counts() {
        let req = TestRequest::default()
            .peer_addr(format!("{PROXY}:40000").parse().unwrap())
            .insert_header((header::HOST, "auth.example.com"))
            .insert_header(("x-forwarded-proto", "http, https"))
            .to_http_request();
        assert_eq!(
            addressed(&req, &trusted()).origin(),
            "https://auth.example.com"
        );
    }
}
