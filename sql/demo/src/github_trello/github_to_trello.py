# GitHub <-> Trello demo, GitHub -> Trello. The GITHUB webhook gets GitHub's events for
# GITHUB_REPO (an organisation's hook sends those of its other repositories too: they are
# answered "ignored"): a new issue gets a card (with its labels), a comment is copied to
# the card once, a label added or removed on the issue is added or removed on the card.
# It reads both content types a GitHub hook may have: application/json, and
# application/x-www-form-urlencoded (payload=<json>); any other body gets 400, so that
# GitHub shows the delivery failed. PUSH_ALL_ISSUES makes cards for all open issues
# without one, ISSUES_PER_JOB per child job.
ISSUES_PER_JOB = 10
EVENTS = ("issues", "issue_comment")


def delivery(httprequest):
    """The event's payload (a dict), or None when the body holds none."""
    if httprequest.json is not None:
        data = httprequest.json
    else:
        try:
            data = json.loads(httprequest.form.get("payload") or "null")
        except ValueError:
            data = None
    return data if isinstance(data, dict) else None


def refuse(why):
    """A 400 answer, which GitHub shows as a failed delivery (the trigger is a form
    trigger so that it can answer other statuses than 200)."""
    log(why, LOG_WARNING)
    return {"error": why}, 400


def handle_webhook(httprequest):
    event = httprequest.headers.get("X-GitHub-Event")
    if not event:
        return refuse("no X-GitHub-Event header: this is not a GitHub webhook delivery")
    data = delivery(httprequest)
    if data is None:
        return refuse(
            "the body of this %s delivery (Content-Type %s) holds no event: a GitHub hook sends "
            "application/json, or application/x-www-form-urlencoded with the event in the field payload"
            % (event, httprequest.headers.get("Content-Type") or "none")
        )
    if event == "ping":
        return {"pong": data.get("zen"), "hook_id": data.get("hook_id")}
    if event not in EVENTS:
        return {"ignored": "%s events: the demo reads %s" % (event, " and ".join(EVENTS))}
    full_name = (data.get("repository") or {}).get("full_name")
    if not is_this_repo(full_name):
        return {"ignored": "%s of repository %s, not GITHUB_REPO %s" % (event, full_name or "(none)", repo())}
    issue = data.get("issue")
    action = data.get("action")
    if not issue or "pull_request" in issue:
        return {"ignored": "%s %s of a pull request" % (event, action)}
    if event == "issues" and action in ("opened", "reopened"):
        return push_issues([issue])
    if event == "issues" and action in ("labeled", "unlabeled"):
        return label_changed(issue, data.get("label") or {}, action == "labeled")
    if event == "issue_comment" and action == "created":
        return comment_created(issue, data["comment"])
    return {"ignored": "%s %s: the demo copies new issues, new comments and labels" % (event, action)}


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
    # Linked once copied: a delivery GitHub sends again (a redelivery, a retry after a
    # timeout) finds the link and copies nothing.
    ref = str(comment["id"])
    copied = get_link(COMMENTS_REL, {GITHUB: ref, TRELLO: None})
    if copied:
        return {"comment": comment["id"], "unchanged": "already on the card as %s" % copied.get(TRELLO)[0]}
    card_id = card_of_issue(issue["number"])
    if card_id is None:
        push_issues([issue])
        card_id = card_of_issue(issue["number"])
    action = trello.add_comment(card_id, "%s\n%s" % (texts.MESSAGE_PREFIX, comment.get("body") or ""))
    set_link(COMMENTS_REL, {GITHUB: ref, TRELLO: action["id"]})
    return {"card": card_id, "comment": comment["id"]}


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
