// The GitHub <-> Trello demo (sql/demo/github_trello.json) as shipped, against the fake
// GitHub and Trello servers, whose webhooks call the real worker: PUSH_ALL_ISSUES, the
// setup buttons, new issue -> card, comments, labels both ways without loops, and the
// nightly label check under each LABELS_MERGE_STRATEGY.
use pg_sync_tests::demos::{card_linked_to, deliveries as deliveries_of, settle, Demo};
use pg_sync_tests::fakes::FakeServer;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const GH_TOKEN: &str = "gh-demo-token";
const REPO: &str = "acme/app";
const TRELLO_AUTH: &str = "key=trello-test-key&token=trello-test-token";

struct Apis {
    gh: FakeServer,
    tr: FakeServer,
    board: String,
}

impl Apis {
    /// A call to the fake GitHub as a user would make it (through its API, with a token).
    fn gh(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let auth = format!("Bearer {GH_TOKEN}");
        let (status, value) =
            self.gh
                .request(method, path, &[("Authorization", auth.as_str())], body);
        assert!(
            (200..300).contains(&status),
            "GitHub {method} {path}: {status} {value}"
        );
        value
    }

    fn tr(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, value) =
            self.tr
                .request(method, &format!("{path}{sep}{TRELLO_AUTH}"), &[], body);
        assert!(
            (200..300).contains(&status),
            "Trello {method} {path}: {status} {value}"
        );
        value
    }

    fn new_issue(&self, title: &str, labels: &[&str]) -> i64 {
        self.gh(
            "POST",
            &format!("/repos/{REPO}/issues"),
            Some(&json!({"title": title, "body": format!("About {title}"), "labels": labels})),
        )["number"]
            .as_i64()
            .expect("issue number")
    }

    /// Lower-case label names of an issue.
    fn issue_labels(&self, number: i64) -> BTreeSet<String> {
        names(&self.gh("GET", &format!("/repos/{REPO}/issues/{number}"), None)["labels"])
    }

    fn card(&self, card: &str) -> Value {
        self.tr("GET", &format!("/1/cards/{card}"), None)
    }

    fn card_labels(&self, card: &str) -> BTreeSet<String> {
        names(&self.card(card)["labels"])
    }

    /// A label of the board by name, created (with `color`) if missing; its id.
    fn board_label(&self, name: &str, color: &str) -> String {
        let labels = self.tr("GET", &format!("/1/boards/{}/labels", self.board), None);
        if let Some(l) = labels
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
        {
            return l["id"].as_str().unwrap().to_string();
        }
        self.tr(
            "POST",
            &format!("/1/boards/{}/labels", self.board),
            Some(&json!({"name": name, "color": color})),
        )["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn cards(&self) -> Vec<Value> {
        self.tr("GET", &format!("/1/boards/{}/cards", self.board), None)
            .as_array()
            .unwrap()
            .clone()
    }
}

fn names(labels: &Value) -> BTreeSet<String> {
    labels
        .as_array()
        .unwrap_or_else(|| panic!("no labels: {labels}"))
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_lowercase())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The card linked to issue `number` of REPO (links name issues `owner/name#number`).
async fn card_of(demo: &Demo, number: i64) -> Option<String> {
    card_linked_to(&demo.client, &format!("{REPO}#{number}")).await
}

/// Deliveries after the first `from` that did not get a 200 from the worker.
fn failed_deliveries(fake: &FakeServer, from: usize) -> Vec<Value> {
    deliveries_of(fake)
        .into_iter()
        .skip(from)
        .filter(|d| d["status"] != 200)
        .collect()
}

/// Where the last step left the fakes: deliveries sent and calls received, per fake.
struct Marks {
    deliveries: Vec<usize>,
    requests: Vec<usize>,
}

impl Marks {
    async fn take(apis: &Apis) -> Marks {
        let deliveries = settle(&[&apis.gh, &apis.tr]).await;
        let requests = vec![apis.gh.requests().len(), apis.tr.requests().len()];
        Marks {
            deliveries,
            requests,
        }
    }
}

/// The writing calls (not GET) the worker made to a fake since `from`, as "METHOD path".
fn worker_writes(fake: &FakeServer, from: usize) -> Vec<String> {
    fake.requests()
        .into_iter()
        .skip(from)
        .filter(|r| {
            r["headers"]["user-agent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("pg_sync"))
                && r["method"] != "GET"
        })
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect()
}

/// Settle the fakes and check the last step: exactly `deliveries` webhooks sent by
/// (GitHub, Trello), all answered 200, and exactly `writes` writing calls from the
/// worker to (GitHub, Trello). One delivery each way per change, and no write caused
/// by the demo's own change: nothing bounces back.
async fn expect_step(
    apis: &Apis,
    last: &mut Marks,
    deliveries: (usize, usize),
    writes: (usize, usize),
) {
    let now = Marks::take(apis).await;
    let gh_writes = worker_writes(&apis.gh, last.requests[0]);
    let tr_writes = worker_writes(&apis.tr, last.requests[1]);
    assert_eq!(
        (
            now.deliveries[0] - last.deliveries[0],
            now.deliveries[1] - last.deliveries[1]
        ),
        deliveries,
        "webhook deliveries (GitHub, Trello) of this step: {:#}\n{:#}",
        json!(deliveries_of(&apis.gh)[last.deliveries[0]..]),
        json!(deliveries_of(&apis.tr)[last.deliveries[1]..])
    );
    assert_eq!(
        (gh_writes.len(), tr_writes.len()),
        writes,
        "the worker's writes to GitHub {gh_writes:?} and Trello {tr_writes:?}"
    );
    let bad: Vec<Value> = failed_deliveries(&apis.gh, last.deliveries[0])
        .into_iter()
        .chain(failed_deliveries(&apis.tr, last.deliveries[1]))
        .collect();
    assert!(bad.is_empty(), "deliveries the worker refused: {bad:#?}");
    *last = now;
}

async fn set_webhooks_active(demo: &Demo, active: bool) {
    demo.client
        .execute(
            "UPDATE sync.webhook_trigger SET active = $2 WHERE project_id = $1",
            &[&demo.id, &active],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn github_trello_demo_against_fake_apis() {
    let gh = FakeServer::start("github", &["--token", &format!("{GH_TOKEN}=octocat")]);
    let tr = FakeServer::start("trello", &[]);
    gh.post("/_fake/repos", &[], &json!({"full_name": REPO}));
    let board = tr.post(
        &format!("/1/boards?{TRELLO_AUTH}"),
        &[],
        &json!({"name": "Development"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let apis = Apis { gh, tr, board };

    // The repository before the integration: labels, 11 open issues, a closed one.
    apis.gh(
        "POST",
        &format!("/repos/{REPO}/labels"),
        Some(&json!({"name": "common", "color": "0075ca"})),
    );
    apis.gh(
        "POST",
        &format!("/repos/{REPO}/labels"),
        Some(&json!({"name": "bug", "color": "d73a4a"})),
    );
    for i in 1..=4 {
        apis.new_issue(&format!("Strategy {i}"), &["common"]);
    }
    for i in 5..=11 {
        let labels: &[&str] = if i % 2 == 0 { &["bug"] } else { &[] };
        apis.new_issue(&format!("Old issue {i}"), labels);
    }
    let closed = apis.new_issue("Closed long ago", &["bug"]);
    apis.gh(
        "PATCH",
        &format!("/repos/{REPO}/issues/{closed}"),
        Some(&json!({"state": "closed"})),
    );

    let mut demo = Demo::load("github_trello", &["github_trello_setup.sql"]).await;
    demo.secret("GITHUB_TOKEN", GH_TOKEN).await;
    demo.secret("TRELLO_KEY", "trello-test-key").await;
    demo.secret("TRELLO_TOKEN", "trello-test-token").await;
    demo.secret("GITHUB_BASE_URL", &apis.gh.url("")).await;
    demo.secret("TRELLO_BASE_URL", &apis.tr.url("/1")).await;
    demo.param("GITHUB_REPO", REPO).await;
    demo.param("TRELLO_BOARD_ID", &apis.board).await;
    demo.activate().await;
    demo.start_worker().await;
    // The nightly check's first run (due at once) has nothing linked to look at.
    assert_eq!(
        demo.run_cron("LABELS_CONFLICT_RESOLVING").await,
        json!({"strategy": "UNION", "fixed": []})
    );

    // PUSH_ALL_ISSUES: a card per open issue, through child jobs of 10 issues.
    let (button, result) = demo.press("PUSH_ALL_ISSUES").await;
    let pushed: BTreeSet<i64> = result["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    assert_eq!(pushed, (1..=11).collect());
    demo.idle().await;
    let children = demo
        .client
        .query(
            "SELECT state, result FROM sync.job WHERE parent_id = $1 ORDER BY id",
            &[&button],
        )
        .await
        .unwrap();
    assert_eq!(children.len(), 2);
    let mut created = BTreeSet::new();
    for child in &children {
        assert_eq!(child.get::<_, String>(0), "done");
        let r: Value = child.get(1);
        for n in r["created"].as_array().unwrap() {
            let number = n
                .as_str()
                .unwrap()
                .strip_prefix(&format!("{REPO}#"))
                .unwrap();
            created.insert(number.parse::<i64>().unwrap());
        }
    }
    assert_eq!(created, pushed);
    assert_eq!(apis.cards().len(), 11);
    for number in 1..=11 {
        let card_id = card_of(&demo, number).await.expect("a card");
        let card = apis.card(&card_id);
        let issue = apis.gh("GET", &format!("/repos/{REPO}/issues/{number}"), None);
        assert_eq!(
            card["name"],
            format!("GitHub: {}", issue["title"].as_str().unwrap())
        );
        assert!(card["desc"]
            .as_str()
            .unwrap()
            .contains(issue["html_url"].as_str().unwrap()));
        assert_eq!(apis.card_labels(&card_id), names(&issue["labels"]));
    }
    assert_eq!(card_of(&demo, closed).await, None);
    // Labels got Trello's nearest colours.
    let colors: Vec<(String, String)> = apis
        .tr("GET", &format!("/1/boards/{}/labels", apis.board), None)
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] != "")
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["color"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        colors.into_iter().collect::<BTreeSet<_>>(),
        [("bug", "red"), ("common", "blue")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    );
    // Pressed again, it makes no second card.
    let (again, _) = demo.press("PUSH_ALL_ISSUES").await;
    demo.idle().await;
    let results = demo
        .client
        .query(
            "SELECT result FROM sync.job WHERE parent_id = $1",
            &[&again],
        )
        .await
        .unwrap();
    for r in results {
        assert_eq!(r.get::<_, Value>(0)["created"], json!([]));
    }
    assert_eq!(apis.cards().len(), 11);

    // The setup buttons register the webhooks, once.
    let github_url = demo.webhook("GITHUB").await;
    let trello_url = demo.webhook("TRELLO").await;
    let (_, r) = demo.press("SETUP_GITHUB").await;
    assert_eq!(r["created"], true);
    let (_, r) = demo.press("SETUP_GITHUB").await;
    assert_eq!(r["created"], false);
    let hooks = apis.gh("GET", &format!("/repos/{REPO}/hooks"), None);
    assert_eq!(hooks.as_array().unwrap().len(), 1);
    assert_eq!(hooks[0]["config"]["url"], github_url.as_str());
    assert_eq!(hooks[0]["events"], json!(["issues", "issue_comment"]));
    let (_, r) = demo.press("SETUP_TRELLO").await;
    assert_eq!(r["created"], true);
    let trello_hooks = apis.tr.state()["webhooks"].clone();
    assert_eq!(trello_hooks.as_array().unwrap().len(), 1);
    assert_eq!(trello_hooks[0]["callbackURL"], trello_url.as_str());
    assert_eq!(trello_hooks[0]["idModel"], apis.board.as_str());
    // What the real services send before anything else: GitHub a ping, Trello a HEAD.
    let http = reqwest::Client::new();
    let ping = http
        .post(&github_url)
        .header("X-GitHub-Event", "ping")
        .json(&json!({"zen": "Keep it logically awesome."}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    let head = http.head(&trello_url).send().await.unwrap();
    assert_eq!(head.status(), 200);

    let mut last = Marks::take(&apis).await;

    // A new issue: GitHub's webhook makes its card, with its labels.
    let number = apis.new_issue("Printer on fire", &["bug", "hardware"]);
    // Writes: the label "hardware" on the board, the card.
    expect_step(&apis, &mut last, (1, 1), (0, 2)).await;
    let card = card_of(&demo, number)
        .await
        .expect("a card for the new issue");
    let c = apis.card(&card);
    assert_eq!(c["name"], "GitHub: Printer on fire");
    let todo = apis.tr("GET", &format!("/1/boards/{}/lists", apis.board), None)[0].clone();
    assert_eq!(todo["name"], "To Do");
    assert_eq!(c["idList"], todo["id"]);
    assert_eq!(apis.card_labels(&card), set(&["bug", "hardware"]));

    // A comment is copied to the card.
    apis.gh(
        "POST",
        &format!("/repos/{REPO}/issues/{number}/comments"),
        Some(&json!({"body": "It smells of smoke"})),
    );
    expect_step(&apis, &mut last, (1, 1), (0, 1)).await;
    let comments = apis.tr(
        "GET",
        &format!("/1/cards/{card}/actions?filter=commentCard"),
        None,
    );
    let texts: Vec<&str> = comments
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec!["A message posted on GitHub:\nIt smells of smoke"]
    );

    // Labels, GitHub -> Trello: one delivery each way per change (the card's own
    // webhook finds the issue already labelled and does nothing).
    apis.gh(
        "POST",
        &format!("/repos/{REPO}/issues/{number}/labels"),
        Some(&json!({"labels": ["ui"]})),
    );
    // Writes: the label "ui" on the board, on the card.
    expect_step(&apis, &mut last, (1, 1), (0, 2)).await;
    assert_eq!(apis.card_labels(&card), set(&["bug", "hardware", "ui"]));
    apis.gh(
        "DELETE",
        &format!("/repos/{REPO}/issues/{number}/labels/bug"),
        None,
    );
    expect_step(&apis, &mut last, (1, 1), (0, 1)).await;
    assert_eq!(apis.card_labels(&card), set(&["hardware", "ui"]));

    // Labels, Trello -> GitHub: a new board label is made in the repository too.
    let urgent = apis.board_label("urgent", "red");
    apis.tr(
        "POST",
        &format!("/1/cards/{card}/idLabels"),
        Some(&json!({"value": urgent})),
    );
    // Writes: the label "urgent" in the repository, on the issue.
    expect_step(&apis, &mut last, (1, 1), (2, 0)).await;
    assert_eq!(
        apis.issue_labels(number),
        set(&["hardware", "ui", "urgent"])
    );
    let label = apis.gh("GET", &format!("/repos/{REPO}/labels/urgent"), None);
    assert_eq!(label["color"], "eb5a46");
    let ui = apis.board_label("ui", "green");
    apis.tr("DELETE", &format!("/1/cards/{card}/idLabels/{ui}"), None);
    expect_step(&apis, &mut last, (1, 1), (1, 0)).await;
    assert_eq!(apis.issue_labels(number), set(&["hardware", "urgent"]));
    assert_eq!(apis.card_labels(&card), set(&["hardware", "urgent"]));

    // The nightly check: conflicts made while the webhooks were off (the deliveries
    // got 404 and were missed), resolved by each strategy.
    let cases = [
        (1, "USE_GITHUB", vec!["common", "gh-use_github"]),
        (2, "USE_TRELLO", vec!["common", "tr-use_trello"]),
        (3, "UNION", vec!["common", "gh-union", "tr-union"]),
        (4, "INTERSECTION", vec!["common"]),
    ];
    for (number, strategy, expected) in cases {
        let card = card_of(&demo, number).await.unwrap();
        let s = strategy.to_lowercase();
        set_webhooks_active(&demo, false).await;
        apis.gh(
            "POST",
            &format!("/repos/{REPO}/issues/{number}/labels"),
            Some(&json!({"labels": [format!("gh-{s}")]})),
        );
        let label = apis.board_label(&format!("tr-{s}"), "green");
        apis.tr(
            "POST",
            &format!("/1/cards/{card}/idLabels"),
            Some(&json!({"value": label})),
        );
        last = Marks::take(&apis).await;
        assert_eq!(
            apis.issue_labels(number),
            set(&["common", &format!("gh-{s}")])
        );
        assert_eq!(
            apis.card_labels(&card),
            set(&["common", &format!("tr-{s}")])
        );
        set_webhooks_active(&demo, true).await;
        demo.param("LABELS_MERGE_STRATEGY", strategy).await;
        let result = demo.run_cron("LABELS_CONFLICT_RESOLVING").await;
        assert_eq!(result, json!({"strategy": strategy, "fixed": [number]}));
        // What the check changed reached the webhooks, which found nothing to do: the
        // worker wrote only what the strategy asks for.
        // (deliveries, writes), each as (GitHub, Trello):
        let (deliveries, writes) = match strategy {
            // the label made on the board and put on the card; the other taken off it
            "USE_GITHUB" => ((0, 2), (0, 3)),
            // the label made in the repository and put on the issue; the other taken off
            "USE_TRELLO" => ((2, 0), (3, 0)),
            // a label made and put on each side
            "UNION" => ((1, 1), (2, 2)),
            // one label taken off each side
            _ => ((1, 1), (1, 1)),
        };
        expect_step(&apis, &mut last, deliveries, writes).await;
        let expected = set(&expected);
        assert_eq!(apis.issue_labels(number), expected, "{strategy}: issue");
        assert_eq!(apis.card_labels(&card), expected, "{strategy}: card");
        // Agreed now: the next run changes nothing, and makes no delivery.
        assert_eq!(
            demo.run_cron("LABELS_CONFLICT_RESOLVING").await,
            json!({"strategy": strategy, "fixed": []})
        );
        expect_step(&apis, &mut last, (0, 0), (0, 0)).await;
    }
    // The other issues were left alone.
    assert_eq!(apis.issue_labels(number), set(&["hardware", "urgent"]));
    assert_eq!(apis.card_labels(&card), set(&["hardware", "urgent"]));
    demo.no_failed_jobs().await;

    // An unknown strategy fails the check with a message saying what to set.
    demo.param("LABELS_MERGE_STRATEGY", "NEWEST").await;
    let job = demo.start_cron("LABELS_CONFLICT_RESOLVING").await;
    let (state, _, error) = demo.finish(job).await;
    assert_eq!(state, "failed");
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("param LABELS_MERGE_STRATEGY is 'NEWEST'; use one of USE_TRELLO, USE_GITHUB, UNION, INTERSECTION"),
        "{error:?}"
    );
}
