# Built-in provider "github": `github`, a GitHub REST API client (issues, comments,
# labels) on pg_sync.rest: logged, credentials masked, errors mapped to retries.
#
# Settings:
#   GITHUB_TOKEN     secret: a personal access token or app token (Bearer)
#   GITHUB_BASE_URL  secret; default https://api.github.com (never a param: it decides
#                    where the token goes, and developers write params)
#   GITHUB_TIMEOUT   seconds (default 30)
# `repo` arguments are "owner/name"; numbers are issue numbers; list_* read every page.
import re
import urllib.parse

from pg_sync import rest

DEFAULT_BASE_URL = "https://api.github.com"
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def _repo(repo):
    if not isinstance(repo, str) or not _REPO.match(repo) or any(p in (".", "..") for p in repo.split("/")):
        raise ValueError("a repository is given as 'owner/name', not %r" % (repo,))
    return "/repos/" + repo


def _number(number):
    if isinstance(number, bool):
        raise ValueError("an issue number must be an integer, not %r" % (number,))
    try:
        n = int(number)
    except (TypeError, ValueError):
        raise ValueError("an issue number must be an integer, not %r" % (number,)) from None
    if n <= 0:
        raise ValueError("an issue number must be positive, not %r" % (number,))
    return n


def _segment(text):
    return urllib.parse.quote(str(text), safe="")


def _names(labels):
    if isinstance(labels, str):
        labels = [labels]
    return [label["name"] if isinstance(label, dict) else str(label) for label in labels or []]


class GitHub(rest.JsonClient):
    """GitHub REST API client. Methods return GitHub's JSON (dicts and lists)."""

    __slots__ = ()

    def paginate(self, path, params=None, limit=None):
        """Every item of a paginated list (following Link: rel="next"), at most `limit`."""
        query = {"per_page": 100}
        query.update(params or {})
        items, url = [], path
        while url:
            resp = self.response("GET", url, params=query)
            page = resp.data or []
            if not isinstance(page, list):
                raise rest.HTTPError("%s: GET %s did not return a list" % (self.name, resp.url), method="GET", url=resp.url, status=resp.status)
            items.extend(page)
            if limit is not None and len(items) >= limit:
                return items[:limit]
            url, query = rest.next_link(resp.headers), None
        return items

    # -- issues ----------------------------------------------------------------------

    def get_issue(self, repo, number):
        """The issue (or pull request) `number` of `repo`."""
        return self.get("%s/issues/%d" % (_repo(repo), _number(number)))

    def list_issues(self, repo, state="open", labels=None, since=None, include_pulls=False, limit=None, **params):
        """Issues of `repo`: state open|closed|all, labels (names, all required), since
        (ISO time or datetime: updated since). Pull requests are left out unless
        include_pulls. More GitHub filters as keywords (assignee=, sort=, direction=...)."""
        query = dict(params, state=state)
        if labels:
            query["labels"] = ",".join(_names(labels))
        if since is not None:
            query["since"] = since.isoformat() if hasattr(since, "isoformat") else str(since)
        items = self.paginate("%s/issues" % _repo(repo), query)
        if not include_pulls:
            items = [i for i in items if "pull_request" not in i]
        return items[:limit] if limit is not None else items

    def create_issue(self, repo, title, body=None, labels=None, assignees=None, **fields):
        """Open an issue; returns it (with its `number`)."""
        payload = dict(fields, title=title)
        if body is not None:
            payload["body"] = body
        if labels is not None:
            payload["labels"] = _names(labels)
        if assignees is not None:
            payload["assignees"] = list(assignees)
        return self.post("%s/issues" % _repo(repo), json=payload)

    def update_issue(self, repo, number, **fields):
        """Change an issue: title=, body=, state='open'|'closed', labels=[...], assignees=..."""
        if "labels" in fields and fields["labels"] is not None:
            fields["labels"] = _names(fields["labels"])
        return self.patch("%s/issues/%d" % (_repo(repo), _number(number)), json=fields)

    # -- comments --------------------------------------------------------------------

    def list_comments(self, repo, number, since=None, limit=None):
        """Comments of issue `number`, oldest first."""
        query = {}
        if since is not None:
            query["since"] = since.isoformat() if hasattr(since, "isoformat") else str(since)
        return self.paginate("%s/issues/%d/comments" % (_repo(repo), _number(number)), query, limit)

    def create_comment(self, repo, number, body):
        """Comment on issue `number`; returns the comment."""
        return self.post("%s/issues/%d/comments" % (_repo(repo), _number(number)), json={"body": body})

    # -- labels of an issue ----------------------------------------------------------

    def list_issue_labels(self, repo, number):
        """Labels of issue `number` (dicts with name, color, ...)."""
        return self.paginate("%s/issues/%d/labels" % (_repo(repo), _number(number)))

    def add_labels(self, repo, number, labels):
        """Add labels (names) to issue `number`; returns all its labels."""
        return self.post("%s/issues/%d/labels" % (_repo(repo), _number(number)), json={"labels": _names(labels)})

    def remove_label(self, repo, number, label):
        """Remove one label from issue `number` (no error if it did not have it); returns
        its remaining labels."""
        path = "%s/issues/%d/labels/%s" % (_repo(repo), _number(number), _segment(_names([label])[0]))
        try:
            return self.delete(path)
        except rest.HTTPClientError as e:
            if e.status != 404:
                raise
        # 404: the issue does not have the label, or does not exist (then this raises).
        return self.list_issue_labels(repo, number)

    def set_labels(self, repo, number, labels):
        """Replace the labels of issue `number`; returns them."""
        return self.put("%s/issues/%d/labels" % (_repo(repo), _number(number)), json={"labels": _names(labels)})

    # -- labels of a repository ------------------------------------------------------

    def list_labels(self, repo, limit=None):
        """Labels defined in `repo`."""
        return self.paginate("%s/labels" % _repo(repo), limit=limit)

    def get_label(self, repo, name):
        """The label `name` of `repo` (HTTPClientError with status 404 if there is none)."""
        return self.get("%s/labels/%s" % (_repo(repo), _segment(name)))

    def create_label(self, repo, name, color="ededed", description=None):
        """Define a label in `repo` (color: 6 hex digits, no '#')."""
        payload = {"name": name, "color": str(color).lstrip("#")}
        if description is not None:
            payload["description"] = description
        return self.post("%s/labels" % _repo(repo), json=payload)


def eval_context(secrets, context):
    s = rest.Settings("GITHUB", secrets, context["params"])
    base, problem = s.base_url("github", DEFAULT_BASE_URL)
    missing = s.missing("TOKEN")
    client = GitHub(
        base,
        name="github",
        token=s.secret("TOKEN"),
        headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
        timeout=s.number("TIMEOUT", rest.DEFAULT_TIMEOUT),
        problem=problem or (("github: " + missing) if missing else None),
    )
    helpers = {"github": client}
    helpers.update(rest.ERRORS)
    return helpers
