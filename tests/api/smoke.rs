use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn register_login_me_refresh_logout() {
    let app = spawn_app().await;
    let e = email();
    let profile = app.register(&e).await;
    assert_eq!(profile["email"], e);
    let t = app.login(&e).await;
    let res = app.me(&t.access).await;
    assert_common_headers(res.headers());
    assert_eq!(res.status(), 200);
    let me = json_of(res).await;
    assert_eq!(me["id"], profile["id"]);
    let res = app.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200);
    let t2 = Tokens::from_json(&json_of(res).await);
    assert_ne!(t2.refresh, t.refresh);
    let res = app.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 401);
    assert_eq!(json_of(res).await["code"], "refresh_token_reused");
    let res = app.me(&t2.access).await;
    assert_eq!(res.status(), 401);
    assert_eq!(json_of(res).await["code"], "session_revoked");
    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}
