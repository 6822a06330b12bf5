# GitHub <-> Trello demo, common code. Issues of params.GITHUB_REPO get a card on board
# params.TRELLO_BOARD_ID, linked in relation ISSUES_REL ({"github": "owner/name#number",
# "trello": card id}); each comment copied to a card is linked in COMMENTS_REL ({"github":
# comment id, "trello": id of the card's comment}); GitHub labels (by name) and Trello
# labels (by id) are paired in LABELS_REL. Every change checks the other side or the
# links first, so that the webhook the change itself causes, or a delivery GitHub sends
# again, finds nothing to do: no change bounces back and forth or is made twice.
ISSUES_REL = "github_trello_issue"
COMMENTS_REL = "github_trello_comment"
LABELS_REL = "github_trello_label"
GITHUB = "github"
TRELLO = "trello"
STRATEGIES = ("USE_TRELLO", "USE_GITHUB", "UNION", "INTERSECTION")

# Trello's label colours and the RGB value GitHub labels made from them get.
TRELLO_COLORS = {
    "green": "61bd4f",
    "yellow": "f2d600",
    "orange": "ff9f1a",
    "red": "eb5a46",
    "purple": "c377e0",
    "blue": "0079bf",
    "sky": "00c2e0",
    "lime": "51e898",
    "pink": "ff78cb",
    "black": "344563",
}


def repo():
    """params.GITHUB_REPO, checked: it becomes part of API paths."""
    name = params.GITHUB_REPO or ""
    parts = name.split("/")
    ok = len(parts) == 2 and all(p and p not in (".", "..") and all(c.isalnum() or c in "-_." for c in p) for p in parts)
    if not ok:
        raise UserError("param GITHUB_REPO must be owner/name, not %r" % name)
    return name


def board():
    if not params.TRELLO_BOARD_ID:
        raise UserError("param TRELLO_BOARD_ID is not set: the id (or short link) of the Trello board")
    return params.TRELLO_BOARD_ID


def rgb(color):
    text = (color or "").lstrip("#")
    try:
        return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)) if len(text) == 6 else None
    except ValueError:
        return None


def trello_color(github_color):
    """The Trello colour nearest to a GitHub label's (hex), or None."""
    want = rgb(github_color)
    if want is None:
        return None
    return min(sorted(TRELLO_COLORS), key=lambda name: sum((a - b) ** 2 for a, b in zip(want, rgb(TRELLO_COLORS[name]))))


def github_color(color_name):
    return TRELLO_COLORS.get(color_name or "", "ededed")


# -- issues and cards ----------------------------------------------------------------


def issue_ref(number):
    """The ref of an issue of GITHUB_REPO in ISSUES_REL: owner/name#number, the name in
    lower case (GitHub's names ignore case). The repository is part of it because an
    organisation's hook sends the issues of all its repositories, each numbered from 1."""
    return "%s#%d" % (repo().lower(), int(number))


def is_this_repo(full_name):
    return (full_name or "").lower() == repo().lower()


def issue_number(ref):
    """The number of the GITHUB_REPO issue of an ISSUES_REL ref; None for an issue of
    another repository (GITHUB_REPO was changed since it was linked)."""
    name, _, number = ref.rpartition("#")
    return int(number) if not name or is_this_repo(name) else None


def upgrade_issue_links(links):
    """The demo before 0.2 linked issues by their number alone (all of GITHUB_REPO): such
    links among `links` are keyed again as owner/name#number, as they are met."""
    for link in links:
        ref = link.get(GITHUB)[0]
        if "#" not in ref:
            card_id = link.get(TRELLO)[0]
            link.unlink()
            set_link(ISSUES_REL, {GITHUB: issue_ref(ref), TRELLO: card_id}, sync_date=link.sync_date)


def card_of_issue(number):
    link = get_link(ISSUES_REL, {GITHUB: [issue_ref(number), str(number)], TRELLO: None})
    if not link:
        return None
    upgrade_issue_links(link)
    return link.get(TRELLO)[0]


def issue_of_card(card_id):
    """The number of the GITHUB_REPO issue a card is linked to, else None."""
    link = get_link(ISSUES_REL, {GITHUB: None, TRELLO: card_id})
    if not link:
        return None
    upgrade_issue_links(link)
    return issue_number(link.get(GITHUB)[0])


def new_card_list():
    """Id of the list new cards go to: the one named params.TRELLO_LIST, else the first."""
    lists = trello.board_lists(board())
    if not lists:
        raise UserError("Trello board %s has no open list to put cards in" % board())
    wanted = (params.get("TRELLO_LIST") or "").strip().lower()
    for lst in lists:
        if lst["name"].strip().lower() == wanted:
            return lst["id"]
    return lists[0]["id"]


def create_card(issue):
    """A card for a GitHub issue, with its labels; returns the card id."""
    desc = "\n\n".join(part for part in (issue.get("body") or "", issue.get("html_url") or "") if part)
    labels = [trello_label_id(label, create=True) for label in issue.get("labels") or []]
    fields = {"idLabels": ",".join(labels)} if labels else {}
    card = trello.create_card(new_card_list(), texts.ISSUE_FROM_GITHUB_PREFIX + issue["title"], desc=desc, **fields)
    return card["id"]


def push_issues(issues):
    """Cards for the GITHUB_REPO issues that have none yet; sync_external's summary."""
    upgrade_issue_links(search_links(ISSUES_REL, {GITHUB: [str(i["number"]) for i in issues], TRELLO: None}))
    return sync_external(
        issues,
        ISSUES_REL,
        {"system": GITHUB, "get_ref": lambda issue: issue_ref(issue["number"])},
        {"system": TRELLO, "create": create_card},
        create=True,
    )


# -- labels ----------------------------------------------------------------------------


def trello_label_id(label, create=False):
    """The Trello label of a GitHub label (a dict with name and color): its pair in
    LABELS_REL, else the board's label of the same name. With create, one is made if
    there is none, and the pair is linked; without, None when there is none."""
    name = label["name"]
    link = get_link(LABELS_REL, {GITHUB: name, TRELLO: None})
    if link:
        return link.get(TRELLO)[0]
    found = None
    for candidate in trello.board_labels(board()):
        if (candidate.get("name") or "").strip().lower() == name.lower():
            found = candidate["id"]
            break
    if not create:
        return found
    if found is None:
        found = trello.create_label(board(), name, trello_color(label.get("color")))["id"]
    if not get_link(LABELS_REL, {GITHUB: None, TRELLO: found}):
        set_link(LABELS_REL, {GITHUB: name, TRELLO: found})
    return found


def github_label_name(label, create=False):
    """The GitHub label name of a Trello label (a dict with id, name, color): its pair in
    LABELS_REL, else its own name (None for an unnamed label). With create, the label is
    made in the repository if it has none of that name, and the pair is linked."""
    link = get_link(LABELS_REL, {GITHUB: None, TRELLO: label["id"]})
    if link:
        return link.get(GITHUB)[0]
    name = (label.get("name") or "").strip()
    if not name or not create:
        return name or None
    try:
        name = github.get_label(repo(), name)["name"]
    except HTTPClientError as e:
        if e.status != 404:
            raise
        name = github.create_label(repo(), name, github_color(label.get("color")))["name"]
    if not get_link(LABELS_REL, {GITHUB: name, TRELLO: None}):
        set_link(LABELS_REL, {GITHUB: name, TRELLO: label["id"]})
    return name


def card_label_ids(card_id):
    return trello.get_card(card_id)["idLabels"]


def issue_label_names(number):
    """Lower-case names of the labels of an issue (GitHub compares them that way)."""
    return {label["name"].lower() for label in github.list_issue_labels(repo(), number)}
