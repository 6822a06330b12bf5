# The REST client against a local HTTP server: answers become data or the right error
# (retryable ones are RetryableJobError, so the queue tries again), credentials never
# reach the log lines, and pagination links are followed by name.
import http.server
import json

import pytest

from pg_sync import rest
from pg_sync.errors import RetryableJobError, UserError

TOKEN = "tok-1234567890-secret"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        seen = self.headers.get("Authorization")
        if self.path.startswith("/ok"):
            body = json.dumps({"auth": seen == "Bearer " + TOKEN, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Link", '<http://example.org/ok?page=2>; rel="next"')
        elif self.path.startswith("/busy"):
            body = b"try later"
            self.send_response(503)
            self.send_header("Retry-After", "1")
        elif self.path.startswith("/limited"):
            body = b"rate limited"
            self.send_response(403)
            self.send_header("X-RateLimit-Remaining", "0")
        else:
            body = b"no such thing " + TOKEN.encode()
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server(serve):
    return serve(Handler)


def test_json_answers_are_parsed_and_the_token_is_sent(server, logs):
    client = rest.JsonClient(server, name="local", token=TOKEN)
    data = client.get("/ok", params={"q": "1"})
    assert data == {"auth": True, "path": "/ok?q=1"}
    r = client.response("GET", "/ok")
    assert r.status == 200 and rest.next_link(r.headers) == "http://example.org/ok?page=2"
    kinds = [(line[1], line[2]) for line in logs]
    assert ("data_out", "local") in kinds and ("data_in", "local") in kinds


def test_server_errors_and_rate_limits_are_retryable(server, logs):
    client = rest.JsonClient(server, token=TOKEN)
    with pytest.raises(RetryableJobError) as e:
        client.get("/busy")
    assert isinstance(e.value, rest.HTTPRetryableError) and e.value.status == 503
    with pytest.raises(RetryableJobError):
        client.get("/limited")


def test_client_errors_are_not_retried_and_the_token_is_masked(server, logs):
    client = rest.JsonClient(server, token=TOKEN)
    with pytest.raises(UserError) as e:
        client.get("/missing")
    assert not isinstance(e.value, RetryableJobError)
    assert e.value.status == 404
    text = str(e.value) + "".join(str(line) for line in logs)
    assert TOKEN not in text


def test_a_refused_connection_is_retryable(logs):
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    client = rest.JsonClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(rest.HTTPConnectionError):
        client.get("/x")


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org", "http://user:pw@example.org", "http://example.org/?q=1", ""],
)
def test_bad_base_urls_are_refused_on_use(url, logs):
    client = rest.JsonClient(url)
    with pytest.raises(Exception) as e:
        client.get("/x")
    assert "pw" not in str(e.value)


def test_names_split_off_rest_are_still_rest_names():
    # Providers (built-in and on eval_context_path) use them as rest.X.
    from pg_sync import http_results, settings

    for name in ("HTTPError", "HTTPClientError", "HTTPRetryableError", "HTTPConnectionError", "ERRORS", "Response", "next_link"):
        assert getattr(rest, name) is getattr(http_results, name)
    assert rest.Settings is settings.Settings
    assert set(rest.ERRORS) == {"HTTPError", "HTTPClientError", "HTTPRetryableError", "HTTPConnectionError"}
