//! Cross-site defences seen from a browser's side: forwarding headers believed only from
//! trusted proxies, secrets kept from cross-site cookie requests, login CSRF, and
//! `Vary: Origin` on every answer that depends on the `Origin`.

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const LISTED: &str = "https://app.example.com";

/// How often `Vary` names `Origin`, across all its lines.
fn vary_origin_count(h: &HeaderMap) -> usize {
    h.get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|v| v.trim().eq_ignore_ascii_case("origin"))
        .count()
}

fn assert_varies_by_origin(h: &HeaderMap, what: &str) {
    assert_eq!(
        vary_origin_count(h),
        1,
        "{what}: Vary names Origin once: {h:?}"
    );
}

/// A cookie-authenticated key rotation (a change) with `origin` and extra `headers`.
async fn rotate(jar: &Client, app: &TestApp, origin: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = jar
        .post(app.url("/api/auth/api-key/rotate"))
        .header("origin", origin);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("rotate")
}

#[actix_web::test]
async fn forwarding_headers_from_an_untrusted_peer_do_not_move_the_servers_origin() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    let own_host = format!("127.0.0.1:{}", app.port);
    let https_own = format!("https://{own_host}");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("x-forwarded-proto", "https")], &https_own),
        (vec![("forwarded", "proto=https")], &https_own),
        (
            vec![("forwarded", "proto=https;host=evil.example")],
            "https://evil.example",
        ),
        (
            vec![
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
            "https://evil.example",
        ),
        (
            vec![("x-forwarded-host", "evil.example")],
            "http://evil.example",
        ),
    ];
    for (headers, origin) in &cases {
        let res = rotate(&jar, &app, origin, headers).await;
        assert_eq!(res.status(), 403, "{origin} with {headers:?}");
        expect_error(res, 403, "origin_not_allowed").await;
    }
    // The connection's own origin still passes, whatever the client claims besides.
    let own = format!("http://{own_host}");
    for (headers, _) in &cases {
        let res = rotate(&jar, &app, &own, headers).await;
        assert_eq!(res.status(), 200, "own origin with {headers:?}");
    }
}

#[actix_web::test]
async fn a_trusted_proxy_names_the_origin_the_client_addressed() {
    let app =
        spawn_app_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let e = email();
    app.register(&e).await;
    let (jar, _) = app.cookie_login(&e).await;
    let public = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "auth.example.com"),
    ];
    let res = rotate(&jar, &app, "https://auth.example.com", &public).await;
    assert_eq!(res.status(), 200, "X-Forwarded-Proto and -Host honoured");
    let res = rotate(
        &jar,
        &app,
        "https://auth.example.com",
        &[(
            "forwarded",
            "for=192.0.2.7;proto=https;host=auth.example.com",
        )],
    )
    .await;
    assert_eq!(res.status(), 200, "Forwarded honoured");
    // The proxy says the browser addressed auth.example.com: the backend's own address is now
    // another origin.
    let res = rotate(
        &jar,
        &app,
        &format!("http://127.0.0.1:{}", app.port),
        &public,
    )
    .await;
    expect_error(res, 403, "origin_not_allowed").await;
    let res = rotate(&jar, &app, "https://evil.example", &public).await;
    expect_error(res, 403, "origin_not_allowed").await;
    // Without forwarding headers the connection's own origin holds.
    let res = rotate(&jar, &app, &format!("http://127.0.0.1:{}", app.port), &[]).await;
    assert_eq!(res.status(), 200);
}

/// The four endpoints that create or reveal a secret, as (method, path, body).
fn secret_endpoints() -> [(Method, &'static str, Option<Value>); 4] {
    [
        (Method::GET, "/api/auth/api-key", None),
        (Method::POST, "/api/auth/api-key/rotate", None),
        (Method::POST, "/api/auth/mfa/totp/setup", None),
        (
            Method::POST,
            "/api/auth/mfa/totp/verify",
            Some(json!({"code": "000000"})),
        ),
    ]
}

async fn send(
    client: &Client,
    app: &TestApp,
    (method, path, body): &(Method, &str, Option<Value>),
    bearer: Option<&str>,
    fetch_site: Option<&str>,
) -> Response {
    let mut req = client.request(method.clone(), app.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(s) = fetch_site {
        req = req.header("sec-fetch-site", s);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.expect("request")
}

#[actix_web::test]
async fn secrets_are_not_handed_to_cross_site_cookie_requests() {
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let (jar, t) = app.cookie_login(&e).await;
    for endpoint in &secret_endpoints() {
        let res = send(&jar, &app, endpoint, None, Some("cross-site")).await;
        expect_error(res, 403, "origin_not_allowed").await;
    }
    // Nothing was created by the refused requests: the key is new to the next answer.
    let get = &secret_endpoints()[0];
    let res = send(&jar, &app, get, None, Some("same-origin")).await;
    let created = expect_status(res, 200, "GET api-key same-origin").await;
    assert!(created["key"].is_string(), "created only now: {created}");

    for site in [Some("same-origin"), Some("same-site"), Some("none"), None] {
        for endpoint in &secret_endpoints() {
            let res = send(&jar, &app, endpoint, None, site).await;
            let status = res.status().as_u16();
            let body = json_of(res).await;
            assert_ne!(status, 403, "{site:?} {}: {body}", endpoint.1);
            assert!(status < 500, "{site:?} {}: {body}", endpoint.1);
        }
    }
    // A bearer token is not attached by browsers on their own: no cross-site rule.
    let client = Client::new();
    for endpoint in &secret_endpoints() {
        let res = send(&client, &app, endpoint, Some(&t.access), Some("cross-site")).await;
        let status = res.status().as_u16();
        let body = json_of(res).await;
        assert_ne!(status, 403, "bearer {}: {body}", endpoint.1);
        assert!(status < 500, "bearer {}: {body}", endpoint.1);
    }
    // Endpoints that reveal no secret keep the usual rules.
    let res = jar
        .get(app.url("/api/auth/me"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 200);
}

async fn login_from(app: &TestApp, origin: Option<&str>, email: &str, password: &str) -> Response {
    let mut req = Client::new()
        .post(app.url("/api/auth/token"))
        .form(&[("username", email), ("password", password)]);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("login")
}

#[actix_web::test]
async fn a_login_from_a_foreign_origin_is_refused_before_the_password_counts() {
    let app = spawn_app_with(|c| {
        c.cors.allowed_origins = vec![LISTED.into()];
        c.rate_limit.login_failures_per_account = 2;
    })
    .await;
    let e = email();
    app.register(&e).await;
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "https://app.example.com.evil.example",
    ] {
        for password in ["wrong password 1", "wrong password 2", PASSWORD] {
            let res = login_from(&app, Some(origin), &e, password).await;
            assert!(res.headers().get("set-cookie").is_none(), "{origin}");
            assert_varies_by_origin(res.headers(), origin);
            expect_error(res, 403, "origin_not_allowed").await;
        }
    }
    // Twelve refused logins, eight of them with a wrong password: none counted towards the
    // limit of two.
    let own = format!("http://127.0.0.1:{}", app.port);
    for origin in [None, Some(own.as_str()), Some(LISTED)] {
        let res = login_from(&app, origin, &e, PASSWORD).await;
        assert_varies_by_origin(res.headers(), &format!("{origin:?}"));
        expect_status(res, 200, &format!("login from {origin:?}")).await;
    }
}

#[actix_web::test]
async fn answers_that_depend_on_the_origin_say_so() {
    // No CORS origins: the origin checks still make some answers depend on `Origin`.
    let app = spawn_app().await;
    let e = email();
    app.register(&e).await;
    let res = login_from(&app, None, &e, PASSWORD).await;
    assert_varies_by_origin(res.headers(), "login without Origin");
    let (jar, _) = app.cookie_login(&e).await;
    let res = jar
        .post(app.url("/api/auth/api-key/rotate"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status(), 200);
    assert_varies_by_origin(res.headers(), "a cookie change without Origin");
    let res = rotate(&jar, &app, "https://evil.example", &[]).await;
    assert_varies_by_origin(res.headers(), "a refused cookie change");

    // With CORS origins every answer depends on `Origin`, whether it was sent or not.
    let app = spawn_app_with(|c| c.cors.allowed_origins = vec![LISTED.into()]).await;
    let (_, t) = app.new_user().await;
    let c = Client::new();
    for origin in [None, Some(LISTED), Some("https://evil.example")] {
        let with = |req: reqwest::RequestBuilder| match origin {
            Some(o) => req.header("origin", o),
            None => req,
        };
        let responses = [
            ("healthz", with(c.get(app.url("/healthz")))),
            ("jwks", with(c.get(app.url("/.well-known/jwks.json")))),
            ("unknown path", with(c.get(app.url("/nowhere")))),
            (
                "me",
                with(c.get(app.url("/api/auth/me")).bearer_auth(&t.access)),
            ),
            ("401", with(c.get(app.url("/api/auth/me")))),
            (
                "entitlements",
                with(
                    c.get(app.url("/api/auth/me/entitlements"))
                        .bearer_auth(&t.access),
                ),
            ),
            (
                "preflight",
                with(c.request(Method::OPTIONS, app.url("/api/auth/me")))
                    .header("access-control-request-method", "GET"),
            ),
        ];
        for (what, req) in responses {
            let res = req.send().await.expect(what);
            assert!(res.status().as_u16() < 500, "{what}");
            assert_varies_by_origin(res.headers(), &format!("{what} from {origin:?}"));
        }
    }
}
