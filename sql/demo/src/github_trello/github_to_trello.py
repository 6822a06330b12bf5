# GitHub <-> Trello demo, GitHub -> Trello. The GITHUB webhook gets GitHub's events: a new
# issue gets a card (with its labels), a comment is copied to the card, a label added or
# removed on the issue is added or removed on the card. PUSH_ALL_ISSUES makes cards for
# all open issues without one, ISSUES_PER_JOB per child job.
ISSUES_PER_JOB = 10


def handle_webhook(httprequest):
    event = httprequest.headers.get("X-GitHub-Event")
    data = httprequest.json or {}
    if event == "ping":
        return {"pong": data.get("zen")}
    issue = data.get("issue")
    action = data.get("action")
    if not issue or "pull_request" in issue:
        return {"ignored": event}
    if event == "issues" and action in ("opened", "reopened"):
        return push_issues([issue])
    if event == "issues" and action in ("labeled", "unlabeled"):
        return label_changed(issue, data.get("label") or {}, action == "labeled")
    if event == "issue_comment" and action == "created":
        return comment_created(issue, data["comment"])
    return {"ignored": "%s %s" % (event, action)}


def label_changed(issue, label, added):
    card_id = card_of_issue(issue["number"])
    if card_id is None:
        # An issue from before the integration: its card gets all its current labels.
        return push_issues([issue])
    if not label.get("name"):
        return {"ignored": "no label"}
    label_id = trello_label_id(label)
    on_card = label_id is not None and label_id in card_label_ids(card_id)
    if added and not on_card:
        trello.add_label(card_id, trello_label_id(label, create=True))
        return {"card": card_id, "added": label["name"]}
    if not added and on_card:
        trello.remove_label(card_id, label_id)
        return {"card": card_id, "removed": label["name"]}
    return {"card": card_id, "unchanged": label["name"]}


def comment_created(issue, comment):
    card_id = card_of_issue(issue["number"])
    if card_id is None:
        push_issues([issue])
        card_id = card_of_issue(issue["number"])
    trello.add_comment(card_id, "%s\n%s" % (texts.MESSAGE_PREFIX, comment.get("body") or ""))
    return {"card": card_id, "comment": comment.get("id")}


def handle_button():
    issues = github.list_issues(repo(), state="open")
    # Only what a card needs travels in the child jobs' arguments.
    slim = [
        {
            "number": i["number"],
            "title": i["title"],
            "body": i.get("body"),
            "html_url": i.get("html_url"),
            "labels": [{"name": l["name"], "color": l.get("color")} for l in i.get("labels") or []],
        }
        for i in issues
    ]
    for start in range(0, len(slim), ISSUES_PER_JOB):
        chunk = slim[start : start + ISSUES_PER_JOB]
        add_job("push_chunk", description="cards for issues %s" % ", ".join("#%d" % i["number"] for i in chunk))(chunk)
    return {"issues": [i["number"] for i in slim]}


def push_chunk(issues):
    # Issues that got a card since (a webhook, an earlier press) are skipped: linked.
    return push_issues(issues)
