//! Cross-site defences seen from a browser's side: forwarding headers believed only from
//! trusted proxies.

use reqwest::{Client, Response};

use crate::helpers::*;

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
