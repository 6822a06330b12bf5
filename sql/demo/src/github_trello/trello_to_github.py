# GitHub <-> Trello demo, Trello -> GitHub. The TRELLO webhook gets the board's actions: a
# label added to or removed from a linked card is added to or removed from its issue.
# Trello checks the callback URL with a HEAD request before it registers a webhook.


def handle_webhook(httprequest):
    if httprequest.method == "HEAD":
        return "ok"
    action = (httprequest.json or {}).get("action") or {}
    kind = action.get("type")
    if kind not in ("addLabelToCard", "removeLabelFromCard"):
        return {"ignored": kind}
    card = action["data"]["card"]
    label = action["data"]["label"]
    number = issue_of_card(card["id"])
    if number is None:
        return {"ignored": "card %s is not linked to an issue of %s" % (card["id"], repo())}
    name = github_label_name(label)
    if name is None:
        return {"ignored": "a label without a name"}
    on_issue = name.lower() in issue_label_names(number)
    if kind == "addLabelToCard" and not on_issue:
        github.add_labels(repo(), number, [github_label_name(label, create=True)])
        return {"issue": number, "added": name}
    if kind == "removeLabelFromCard" and on_issue:
        github.remove_label(repo(), number, name)
        return {"issue": number, "removed": name}
    return {"issue": number, "unchanged": name}
