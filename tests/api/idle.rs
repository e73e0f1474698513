//! Idle actors are stopped, and reloaded from their snapshot on the next request.

use std::time::Duration;

use crate::helpers::*;

async fn resident(app: &TestApp) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("bp_resident_actors "))
        .and_then(|v| v.trim().parse().ok())
        .expect("bp_resident_actors in /metrics")
}

#[actix_web::test]
async fn idle_actors_retire_and_reload_from_their_snapshot() {
    let app = spawn_app_with(|c| c.storage.actor_idle_seconds = 1).await;
    let (_, tokens) = app.new_user().await;
    assert_eq!(resident(&app).await, 1);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while resident(&app).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle actor was never retired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Reading the profile reloads the user; its session is still live.
    assert_eq!(app.me(&tokens.access).await.status(), 200);
    assert_eq!(resident(&app).await, 1);
    // And the state it reloaded is the acknowledged one: the refresh chain continues.
    let res = app.refresh_raw(&tokens.refresh).await;
    assert_eq!(res.status(), 200);
}
