# GitHub <-> Trello demo, nightly label check: for every linked issue and card whose
# labels differ (a webhook was missed, or the integration was off), params
# LABELS_MERGE_STRATEGY decides: USE_GITHUB / USE_TRELLO copy one side over the other,
# UNION adds what either side lacks, INTERSECTION removes what is not on both.


def handle_cron():
    strategy = params.LABELS_MERGE_STRATEGY
    if strategy not in STRATEGIES:
        raise UserError("param LABELS_MERGE_STRATEGY is %r; use one of %s" % (strategy, ", ".join(STRATEGIES)))
    links = search_links(ISSUES_REL, {GITHUB: None, TRELLO: None})
    upgrade_issue_links(links)
    # Links of another repository (GITHUB_REPO was changed) are left alone.
    pairs = [(issue_number(link.get(GITHUB)[0]), link.get(TRELLO)[0]) for link in links]
    pairs = [(number, card_id) for number, card_id in pairs if number is not None]
    if not pairs:
        return {"strategy": strategy, "fixed": []}
    issues = {i["number"]: i for i in github.list_issues(repo(), state="all")}
    cards = {c["id"]: c for c in trello.board_cards(board(), filter="all")}
    fixed = []
    for number, card_id in pairs:
        issue, card = issues.get(number), cards.get(card_id)
        if issue is None or card is None:
            log("issue #%s or its card %s is gone" % (number, card_id), LOG_WARNING)
            continue
        if merge(strategy, issue, card):
            fixed.append(number)
    return {"strategy": strategy, "fixed": fixed}


def merge(strategy, issue, card):
    """Make the labels of a linked issue and card agree; True if something changed."""
    # Labels compared by GitHub name, lower case; a Trello label's GitHub name is its
    # pair's, else its own.
    on_issue = {label["name"].lower(): label for label in issue["labels"]}
    on_card = {}
    for label in card.get("labels") or []:
        name = github_label_name(label)
        if name:
            on_card[name.lower()] = label
    only_issue = sorted(set(on_issue) - set(on_card))
    only_card = sorted(set(on_card) - set(on_issue))
    if not only_issue and not only_card:
        return False
    number = issue["number"]
    if strategy in ("USE_GITHUB", "UNION"):
        for name in only_issue:
            trello.add_label(card["id"], trello_label_id(on_issue[name], create=True))
    if strategy in ("USE_GITHUB", "INTERSECTION"):
        for name in only_card:
            trello.remove_label(card["id"], on_card[name]["id"])
    if strategy in ("USE_TRELLO", "UNION") and only_card:
        github.add_labels(repo(), number, [github_label_name(on_card[name], create=True) for name in only_card])
    if strategy in ("USE_TRELLO", "INTERSECTION"):
        for name in only_issue:
            github.remove_label(repo(), number, on_issue[name]["name"])
    log("issue #%s and card %s: only on the issue %s, only on the card %s (%s)" % (number, card["id"], only_issue, only_card, strategy))
    return True
