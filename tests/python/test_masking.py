# Secret values never reach the job's log lines, errors or responses: the REST client
# replaces its credentials (as sent: in a path, a query, a basic-auth header, a JSON body;
# also URL- or JSON-encoded) by *** wherever a server may echo them. Secrets print no value.
import http.server
import json

import pytest

from pg_sync import http_results, rest, values

TOKEN = "123456:AAbb-CCdd_secret"
PASSWORD = 'pa"ss wörd/+'


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with what it received; /redirect sends the query elsewhere."""

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://elsewhere.example" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        raw = data.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer


@pytest.fixture()
def server(serve):
    return serve(Echo)


def logged(logs):
    return "\n".join(line[3] for line in logs)


def test_the_forms_a_secret_takes_are_all_masked():
    forms = http_results.mask_forms([PASSWORD])
    assert {
        PASSWORD,
        "pa%22ss%20w%C3%B6rd%2F%2B",  # in a path segment or query value
        "pa%22ss+w%C3%B6rd%2F%2B",  # form-encoded
        "pa%22ss%20w%C3%B6rd/%2B",  # in a path
        'pa\\"ss w\\u00f6rd/+',  # in JSON, ASCII-escaped
        'pa\\"ss wörd/+',  # in JSON as is
    } <= forms
    assert "" not in http_results.mask_forms(["", None])


def test_a_token_in_the_path_is_masked_in_logs_and_answers(server, logs):
    client = rest.JsonClient(server, name="bot", path_prefix="/bot" + TOKEN, masks=[TOKEN])
    r = client.response("GET", "/echo", params={"q": TOKEN})
    assert r.url == server + "/bot***/echo?q=***"
    assert r.data["path"] == "/bot***/echo?q=***"
    assert TOKEN not in r.text and "123456%3AAAbb" not in r.text
    text = logged(logs)
    assert "GET %s/bot***/echo?q=***" % server in text
    assert TOKEN not in text and "123456%3A" not in text


def test_basic_credentials_are_masked_as_sent(server, logs):
    client = rest.JsonClient(server, user="ann", password=PASSWORD)
    data = client.get("/echo")
    assert data["auth"] == "Basic ***"
    client.post("/echo", data=PASSWORD)
    client.post("/echo", json={"password": PASSWORD})
    text = logged(logs)
    assert PASSWORD not in text and 'pa\\"ss' not in text and "pa%22ss" not in text
    assert text.count("***") >= 4


def test_query_credentials_are_sent_but_never_logged(server, logs):
    client = rest.JsonClient(server, name="trello", auth_params={"key": "k3y-value", "token": TOKEN})
    data = client.get("/echo", params={"board": "b1"})
    # Sent to the server (which echoes them back), masked on the way into the job.
    assert data["path"] == "/echo?board=b1&key=***&token=***"
    with pytest.raises(rest.HTTPError) as e:
        client.get("/redirect")
    assert e.value.headers["location"] == "http://elsewhere.example/redirect?key=***&token=***"
    assert "k3y-value" not in str(e.value) and TOKEN not in str(e.value)
    text = logged(logs)
    assert "k3y-value" not in text and TOKEN not in text


def test_values_masked_for_one_request_only(server, logs):
    client = rest.JsonClient(server, name="hook")
    client.request("POST", "/echo", json={"secret_token": "hush-123"}, masks=["hush-123"])
    assert "hush-123" not in logged(logs)
    client.post("/echo", json={"note": "hush-123"})
    assert "hush-123" in logged(logs)


def test_a_failed_connection_names_the_url_masked(logs):
    client = rest.JsonClient("http://127.0.0.1:9", name="bot", path_prefix="/bot" + TOKEN, masks=[TOKEN], timeout=2)
    with pytest.raises(rest.HTTPConnectionError) as e:
        client.get("/getMe")
    assert "/bot***/getMe" in str(e.value) and e.value.url == "http://127.0.0.1:9/bot***/getMe"
    assert TOKEN not in str(e.value) + logged(logs)


def test_secrets_print_no_value():
    secrets = values.Secrets("secrets", {"API_TOKEN": TOKEN})
    assert secrets.API_TOKEN == TOKEN
    assert repr(secrets) == "<secrets: 1 values>" and TOKEN not in str(secrets)
    with pytest.raises(AttributeError, match="known: API_TOKEN") as e:
        secrets.OTHER
    assert TOKEN not in str(e.value)
    with pytest.raises(AttributeError, match="read-only"):
        secrets.API_TOKEN = "x"
