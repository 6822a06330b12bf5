# When the REST client's failures make the job try again. The client itself retries once
# only: a request on a kept-alive connection the server dropped, if its method is
# idempotent. Every other retry is the queue's (RetryableJobError: after 5 min, 15 min,
# 60 min, 3 h), so what matters here is which failures are retryable and which are not.
import http.server
import json
import socket
import threading
import urllib.parse

import pytest

from pg_sync import rest, runner
from pg_sync.errors import RetryableJobError, UserError


class Status(http.server.BaseHTTPRequestHandler):
    """/status/<code>?header=value...: answers <code> with those headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = urllib.parse.urlsplit(self.path)
        code = int(parts.path.rsplit("/", 1)[1])
        body = json.dumps({"error": "status %d" % code}).encode()
        self.send_response(code)
        for key, value in urllib.parse.parse_qsl(parts.query):
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server(serve):
    return serve(Status)


@pytest.mark.parametrize(
    "path",
    [
        "/status/500",
        "/status/502",
        "/status/503?Retry-After=30",
        "/status/504",
        "/status/408",
        "/status/425",
        "/status/429?Retry-After=1",
        "/status/403?X-RateLimit-Remaining=0",  # GitHub's primary rate limit
        "/status/403?Retry-After=60",  # and its secondary one
    ],
)
def test_server_errors_timeouts_and_rate_limits_retry_the_job(server, logs, path):
    client = rest.JsonClient(server)
    with pytest.raises(rest.HTTPRetryableError) as e:
        client.get(path)
    err = e.value
    assert isinstance(err, RetryableJobError) and not isinstance(err, UserError)
    assert err.status == int(path.split("/")[2].split("?")[0])
    assert err.data == {"error": "status %d" % err.status}
    assert runner._is_retryable(err)


@pytest.mark.parametrize("path", ["/status/400", "/status/401", "/status/403", "/status/404", "/status/409", "/status/422"])
def test_requests_the_server_refused_fail_the_job_without_retry(server, logs, path):
    client = rest.JsonClient(server)
    with pytest.raises(rest.HTTPClientError) as e:
        client.get(path)
    err = e.value
    assert isinstance(err, UserError) and not isinstance(err, RetryableJobError)
    assert err.status == int(path.rsplit("/", 1)[1]) and "returned %d" % err.status in str(err)
    assert not runner._is_retryable(err)


def test_a_retryable_error_wrapped_by_task_code_still_retries(server, logs):
    client = rest.JsonClient(server)
    try:
        try:
            client.get("/status/503")
        except rest.HTTPError as e:
            raise UserError("sync failed") from e
    except UserError as wrapped:
        assert runner._is_retryable(wrapped)
    try:
        try:
            client.get("/status/503")
        except rest.HTTPError:
            raise UserError("gave up on purpose") from None
    except UserError as dropped:
        assert not runner._is_retryable(dropped)


def test_no_answer_within_the_timeout_is_retryable(logs):
    # A listening socket that never accepts: the connection opens, no answer comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        client = rest.JsonClient("http://127.0.0.1:%d" % silent.getsockname()[1], timeout=0.3)
        with pytest.raises(rest.HTTPConnectionError) as e:
            client.get("/slow")
    assert isinstance(e.value, RetryableJobError) and e.value.status is None
    assert "no answer within 0.3 s (timeout)" in str(e.value)


class KeepAlive:
    """An HTTP/1.1 server on a raw socket that keeps connections open, then drops them:
    it answers the first `answered` requests (counted over all connections) and only
    the first request of each connection; any other request is read and its connection
    closed without an answer. `seen` lists (connection number, request line)."""

    def __init__(self, answered):
        self.answered = answered
        self.seen = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn, n):
        with conn, conn.makefile("rb") as f:
            first = True
            while True:
                line = f.readline()
                if not line:
                    return
                length = 0
                while True:
                    header = f.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                f.read(length)
                self.seen.append((n, line.decode().strip()))
                if not first or self.answered == 0:
                    return  # closed, unanswered
                first = False
                self.answered -= 1
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self):
        self.sock.close()


@pytest.fixture()
def keep_alive():
    servers = []

    def start(answered):
        servers.append(KeepAlive(answered))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_an_idempotent_request_on_a_dropped_connection_is_sent_again_once(keep_alive, logs, method):
    srv = keep_alive(answered=10)
    client = rest.JsonClient(srv.url)
    assert client.get("/first") == {"ok": True}
    assert client.request(method, "/second") == {"ok": True}
    assert srv.seen == [(1, "GET /first HTTP/1.1"), (1, "%s /second HTTP/1.1" % method), (2, "%s /second HTTP/1.1" % method)]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_request_that_may_have_had_effects_is_not_sent_again(keep_alive, logs, method):
    srv = keep_alive(answered=10)
    client = rest.JsonClient(srv.url)
    client.get("/first")
    with pytest.raises(rest.HTTPConnectionError) as e:
        client.request(method, "/second", json={"n": 1})
    assert isinstance(e.value, RetryableJobError)
    assert srv.seen == [(1, "GET /first HTTP/1.1"), (1, "%s /second HTTP/1.1" % method)]


def test_the_client_gives_up_after_one_fresh_connection_fails(keep_alive, logs):
    srv = keep_alive(answered=1)
    client = rest.JsonClient(srv.url)
    client.get("/first")
    with pytest.raises(rest.HTTPConnectionError) as e:
        client.get("/second")
    assert "RemoteDisconnected" in str(e.value)
    assert srv.seen == [(1, "GET /first HTTP/1.1"), (1, "GET /second HTTP/1.1"), (2, "GET /second HTTP/1.1")]
