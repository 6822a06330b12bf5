// GitHub's deliveries to the GitHub <-> Trello demo, replayed as GitHub sends them: the
// payload shapes of GitHub's documentation, GitHub-Hookshot's headers, bodies signed with
// the hook's secret (X-Hub-Signature-256), as JSON and as a form (payload=), from a
// repository hook and an organisation hook; the fake Trello is checked after each one.
mod github_hook;

use std::collections::BTreeSet;

use github_hook::{comment, issue, label, Delivery, Hook, OTHER_REPO, REPO, SECRET};
use pg_sync_tests::demos::{card_linked_to, Demo};
use pg_sync_tests::fakes::FakeServer;
use serde_json::{json, Value};

const TRELLO_AUTH: &str = "key=trello-test-key&token=trello-test-token";

// -- the demo and the fake Trello ----------------------------------------------------------

struct Replay {
    demo: Demo,
    tr: FakeServer,
    board: String,
}

impl Replay {
    fn tr(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}{TRELLO_AUTH}");
        let (status, value) = self.tr.request(method, &url, &[], body);
        assert!(
            (200..300).contains(&status),
            "Trello {method} {path}: {status} {value}"
        );
        value
    }

    /// Everything the fake Trello stores and every link of the demo.
    async fn world(&self) -> Value {
        let mut trello = self.tr.state();
        let stored = trello.as_object_mut().unwrap();
        stored.remove("requests");
        stored.remove("deliveries");
        let links: Vec<String> = self
            .demo
            .client
            .query(
                "SELECT concat_ws(' ', relation, system1, ref1, system2, ref2) FROM sync.link ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        json!({"trello": trello, "links": links})
    }

    /// Deliver `d`, expecting 200; the answer.
    async fn deliver(&self, hook: &Hook, d: &Delivery) -> Value {
        let (status, answer) = hook.send(d).await;
        assert_eq!(
            status, 200,
            "{} delivery answered {status} {answer}",
            d.event
        );
        answer
    }

    /// Deliver `d`, expecting 200 and no change to Trello or the links; the answer.
    async fn deliver_no_change(&self, hook: &Hook, d: &Delivery) -> Value {
        let before = self.world().await;
        let answer = self.deliver(hook, d).await;
        assert_eq!(
            self.world().await,
            before,
            "{} delivery changed something: {answer}",
            d.event
        );
        answer
    }

    async fn card_of(&self, full_name: &str, number: u64) -> Option<String> {
        card_linked_to(&self.demo.client, &format!("{full_name}#{number}")).await
    }

    fn cards(&self) -> usize {
        self.tr("GET", &format!("/1/boards/{}/cards", self.board), None)
            .as_array()
            .unwrap()
            .len()
    }

    fn card_labels(&self, card: &str) -> BTreeSet<String> {
        self.tr("GET", &format!("/1/cards/{card}"), None)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// The card's comments, oldest first.
    fn comments(&self, card: &str) -> Vec<String> {
        let path = format!("/1/cards/{card}/actions?filter=commentCard");
        let mut texts: Vec<String> = self
            .tr("GET", &path, None)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["data"]["text"].as_str().unwrap().to_string())
            .collect();
        texts.reverse();
        texts
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn text_of(answer: &Value, key: &str) -> String {
    answer[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in the answer {answer}"))
        .to_string()
}

#[tokio::test]
async fn github_deliveries_replayed_as_github_sends_them() {
    // The webhook path needs no GitHub API call: any would show in the fake's requests.
    let gh = FakeServer::start("github", &["--token", "gh-demo-token=octocat"]);
    let tr = FakeServer::start("trello", &[]);
    let board = tr.post(
        &format!("/1/boards?{TRELLO_AUTH}"),
        &[],
        &json!({"name": "Dev"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut demo = Demo::load("github_trello", &["github_trello_setup.sql"]).await;
    demo.secret("GITHUB_TOKEN", "gh-demo-token").await;
    demo.secret("TRELLO_KEY", "trello-test-key").await;
    demo.secret("TRELLO_TOKEN", "trello-test-token").await;
    demo.secret("GITHUB_BASE_URL", &gh.url("")).await;
    demo.secret("TRELLO_BASE_URL", &tr.url("/1")).await;
    demo.param("GITHUB_REPO", REPO).await;
    demo.param("TRELLO_BOARD_ID", &board).await;
    demo.signing_secret("GITHUB", SECRET).await;
    // Deliveries only: the nightly label check (due at once) would call GitHub's API.
    demo.sql("UPDATE sync.cron_trigger SET active = false")
        .await;
    demo.activate().await;
    demo.start_worker().await;
    let url = demo.webhook("GITHUB").await;
    let r = Replay { demo, tr, board };
    let hook = |id, org, form| Hook {
        url: url.clone(),
        id,
        org,
        form,
    };
    let repo_hook = hook(480_001, false, false);
    let org_hook = hook(480_002, true, false);
    let form_hook = hook(480_003, false, true);

    // What GitHub sends when a hook is made: a ping, answered with its zen.
    let answer = r.deliver_no_change(&repo_hook, &repo_hook.ping()).await;
    assert_eq!(
        answer,
        json!({"pong": "Design for failure.", "hook_id": 480_001})
    );
    let answer = r.deliver_no_change(&org_hook, &org_hook.ping()).await;
    assert_eq!(answer["hook_id"], 480_002);
    // The trigger has a signing secret: no signature, or another secret's, gets 401.
    let ping = repo_hook.ping();
    for secret in [None, Some("not the secret")] {
        let (status, answer) = repo_hook.send_signed(&ping, secret).await;
        assert_eq!(status, 401, "{answer}");
    }

    // issues opened: a card with the issue's labels.
    let opened = repo_hook.delivery(
        "issues",
        Some(REPO),
        json!({"action": "opened", "issue": issue(REPO, 1, "Printer on fire", &["bug"])}),
    );
    let answer = r.deliver(&repo_hook, &opened).await;
    assert_eq!(answer["created"], json!(["acme/app#1"]), "{answer}");
    let card = r.card_of(REPO, 1).await.expect("a card for acme/app#1");
    let c = r.tr("GET", &format!("/1/cards/{card}"), None);
    assert_eq!(c["name"], "GitHub: Printer on fire");
    assert_eq!(
        c["desc"],
        "Steps to reproduce: Printer on fire\n\nhttps://github.com/acme/app/issues/1"
    );
    assert_eq!(r.card_labels(&card), set(&["bug"]));

    // The organisation's hook sends issue #1 of another repository: nothing changes
    // (before, the links knew numbers only, and this updated acme/app#1's card).
    let other = issue(OTHER_REPO, 1, "Typo on the home page", &["docs"]);
    let mut other_labeled = other.clone();
    other_labeled["labels"] = json!([label(OTHER_REPO, "docs"), label(OTHER_REPO, "hardware")]);
    for (event, fields) in [
        ("issues", json!({"action": "opened", "issue": other})),
        (
            "issues",
            json!({"action": "labeled", "issue": other_labeled, "label": label(OTHER_REPO, "hardware")}),
        ),
        (
            "issues",
            json!({"action": "unlabeled", "issue": other, "label": label(OTHER_REPO, "bug")}),
        ),
        (
            "issue_comment",
            json!({"action": "created", "issue": other, "comment": comment(OTHER_REPO, 1, 9001, "Fixed?")}),
        ),
    ] {
        let d = org_hook.delivery(event, Some(OTHER_REPO), fields);
        let answer = r.deliver_no_change(&org_hook, &d).await;
        assert_eq!(
            text_of(&answer, "ignored"),
            format!("{event} of repository acme/website, not GITHUB_REPO acme/app")
        );
    }
    assert_eq!(r.card_of(OTHER_REPO, 1).await, None);
    assert_eq!(r.card_labels(&card), set(&["bug"]));
    assert!(r.comments(&card).is_empty());

    // issues labeled / unlabeled (the payload's issue already shows the change); the
    // organisation's hook delivers this repository's events as well.
    let labeled = org_hook.delivery(
        "issues",
        Some(REPO),
        json!({
            "action": "labeled",
            "issue": issue(REPO, 1, "Printer on fire", &["bug", "hardware"]),
            "label": label(REPO, "hardware"),
        }),
    );
    let answer = r.deliver(&org_hook, &labeled).await;
    assert_eq!(answer, json!({"card": card, "added": "hardware"}));
    assert_eq!(r.card_labels(&card), set(&["bug", "hardware"]));
    let unlabeled = repo_hook.delivery(
        "issues",
        Some(REPO),
        json!({
            "action": "unlabeled",
            "issue": issue(REPO, 1, "Printer on fire", &["hardware"]),
            "label": label(REPO, "bug"),
        }),
    );
    let answer = r.deliver(&repo_hook, &unlabeled).await;
    assert_eq!(answer, json!({"card": card, "removed": "bug"}));
    assert_eq!(r.card_labels(&card), set(&["hardware"]));

    // issues edited: not something the demo copies; said so, nothing changes.
    let edited = repo_hook.delivery(
        "issues",
        Some(REPO),
        json!({
            "action": "edited",
            "issue": issue(REPO, 1, "Printer on fire (2nd floor)", &["hardware"]),
            "changes": {"title": {"from": "Printer on fire"}},
        }),
    );
    let answer = r.deliver_no_change(&repo_hook, &edited).await;
    assert_eq!(
        text_of(&answer, "ignored"),
        "issues edited: the demo copies new issues, new comments and labels"
    );

    // issue_comment created: copied to the card, and linked.
    let commented = repo_hook.delivery(
        "issue_comment",
        Some(REPO),
        json!({
            "action": "created",
            "issue": issue(REPO, 1, "Printer on fire", &["hardware"]),
            "comment": comment(REPO, 1, 1_987_001, "It smells of smoke"),
        }),
    );
    let answer = r.deliver(&repo_hook, &commented).await;
    assert_eq!(answer, json!({"card": card, "comment": 1_987_001}));
    let copied = vec!["A message posted on GitHub:\nIt smells of smoke".to_string()];
    assert_eq!(r.comments(&card), copied);

    // Redeliveries (GitHub's "Redeliver" button, or a retry after a timeout) send the
    // same bytes again: nothing is made twice.
    for d in [&opened, &labeled, &commented] {
        let h = if d.guid == labeled.guid {
            &org_hook
        } else {
            &repo_hook
        };
        r.deliver_no_change(h, d).await;
    }
    let answer = r.deliver(&repo_hook, &commented).await;
    assert!(text_of(&answer, "unchanged").starts_with("already on the card as "));
    assert_eq!(r.comments(&card), copied);
    assert_eq!(r.cards(), 1);

    // A hook made in GitHub's web form sends application/x-www-form-urlencoded bodies,
    // the event in the field payload (signed as sent): read as the JSON ones.
    let answer = r.deliver_no_change(&form_hook, &form_hook.ping()).await;
    assert_eq!(answer["pong"], "Design for failure.");
    let d = form_hook.delivery(
        "issues",
        Some(REPO),
        json!({"action": "opened", "issue": issue(REPO, 2, "Paper jam & smoke: 100%", &["bug"])}),
    );
    assert!(String::from_utf8_lossy(&d.body).starts_with("payload=%7B%22action%22"));
    let answer = r.deliver(&form_hook, &d).await;
    assert_eq!(answer["created"], json!(["acme/app#2"]), "{answer}");
    let card2 = r.card_of(REPO, 2).await.expect("a card for acme/app#2");
    let c = r.tr("GET", &format!("/1/cards/{card2}"), None);
    assert_eq!(c["name"], "GitHub: Paper jam & smoke: 100%");
    assert_eq!(r.card_labels(&card2), set(&["bug"]));
    let d = form_hook.delivery(
        "issue_comment",
        Some(REPO),
        json!({
            "action": "created",
            "issue": issue(REPO, 2, "Paper jam & smoke: 100%", &["bug"]),
            "comment": comment(REPO, 2, 1_987_002, "Tray 2 + tray 3 = jam"),
        }),
    );
    r.deliver(&form_hook, &d).await;
    assert_eq!(
        r.comments(&card2),
        vec!["A message posted on GitHub:\nTray 2 + tray 3 = jam"]
    );
    r.deliver_no_change(&form_hook, &d).await;

    // Events the demo does not read: a push (a hook sending everything), a comment on
    // a pull request.
    let push = repo_hook.delivery(
        "push",
        Some(REPO),
        json!({
            "ref": "refs/heads/main", "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "0000000000000000000000000000000000000000", "created": false,
            "deleted": false, "forced": false, "base_ref": null,
            "compare": "https://github.com/acme/app/compare/6113728f27ae...000000000000",
            "commits": [], "head_commit": null,
            "pusher": {"name": "octocat", "email": "octocat@github.com"},
        }),
    );
    let answer = r.deliver_no_change(&repo_hook, &push).await;
    assert_eq!(
        text_of(&answer, "ignored"),
        "push events: the demo reads issues and issue_comment"
    );
    let mut pr = issue(REPO, 3, "Fix the printer driver", &[]);
    pr["pull_request"] = json!({
        "url": "https://api.github.com/repos/acme/app/pulls/3",
        "html_url": "https://github.com/acme/app/pull/3",
        "diff_url": "https://github.com/acme/app/pull/3.diff",
        "patch_url": "https://github.com/acme/app/pull/3.patch", "merged_at": null
    });
    let d = repo_hook.delivery(
        "issue_comment",
        Some(REPO),
        json!({"action": "created", "issue": pr, "comment": comment(REPO, 3, 1_987_003, "LGTM")}),
    );
    let answer = r.deliver_no_change(&repo_hook, &d).await;
    assert_eq!(
        text_of(&answer, "ignored"),
        "issue_comment created of a pull request"
    );

    // A body that holds no event gets 400 saying what GitHub sends, so that the
    // delivery shows as failed, and a warning in the job's log.
    let before = r.world().await;
    let mut bad = repo_hook.delivery("issues", Some(REPO), json!({}));
    bad.content_type = "text/plain";
    bad.body = b"action=opened".to_vec();
    let (status, answer) = repo_hook.send(&bad).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        text_of(&answer, "error"),
        "the body of this issues delivery (Content-Type text/plain) holds no event: a GitHub \
         hook sends application/json, or application/x-www-form-urlencoded with the event in \
         the field payload"
    );
    let form = hook(480_004, false, true);
    let mut empty = form.delivery("issues", Some(REPO), json!({}));
    empty.body = b"payload=".to_vec();
    let (status, _) = form.send(&empty).await;
    assert_eq!(status, 400);
    assert_eq!(r.world().await, before);
    let warned = r
        .demo
        .count("SELECT count(*) FROM sync.log_view WHERE level = 'warning' AND message LIKE '%holds no event%'")
        .await;
    assert_eq!(warned, 2);

    // Links made before 0.2 name the issue by number alone: they are read as issues of
    // GITHUB_REPO, and keyed owner/name#number when met.
    let list = r.tr("GET", &format!("/1/boards/{}/lists", r.board), None)[0]["id"].clone();
    let old_card = r.tr(
        "POST",
        "/1/cards",
        Some(&json!({"idList": list, "name": "GitHub: From 0.1"})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    r.demo
        .client
        .execute(
            "SELECT sync_set_link('github_trello_issue', jsonb_build_object('github', '4', 'trello', $1::text))",
            &[&old_card],
        )
        .await
        .unwrap();
    let d = repo_hook.delivery(
        "issues",
        Some(REPO),
        json!({
            "action": "labeled",
            "issue": issue(REPO, 4, "From 0.1", &["hardware"]),
            "label": label(REPO, "hardware"),
        }),
    );
    let answer = r.deliver(&repo_hook, &d).await;
    assert_eq!(answer, json!({"card": old_card, "added": "hardware"}));
    assert_eq!(r.card_of(REPO, 4).await, Some(old_card.clone()));
    assert_eq!(card_linked_to(&r.demo.client, "4").await, None);
    assert_eq!(r.cards(), 3);

    // Every call was handled but the two refused for their signature.
    let not_done: Vec<String> = r
        .demo
        .client
        .query("SELECT state || ': ' || coalesce(error, '') FROM sync.job WHERE state <> 'done' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(not_done.len(), 2, "{not_done:#?}");
    assert!(
        not_done[0].contains("no X-Hub-Signature-256 header"),
        "{not_done:#?}"
    );
    assert!(
        not_done[1].contains("does not match the body"),
        "{not_done:#?}"
    );
    assert!(gh.requests().is_empty(), "{:#?}", gh.requests());
}
