// The Telegram demo (sql/demo/telegram.json) as shipped, against the fake Bot API, whose
// webhook calls the real worker: /start makes the partner <id>@telegram and is answered,
// messages are stored, an out message starting with /telegram is sent back.
use pg_sync_tests::demos::{settle, Demo};
use pg_sync_tests::fakes::FakeServer;
use serde_json::{json, Value};
use std::time::Duration;

const BOT_TOKEN: &str = "4242:demo-bot-token";
const HOOK_SECRET: &str = "hook-secret-123";

/// What the bot sent: (chat id, text).
fn sent(tg: &FakeServer) -> Vec<(i64, String)> {
    tg.state()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["chat"]["id"].as_i64().unwrap(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A user writes to the bot (the fake delivers the update to the webhook).
async fn user_writes(
    tg: &FakeServer,
    user: i64,
    first_name: &str,
    username: Option<&str>,
    text: &str,
) {
    let mut from = json!({"id": user, "is_bot": false, "first_name": first_name});
    if let Some(u) = username {
        from["username"] = json!(u);
    }
    tg.post(
        "/_fake/updates",
        &[],
        &json!({"chat_id": user, "text": text, "from": from}),
    );
    settle(&[tg]).await;
}

/// (id, name) of the partner with this ref.
async fn partner(demo: &Demo, reference: &str) -> Option<(i64, String)> {
    demo.client
        .query_opt("SELECT id, name FROM partner WHERE ref = $1", &[&reference])
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

/// (direction, body, edited, sent) of a partner's messages, oldest first.
async fn messages(demo: &Demo, partner_id: i64) -> Vec<(String, String, bool, bool)> {
    demo.client
        .query(
            "SELECT direction, body, edited, sent_at IS NOT NULL FROM partner_message
             WHERE partner_id = $1 ORDER BY id",
            &[&partner_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn row(direction: &str, body: &str, edited: bool, sent: bool) -> (String, String, bool, bool) {
    (direction.to_string(), body.to_string(), edited, sent)
}

#[tokio::test]
async fn telegram_demo_against_a_fake_bot_api() {
    let tg = FakeServer::start("telegram", &["--token", BOT_TOKEN]);
    let mut demo = Demo::load("telegram", &["telegram_setup.sql"]).await;
    demo.secret("TELEGRAM_BOT_TOKEN", BOT_TOKEN).await;
    demo.secret("TELEGRAM_WEBHOOK_SECRET", HOOK_SECRET).await;
    demo.secret("TELEGRAM_BASE_URL", &tg.url("")).await;
    demo.activate().await;
    demo.start_worker().await;

    // SETUP_TELEGRAM points the bot's updates at the TELEGRAM webhook, with the secret.
    let hook = demo.webhook("TELEGRAM").await;
    let hook_token = hook.rsplit('/').next().unwrap().to_string();
    let masked = format!("{}/sync/webhook/***", demo.base_url);
    let (setup, result) = demo.press("SETUP_TELEGRAM").await;
    assert_eq!(result, json!({"webhook": masked}));
    let webhook = tg.state()["webhook"].clone();
    assert_eq!(webhook["url"], hook.as_str());
    assert_eq!(webhook["secret_token"], HOOK_SECRET);
    assert_eq!(
        webhook["allowed_updates"],
        json!(["message", "edited_message"])
    );
    // Its log says so with both tokens as ***: every sync_user reads sync.log, and with
    // them anyone could post updates the webhook takes for Telegram's.
    let lines = logs(&demo, Some(setup)).await;
    let line = |kind: &str, recipient: Option<&str>| {
        lines
            .iter()
            .filter(|(k, r, _)| k == kind && r.as_deref() == recipient)
            .map(|(_, _, m)| m.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        line("message", None).contains(&format!(
            "Telegram webhook set to {masked}, with a secret token"
        )),
        "{lines:?}"
    );
    assert_eq!(
        line("data_out", Some("telegram")),
        vec![format!(
            "POST {}/bot***/setWebhook\n{{\"url\": \"{masked}\", \"allowed_updates\": [\"message\", \"edited_message\"], \"secret_token\": \"***\"}}",
            tg.masked("", "")
        )]
    );

    // /start: a partner <user id>@telegram, welcomed.
    user_writes(&tg, 5001, "Ann", Some("ann"), "/start").await;
    let (ann, name) = partner(&demo, "5001@telegram")
        .await
        .expect("Ann's partner");
    assert_eq!(name, "Telegram: @ann");
    assert_eq!(
        sent(&tg),
        vec![(5001, "Hello! How can I help you?".to_string())]
    );
    assert_eq!(
        messages(&demo, ann).await,
        vec![row("out", "Hello! How can I help you?", false, true)]
    );
    // A second /start welcomes again but makes no second partner.
    user_writes(&tg, 5001, "Ann", Some("ann"), "/start").await;
    assert_eq!(
        demo.count("SELECT count(*) FROM partner WHERE ref = '5001@telegram'")
            .await,
        1
    );
    assert_eq!(sent(&tg).len(), 2);

    // Other messages are stored against the partner.
    user_writes(&tg, 5001, "Ann", Some("ann"), "My parcel has not arrived").await;
    user_writes(&tg, 5001, "Ann", Some("ann"), "/telegram is what I type?").await;
    let stored = messages(&demo, ann).await;
    assert_eq!(
        stored[2..],
        [
            row("in", "My parcel has not arrived", false, false),
            row("in", "/telegram is what I type?", false, false),
        ]
    );
    // An incoming message starting with /telegram is not echoed back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    demo.idle().await;
    assert_eq!(sent(&tg).len(), 2);
    assert_eq!(
        demo.count("SELECT count(*) FROM sync.job WHERE trigger_kind = 'db'")
            .await,
        0
    );

    // Someone who never sent /start (or whose /start was missed) gets a partner too,
    // named from the first and last name when there is no username.
    let http = reqwest::Client::new();
    let update = |id: i64, key: &str, text: &str| {
        json!({"update_id": 900 + id, key: {
            "message_id": 77, "date": 0, "text": text, "chat": {"id": id, "type": "private"},
            "from": {"id": id, "is_bot": false, "first_name": "Bo", "last_name": "Berg"}}})
    };
    let answer = http
        .post(&hook)
        .header("X-Telegram-Bot-Api-Secret-Token", HOOK_SECRET)
        .json(&update(6002, "message", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (bo, name) = partner(&demo, "6002@telegram").await.expect("Bo's partner");
    assert_eq!(name, "Telegram: Bo Berg");
    // An edited message is stored as such.
    let answer = http
        .post(&hook)
        .header("X-Telegram-Bot-Api-Secret-Token", HOOK_SECRET)
        .json(&update(6002, "edited_message", "hi there"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        messages(&demo, bo).await,
        vec![
            row("in", "hi", false, false),
            row("in", "hi there", true, false)
        ]
    );
    // Without the secret token (not from Telegram) an update is refused, and not stored.
    for token in [None, Some("guess")] {
        let mut req = http.post(&hook).json(&update(7003, "message", "/start"));
        if let Some(t) = token {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", t);
        }
        let answer = req.send().await.unwrap();
        assert_eq!(answer.status(), 403);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body, json!({"ok": false, "error": "wrong secret token"}));
    }
    assert_eq!(partner(&demo, "7003@telegram").await, None);
    assert_eq!(sent(&tg).len(), 2);

    // Our answer, /telegram ..., goes to Ann's chat; the row gets the message id.
    let out: i64 = demo
        .client
        .query_one(
            "INSERT INTO partner_message (partner_id, body) VALUES ($1, '/telegram Your parcel left the depot today.') RETURNING id",
            &[&ann],
        )
        .await
        .unwrap()
        .get(0);
    let job: i64 = {
        let mut id = None;
        for _ in 0..500 {
            id = demo
                .client
                .query_opt(
                    "SELECT id FROM sync.job WHERE trigger_name = 'ON_MESSAGE_POSTED'",
                    &[],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            if id.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        id.expect("a job for the out message")
    };
    assert_eq!(demo.done(job).await, json!({"sent": [out], "skipped": []}));
    let messages_sent = sent(&tg);
    assert_eq!(
        messages_sent[2],
        (5001, "Your parcel left the depot today.".to_string())
    );
    let telegram_id = tg.state()["messages"][2]["message_id"].as_i64().unwrap();
    let r = demo
        .client
        .query_one(
            "SELECT telegram_message_id, sent_at IS NOT NULL FROM partner_message WHERE id = $1",
            &[&out],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<i64>>(0), Some(telegram_id));
    assert!(r.get::<_, bool>(1));

    // Not sent: notes without the /telegram word (no job at all), and a /telegram
    // message to a partner who is not a Telegram user (a warning).
    demo.sql(&format!(
        "INSERT INTO partner_message (partner_id, body) VALUES
           ({ann}, 'Called the depot'), ({ann}, '/telegramme is French');
         INSERT INTO partner (name, email) VALUES ('Mail Only', 'm@example.com');"
    ))
    .await;
    demo.sql(
        "INSERT INTO partner_message (partner_id, body)
         SELECT id, '/telegram hello' FROM partner WHERE name = 'Mail Only'",
    )
    .await;
    demo.idle().await;
    let jobs = demo
        .client
        .query(
            "SELECT state, warning, result FROM sync.job WHERE trigger_name = 'ON_MESSAGE_POSTED' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2, "only the /telegram messages made jobs");
    assert_eq!(jobs[1].get::<_, String>(0), "done");
    assert!(
        jobs[1].get::<_, bool>(1),
        "a job that skipped a message warns"
    );
    assert_eq!(jobs[1].get::<_, Value>(2)["sent"], json!([]));
    assert_eq!(sent(&tg).len(), 3);
    demo.no_failed_jobs().await;

    // Neither token in any log line, job result or error of the whole run.
    let everything = logs(&demo, None).await;
    assert!(everything.len() > 20, "{everything:?}");
    let jobs = demo
        .client
        .query(
            "SELECT coalesce(result::text, '') || coalesce(error, '') FROM sync.job",
            &[],
        )
        .await
        .unwrap();
    for secret in [HOOK_SECRET, hook_token.as_str(), BOT_TOKEN] {
        for (kind, recipient, message) in &everything {
            assert!(
                !message.contains(secret) && !recipient.as_deref().unwrap_or("").contains(secret),
                "{secret} in a {kind} line: {message}"
            );
        }
        for job in &jobs {
            let text: String = job.get(0);
            assert!(!text.contains(secret), "{secret} in a job: {text}");
        }
    }
}

/// Log lines (kind, recipient, message) of one job, or of all.
async fn logs(demo: &Demo, job: Option<i64>) -> Vec<(String, Option<String>, String)> {
    demo.client
        .query(
            "SELECT kind, recipient, message FROM sync.log
             WHERE $1::bigint IS NULL OR job_id = $1 ORDER BY id",
            &[&job],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}
