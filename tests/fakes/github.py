#!/usr/bin/env python3
# A fake GitHub REST API for tests and demos: repositories, issues, issue comments,
# labels, webhooks, stateful in memory. `python3 github.py --port 0` prints its port.
#
# Auth: "Authorization: Bearer <token>" (or "token <token>") with a token given by
# --token TOKEN[=LOGIN] (repeatable; default github-test-token=octocat); else 401.
# Endpoints (as GitHub's): GET /user; POST /user/repos, /orgs/{org}/repos {name};
# GET /repos/{o}/{r}; issues: GET/POST /repos/{o}/{r}/issues (state, labels, since,
# per_page, page; Link pagination), GET/PATCH .../issues/{n}; comments: GET/POST
# .../issues/{n}/comments, PATCH .../issues/comments/{id}; issue labels: GET/POST/PUT/
# DELETE .../issues/{n}/labels[/{name}]; repo labels: GET/POST .../labels, GET/PATCH/
# DELETE .../labels/{name}; hooks: GET/POST .../hooks {config: {url}, events}. Changes
# (through the API, as on GitHub) are delivered to the hooks as "issues" / "issue_comment"
# events (X-GitHub-Event header). See fakebase.py for the /_fake inspection API, plus
# POST /_fake/repos {"full_name": "o/r"} to create a repository without a token.
import itertools
import urllib.parse
import zlib

import fakebase
from fakebase import HttpError, now_iso

PER_PAGE_DEFAULT = 30


class GitHub(fakebase.Fake):
    name = "github"

    def __init__(self, args):
        self.tokens = {}
        for spec in args.token or ["github-test-token=octocat"]:
            token, _, login = spec.partition("=")
            self.tokens[token] = login or "octocat"
        self.ids = itertools.count(1000)
        super().__init__(args)
        r = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        self.route("GET", "/user", self.get_user)
        self.route("POST", "/user/repos", self.create_user_repo)
        self.route("POST", "/orgs/(?P<org>[^/]+)/repos", self.create_org_repo)
        self.route("GET", r, self.get_repo)
        self.route("GET", r + "/issues", self.list_issues)
        self.route("POST", r + "/issues", self.create_issue)
        self.route("GET", r + r"/issues/(?P<number>\d+)", self.get_issue)
        self.route("PATCH", r + r"/issues/(?P<number>\d+)", self.update_issue)
        self.route("GET", r + r"/issues/(?P<number>\d+)/comments", self.list_comments)
        self.route("POST", r + r"/issues/(?P<number>\d+)/comments", self.create_comment)
        self.route("GET", r + r"/issues/comments/(?P<id>\d+)", self.get_comment)
        self.route("PATCH", r + r"/issues/comments/(?P<id>\d+)", self.update_comment)
        self.route("GET", r + r"/issues/(?P<number>\d+)/labels", self.issue_labels)
        self.route("POST", r + r"/issues/(?P<number>\d+)/labels", self.add_labels)
        self.route("PUT", r + r"/issues/(?P<number>\d+)/labels", self.set_labels)
        self.route("DELETE", r + r"/issues/(?P<number>\d+)/labels", self.clear_labels)
        self.route("DELETE", r + r"/issues/(?P<number>\d+)/labels/(?P<name>.+)", self.remove_label)
        self.route("GET", r + "/labels", self.list_labels)
        self.route("POST", r + "/labels", self.create_label)
        self.route("GET", r + "/labels/(?P<name>.+)", self.get_label)
        self.route("PATCH", r + "/labels/(?P<name>.+)", self.update_label)
        self.route("DELETE", r + "/labels/(?P<name>.+)", self.delete_label)
        self.route("GET", r + "/hooks", self.list_hooks)
        self.route("POST", r + "/hooks", self.create_hook)

    # -- state -------------------------------------------------------------------------

    def state_reset(self):
        self.repos = {}

    def state(self):
        out = {}
        for name, repo in self.repos.items():
            out[name] = {
                "id": repo["id"],
                "issues": [repo["issues"][n] for n in sorted(repo["issues"])],
                "comments": [repo["comments"][c] for c in sorted(repo["comments"])],
                "labels": sorted(repo["labels"].values(), key=lambda l: l["name"].lower()),
                "hooks": repo["hooks"],
            }
        return {"repos": out}

    def login(self, request):
        return self.tokens.get(self.token(request))

    @staticmethod
    def token(request):
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() in ("bearer", "token") else None

    def authorized(self, request):
        return self.token(request) in self.tokens

    def unauthorized(self, request):
        return HttpError(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})

    def not_found(self, request):
        return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, {}

    def user(self, login):
        return {"login": login, "id": zlib.crc32(login.encode()) % 100000, "type": "User"}

    # -- repositories ------------------------------------------------------------------

    def new_repo(self, full_name):
        if full_name in self.repos:
            raise HttpError(422, {"message": "Repository creation failed.", "errors": [{"resource": "Repository", "code": "custom", "field": "name", "message": "name already exists on this account"}]})
        owner, _, name = full_name.partition("/")
        repo = {"id": next(self.ids), "full_name": full_name, "name": name, "owner": owner, "issues": {}, "comments": {}, "labels": {}, "hooks": [], "next_number": 1}
        self.repos[full_name] = repo
        return repo

    def repo_json(self, repo):
        return {"id": repo["id"], "name": repo["name"], "full_name": repo["full_name"], "owner": {"login": repo["owner"]}, "private": False, "url": self.api_url("/repos/" + repo["full_name"])}

    def api_url(self, path):
        return self.base_url + path

    def repo(self, request):
        full = "%s/%s" % (request.match.group("owner"), request.match.group("repo"))
        repo = self.repos.get(full)
        if repo is None:
            raise HttpError(*self.not_found(request)[:2])
        return repo

    def get_user(self, request):
        return self.user(self.login(request))

    def create_user_repo(self, request):
        name = (request.body or {}).get("name") if isinstance(request.body, dict) else None
        if not name:
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Repository", "code": "missing_field", "field": "name"}]})
        return 201, self.repo_json(self.new_repo("%s/%s" % (self.login(request), name)))

    def create_org_repo(self, request):
        name = (request.body or {}).get("name") if isinstance(request.body, dict) else None
        if not name:
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Repository", "code": "missing_field", "field": "name"}]})
        return 201, self.repo_json(self.new_repo("%s/%s" % (request.match.group("org"), name)))

    def inspect_repos(self, request):
        full = (request.body or {}).get("full_name", "") if isinstance(request.body, dict) else ""
        if full.count("/") != 1:
            raise HttpError(400, {"message": "give full_name as owner/name"})
        return self.repo_json(self.new_repo(full))

    def get_repo(self, request):
        return self.repo_json(self.repo(request))

    # -- helpers -----------------------------------------------------------------------

    def paginate(self, request, items):
        try:
            per_page = max(1, min(100, int(request.query.get("per_page", PER_PAGE_DEFAULT))))
            page = max(1, int(request.query.get("page", 1)))
        except ValueError:
            raise HttpError(422, {"message": "Validation Failed"})
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        links = []
        last = max(1, (len(items) + per_page - 1) // per_page)
        query = dict(request.query, per_page=str(per_page))
        if page < last:
            links.append('<%s?%s>; rel="next"' % (self.api_url(request.path), urllib.parse.urlencode(dict(query, page=str(page + 1)))))
            links.append('<%s?%s>; rel="last"' % (self.api_url(request.path), urllib.parse.urlencode(dict(query, page=str(last)))))
        if page > 1:
            links.append('<%s?%s>; rel="prev"' % (self.api_url(request.path), urllib.parse.urlencode(dict(query, page=str(page - 1)))))
        if links:
            headers["Link"] = ", ".join(links)
        return 200, chunk, headers

    def label_of(self, repo, name, create=False):
        label = repo["labels"].get(str(name).lower())
        if label is None and create:
            label = {"id": next(self.ids), "name": str(name), "color": "ededed", "description": None, "default": False}
            repo["labels"][label["name"].lower()] = label
        return label

    def issue(self, request, repo):
        issue = repo["issues"].get(int(request.match.group("number")))
        if issue is None:
            raise HttpError(*self.not_found(request)[:2])
        return issue

    def body_dict(self, request):
        if request.body is None:
            return {}
        if not isinstance(request.body, dict):
            raise HttpError(400, {"message": "Problems parsing JSON"})
        return request.body

    def label_names(self, request):
        body = request.body
        if isinstance(body, dict):
            body = body.get("labels")
        if not isinstance(body, list):
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Label", "code": "invalid", "field": "labels"}]})
        return [item["name"] if isinstance(item, dict) else str(item) for item in body]

    def hook(self, repo, event, payload, sender):
        payload = dict(payload, repository=self.repo_json(repo), sender=self.user(sender))
        for hook in repo["hooks"]:
            if hook["active"] and ("*" in hook["events"] or event in hook["events"]):
                self.deliver(hook["config"]["url"], payload, {"X-GitHub-Event": event, "X-GitHub-Delivery": fakebase.new_id(), "X-GitHub-Hook-ID": str(hook["id"])})

    def touch(self, issue):
        issue["updated_at"] = now_iso()

    # -- issues ------------------------------------------------------------------------

    def list_issues(self, request):
        repo = self.repo(request)
        state = request.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Issue", "field": "state", "code": "invalid"}]})
        wanted = [n.strip().lower() for n in request.query.get("labels", "").split(",") if n.strip()]
        since = request.query.get("since")
        items = []
        for number in sorted(repo["issues"], reverse=True):
            issue = repo["issues"][number]
            if state != "all" and issue["state"] != state:
                continue
            names = {l["name"].lower() for l in issue["labels"]}
            if any(w not in names for w in wanted):
                continue
            if since and issue["updated_at"] < since:
                continue
            items.append(issue)
        return self.paginate(request, items)

    def create_issue(self, request):
        repo = self.repo(request)
        body = self.body_dict(request)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}]})
        number = repo["next_number"]
        repo["next_number"] += 1
        login = self.login(request)
        issue = {
            "id": next(self.ids),
            "number": number,
            "title": title,
            "body": body.get("body"),
            "state": "open",
            "state_reason": None,
            "labels": [self.label_of(repo, n, create=True) for n in body.get("labels") or []],
            "assignees": [self.user(a) for a in body.get("assignees") or []],
            "user": self.user(login),
            "comments": 0,
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "closed_at": None,
            "url": self.api_url("/repos/%s/issues/%d" % (repo["full_name"], number)),
            "html_url": "https://github.com/%s/issues/%d" % (repo["full_name"], number),
        }
        repo["issues"][number] = issue
        self.hook(repo, "issues", {"action": "opened", "issue": issue}, login)
        return 201, issue

    def get_issue(self, request):
        return self.issue(request, self.repo(request))

    def update_issue(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        body = self.body_dict(request)
        login = self.login(request)
        changes = {}
        for key in ("title", "body"):
            if key in body and body[key] != issue[key]:
                changes[key] = {"from": issue[key]}
                issue[key] = body[key]
        if "labels" in body:
            issue["labels"] = [self.label_of(repo, n["name"] if isinstance(n, dict) else n, create=True) for n in body["labels"] or []]
        if "assignees" in body:
            issue["assignees"] = [self.user(a) for a in body["assignees"] or []]
        action = None
        if "state" in body and body["state"] != issue["state"]:
            if body["state"] not in ("open", "closed"):
                raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Issue", "field": "state", "code": "invalid"}]})
            issue["state"] = body["state"]
            issue["closed_at"] = now_iso() if body["state"] == "closed" else None
            issue["state_reason"] = body.get("state_reason") or ("completed" if body["state"] == "closed" else "reopened")
            action = "closed" if body["state"] == "closed" else "reopened"
        self.touch(issue)
        if changes:
            self.hook(repo, "issues", {"action": "edited", "issue": issue, "changes": changes}, login)
        if action:
            self.hook(repo, "issues", {"action": action, "issue": issue}, login)
        return issue

    # -- comments ----------------------------------------------------------------------

    def list_comments(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        since = request.query.get("since")
        items = [c for _, c in sorted(repo["comments"].items()) if c["issue_number"] == issue["number"] and (not since or c["updated_at"] >= since)]
        return self.paginate(request, [self.comment_json(c) for c in items])

    def comment_json(self, comment):
        return {k: v for k, v in comment.items() if k != "issue_number"}

    def create_comment(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        body = self.body_dict(request).get("body")
        if not isinstance(body, str) or not body:
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "missing_field", "field": "body"}]})
        login = self.login(request)
        cid = next(self.ids)
        comment = {
            "id": cid,
            "body": body,
            "user": self.user(login),
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "issue_url": issue["url"],
            "url": self.api_url("/repos/%s/issues/comments/%d" % (repo["full_name"], cid)),
            "issue_number": issue["number"],
        }
        repo["comments"][cid] = comment
        issue["comments"] += 1
        self.touch(issue)
        self.hook(repo, "issue_comment", {"action": "created", "issue": issue, "comment": self.comment_json(comment)}, login)
        return 201, self.comment_json(comment)

    def comment(self, request, repo):
        comment = repo["comments"].get(int(request.match.group("id")))
        if comment is None:
            raise HttpError(*self.not_found(request)[:2])
        return comment

    def get_comment(self, request):
        return self.comment_json(self.comment(request, self.repo(request)))

    def update_comment(self, request):
        repo = self.repo(request)
        comment = self.comment(request, repo)
        body = self.body_dict(request).get("body")
        if not isinstance(body, str) or not body:
            raise HttpError(422, {"message": "Validation Failed"})
        old = comment["body"]
        comment["body"] = body
        comment["updated_at"] = now_iso()
        issue = repo["issues"][comment["issue_number"]]
        self.hook(repo, "issue_comment", {"action": "edited", "issue": issue, "comment": self.comment_json(comment), "changes": {"body": {"from": old}}}, self.login(request))
        return self.comment_json(comment)

    # -- labels of an issue ------------------------------------------------------------

    def issue_labels(self, request):
        repo = self.repo(request)
        return self.paginate(request, list(self.issue(request, repo)["labels"]))

    def _label_events(self, repo, issue, before, login):
        after = {l["name"].lower() for l in issue["labels"]}
        for label in issue["labels"]:
            if label["name"].lower() not in before:
                self.hook(repo, "issues", {"action": "labeled", "issue": issue, "label": label}, login)
        for name in before - after:
            label = repo["labels"].get(name) or {"name": name}
            self.hook(repo, "issues", {"action": "unlabeled", "issue": issue, "label": label}, login)

    def add_labels(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        before = {l["name"].lower() for l in issue["labels"]}
        for name in self.label_names(request):
            if name.lower() not in {l["name"].lower() for l in issue["labels"]}:
                issue["labels"].append(self.label_of(repo, name, create=True))
        self.touch(issue)
        self._label_events(repo, issue, before, self.login(request))
        return issue["labels"]

    def set_labels(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        before = {l["name"].lower() for l in issue["labels"]}
        issue["labels"] = []
        for name in self.label_names(request):
            if name.lower() not in {l["name"].lower() for l in issue["labels"]}:
                issue["labels"].append(self.label_of(repo, name, create=True))
        self.touch(issue)
        self._label_events(repo, issue, before, self.login(request))
        return issue["labels"]

    def clear_labels(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        before = {l["name"].lower() for l in issue["labels"]}
        issue["labels"] = []
        self.touch(issue)
        self._label_events(repo, issue, before, self.login(request))
        return 204, None

    def remove_label(self, request):
        repo = self.repo(request)
        issue = self.issue(request, repo)
        name = request.match.group("name").lower()
        before = {l["name"].lower() for l in issue["labels"]}
        if name not in before:
            raise HttpError(404, {"message": "Label does not exist", "documentation_url": "https://docs.github.com/rest"})
        issue["labels"] = [l for l in issue["labels"] if l["name"].lower() != name]
        self.touch(issue)
        self._label_events(repo, issue, before, self.login(request))
        return issue["labels"]

    # -- labels of a repository --------------------------------------------------------

    def list_labels(self, request):
        repo = self.repo(request)
        return self.paginate(request, sorted(repo["labels"].values(), key=lambda l: l["name"].lower()))

    def create_label(self, request):
        repo = self.repo(request)
        body = self.body_dict(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Label", "code": "missing_field", "field": "name"}]})
        if name.lower() in repo["labels"]:
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Label", "code": "already_exists", "field": "name"}]})
        color = str(body.get("color") or "ededed").lstrip("#")
        label = {"id": next(self.ids), "name": name, "color": color, "description": body.get("description"), "default": False}
        repo["labels"][name.lower()] = label
        return 201, label

    def label(self, request, repo):
        label = repo["labels"].get(request.match.group("name").lower())
        if label is None:
            raise HttpError(*self.not_found(request)[:2])
        return label

    def get_label(self, request):
        return self.label(request, self.repo(request))

    def update_label(self, request):
        repo = self.repo(request)
        label = self.label(request, repo)
        body = self.body_dict(request)
        if "new_name" in body:
            del repo["labels"][label["name"].lower()]
            label["name"] = body["new_name"]
            repo["labels"][label["name"].lower()] = label
        for key in ("color", "description"):
            if key in body:
                label[key] = body[key]
        return label

    def delete_label(self, request):
        repo = self.repo(request)
        label = self.label(request, repo)
        del repo["labels"][label["name"].lower()]
        for issue in repo["issues"].values():
            issue["labels"] = [l for l in issue["labels"] if l is not label]
        return 204, None

    # -- hooks -------------------------------------------------------------------------

    def list_hooks(self, request):
        return self.repo(request)["hooks"]

    def create_hook(self, request):
        repo = self.repo(request)
        body = self.body_dict(request)
        url = (body.get("config") or {}).get("url")
        if not url:
            raise HttpError(422, {"message": "Validation Failed", "errors": [{"resource": "Hook", "code": "custom", "message": "Config must contain url"}]})
        hook = {"id": next(self.ids), "name": "web", "active": body.get("active", True), "events": body.get("events") or ["push"], "config": dict(body["config"])}
        repo["hooks"].append(hook)
        return 201, hook


def main():
    parser = fakebase.arguments("Fake GitHub REST API")
    parser.add_argument("--token", action="append", help="accepted token, TOKEN[=LOGIN] (repeatable)")
    args = parser.parse_args()
    fake = GitHub(args)
    fakebase.serve(fake)


if __name__ == "__main__":
    main()
