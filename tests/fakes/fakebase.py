# Shared machinery of the fake API servers in this directory (github.py, trello.py,
# telegram.py): HTTP/1.1 server, routing, auth hook, request log, injected failures,
# webhook deliveries and the /_fake inspection API. Python 3 standard library only.
#
# Inspection API (no auth), the same on every fake:
#   GET  /_fake/state      everything stored, plus "requests" (calls received, newest
#                          last) and "deliveries" (webhooks sent and their outcome)
#   GET  /_fake/requests   just the calls received
#   POST /_fake/reset      forget all state, requests, failures and deliveries
#   POST /_fake/fail       {"status": 503, "count": 1, "method": "POST", "path": "/x",
#                          "body": {...}, "delay": 2.5}: the next `count` matching calls
#                          (method and path prefix optional) answer `status` with `body`
#                          after `delay` seconds (status 0: only the delay, then normal)
#   POST /_fake/redirect   {"path": "/old", "location": "/new", "status": 301}: calls whose
#                          path starts with `path` are redirected (the rest of the path is
#                          appended to a relative location; an absolute one is used as is)
#   POST /_fake/flush      wait until queued webhook deliveries are sent
import argparse
import json
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpError(Exception):
    """Raised by route handlers: answer `status` with `body` (JSON, or text if a str)."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class Request:
    """What a route handler gets: method, path, query (dict of last values), query_all
    (dict of lists), headers (lower-case names), body (parsed JSON or form, else text),
    params (query merged with a dict body), match (the route's regex match)."""

    def __init__(self, method, path, query_all, headers, body):
        self.method = method
        self.path = path
        self.query_all = query_all
        self.query = {k: v[-1] for k, v in query_all.items()}
        self.headers = headers
        self.body = body
        self.params = dict(self.query)
        if isinstance(body, dict):
            self.params.update(body)
        self.match = None


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Fake:
    """Base of a fake API: subclasses set `name`, fill `routes` and implement
    `state_reset()`, `state()` and `authorized(request)`."""

    name = "fake"

    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.routes = []
        self.deliveries_queue = queue.Queue()
        self.pending = 0
        self.pending_done = threading.Condition(self.lock)
        self.reset()
        threading.Thread(target=self._deliver_loop, name="deliveries", daemon=True).start()

    # -- to override -------------------------------------------------------------------

    def state_reset(self):
        pass

    def state(self):
        return {}

    def authorized(self, request):
        return True

    def unauthorized(self, request):
        return HttpError(401, {"message": "unauthorized"})

    # -- shared ------------------------------------------------------------------------

    def route(self, method, pattern, handler):
        self.routes.append((method, re.compile("^" + pattern + "$"), handler))

    def reset(self):
        with self.lock:
            self.requests = []
            self.failures = []
            self.redirects = []
            self.deliveries = []
            self.state_reset()

    def deliver(self, url, payload, headers=None):
        """Queue a webhook POST of `payload` (JSON) to `url`."""
        with self.lock:
            self.pending += 1
        self.deliveries_queue.put((url, payload, dict(headers or {})))

    def _deliver_loop(self):
        while True:
            url, payload, headers = self.deliveries_queue.get()
            record = {"url": url, "headers": headers, "payload": payload, "status": None, "error": None, "at": now_iso()}
            data = json.dumps(payload).encode()
            headers = dict(headers, **{"Content-Type": "application/json", "User-Agent": "%s-fake-hookshot" % self.name})
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=10) as resp:
                    record["status"] = resp.status
                    record["response"] = resp.read().decode("utf-8", "replace")[:2000]
            except urllib.error.HTTPError as e:
                record["status"] = e.code
                record["response"] = e.read().decode("utf-8", "replace")[:2000]
            except Exception as e:  # noqa: BLE001 - recorded for the test to see
                record["error"] = "%s: %s" % (type(e).__name__, e)
            with self.lock:
                self.deliveries.append(record)
                self.pending -= 1
                self.pending_done.notify_all()

    def flush(self, timeout=30):
        deadline = time.time() + timeout
        with self.lock:
            while self.pending and time.time() < deadline:
                self.pending_done.wait(0.1)
            return self.pending == 0

    def _injected(self, method, path):
        with self.lock:
            for f in self.failures:
                if f["count"] <= 0:
                    continue
                if f.get("method") and f["method"].upper() != method:
                    continue
                if f.get("path") and not path.startswith(f["path"]):
                    continue
                f["count"] -= 1
                return dict(f)
        return None

    def handle(self, request):
        """(status, body, headers) for a request."""
        path = request.path
        # URLs the fake hands out (links, "url" fields) use the Host it was asked by.
        self.base_url = "http://%s" % request.headers.get("host", "%s:%s" % (self.args.host, self.port))
        if path.startswith("/_fake/"):
            return self._inspect(request)
        failure = self._injected(request.method, path)
        if failure:
            if failure.get("delay"):
                time.sleep(float(failure["delay"]))
            if failure.get("status"):
                return failure["status"], failure.get("body", {"message": "injected failure"}), {}
        for r in self.redirects:
            if path.startswith(r["path"]):
                location = r["location"]
                if location.startswith("/"):
                    location = self.base_url + location + path[len(r["path"]):]
                query = urllib.parse.urlencode(request.query_all, doseq=True)
                if query and "?" not in location:
                    location += "?" + query
                return int(r.get("status", 301)), {"message": "Moved Permanently", "url": location}, {"Location": location}
        if not self.authorized(request):
            e = self.unauthorized(request)
            return e.status, e.body, e.headers
        allowed = False
        for method, pattern, handler in self.routes:
            m = pattern.match(path)
            if not m:
                continue
            allowed = True
            if method != request.method:
                continue
            request.match = m
            try:
                with self.lock:
                    result = handler(request)
            except HttpError as e:
                return e.status, e.body, e.headers
            if isinstance(result, tuple):
                status, body = result[0], result[1]
                headers = result[2] if len(result) > 2 else {}
                return status, body, headers
            return 200, result, {}
        if allowed:
            return 405, {"message": "method not allowed"}, {}
        return self.not_found(request)

    def not_found(self, request):
        return 404, {"message": "Not Found"}, {}

    def _inspect(self, request):
        what = request.path[len("/_fake/"):]
        if what == "state" and request.method == "GET":
            with self.lock:
                out = self.state()
                out["requests"] = list(self.requests)
                out["deliveries"] = list(self.deliveries)
                return 200, json.loads(json.dumps(out)), {}
        if what == "requests" and request.method == "GET":
            with self.lock:
                return 200, list(self.requests), {}
        if what == "reset" and request.method == "POST":
            self.reset()
            return 200, {"ok": True}, {}
        if what == "fail" and request.method == "POST":
            spec = request.body if isinstance(request.body, dict) else {}
            spec = dict(spec)
            spec.setdefault("status", 500)
            spec["count"] = int(spec.get("count", 1))
            with self.lock:
                self.failures.append(spec)
            return 200, {"ok": True}, {}
        if what == "redirect" and request.method == "POST":
            spec = request.body if isinstance(request.body, dict) else {}
            if not spec.get("path") or not spec.get("location"):
                return 400, {"message": "give path and location"}, {}
            with self.lock:
                self.redirects.append(dict(spec))
            return 200, {"ok": True}, {}
        if what == "flush" and request.method == "POST":
            return 200, {"ok": self.flush()}, {}
        extra = getattr(self, "inspect_" + what.replace("/", "_"), None)
        if extra is not None:
            with self.lock:
                try:
                    return 200, extra(request), {}
                except HttpError as e:
                    return e.status, e.body, e.headers
        return 404, {"message": "no such inspection endpoint: /_fake/%s" % what}, {}

    def record(self, request, status):
        if request.path.startswith("/_fake/"):
            return
        with self.lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query,
                    "headers": request.headers,
                    "body": request.body,
                    "status": status,
                    "at": now_iso(),
                }
            )


def make_handler(fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "%s-fake" % fake.name

        def log_message(self, fmt, *args):
            if os.environ.get("FAKE_VERBOSE"):
                sys.stderr.write("%s: %s\n" % (fake.name, fmt % args))

        def _serve(self):
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            ctype = (self.headers.get("Content-Type") or "").lower()
            body = None
            if raw:
                text = raw.decode("utf-8", "replace")
                if "json" in ctype:
                    try:
                        body = json.loads(text)
                    except ValueError:
                        body = text
                elif "x-www-form-urlencoded" in ctype:
                    body = {k: v[-1] for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}
                else:
                    body = text
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(self.command, urllib.parse.unquote(parts.path), urllib.parse.parse_qs(parts.query, keep_blank_values=True), headers, body)
            try:
                status, payload, extra = fake.handle(request)
            except Exception as e:  # noqa: BLE001 - a bug of the fake: say so
                status, payload, extra = 500, {"message": "fake server error: %s: %s" % (type(e).__name__, e)}, {}
            fake.record(request, status)
            if payload is None:
                data, out_type = b"", None
            elif isinstance(payload, (bytes, str)):
                data = payload.encode() if isinstance(payload, str) else payload
                out_type = "text/plain; charset=utf-8"
            else:
                data = json.dumps(payload).encode()
                out_type = "application/json; charset=utf-8"
            self.send_response(status)
            if out_type and status != 204:
                self.send_header("Content-Type", out_type)
            for k, v in extra.items():
                self.send_header(k, v)
            if self.command == "HEAD" or status == 204:
                data = b""
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    return Handler


def arguments(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (the process that started us is gone)")
    return parser


def serve(fake):
    """Listen, print the port on the first stdout line, serve until killed (or, with
    --exit-on-stdin-eof, until stdin reaches its end)."""
    server = ThreadingHTTPServer((fake.args.host, fake.args.port), make_handler(fake))
    server.daemon_threads = True
    fake.port = server.server_address[1]
    print(fake.port, flush=True)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:  # noqa: BLE001
            pass
        os._exit(0)

    if fake.args.exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def new_id():
    return uuid.uuid4().hex
