# GitHub <-> Trello demo, setup buttons: SETUP_GITHUB registers the GITHUB webhook for the
# repository's "issues" and "issue_comment" events, SETUP_TRELLO the TRELLO webhook for
# the board. Pressing one again registers nothing new.


def handle_button():
    if trigger_name == "SETUP_GITHUB":
        return setup_github()
    if trigger_name == "SETUP_TRELLO":
        return setup_trello()
    raise UserError("unknown button %s" % trigger_name)


def setup_github():
    url = webhooks.GITHUB
    path = "/repos/%s/hooks" % repo()
    for hook in github.get(path) or []:
        if (hook.get("config") or {}).get("url") == url:
            log("GitHub already calls %s (hook %s)" % (url, hook["id"]))
            return {"hook": hook["id"], "created": False}
    hook = github.post(
        path,
        json={"name": "web", "active": True, "events": ["issues", "issue_comment"], "config": {"url": url, "content_type": "json"}},
    )
    return {"hook": hook["id"], "created": True}


def setup_trello():
    url = webhooks.TRELLO
    # Webhooks want the board's full id; the param may be its short link.
    board_id = trello.get_board(board(), fields="id")["id"]
    try:
        hook = trello.post("/webhooks", json={"callbackURL": url, "idModel": board_id, "description": "pg_sync github_trello"})
    except HTTPClientError as e:
        # Trello refuses a second webhook with the same callback, model and token.
        if e.status == 400 and "already exists" in (e.body or ""):
            log("Trello already calls %s" % url)
            return {"hook": None, "created": False}
        raise
    return {"hook": hook["id"], "created": True}
