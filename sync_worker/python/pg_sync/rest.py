# HTTP/JSON clients for trusted code (module `pg_sync.rest`): providers and core code
# build them with credentials; task code gets them ready to use, never the credentials.
#
# Why it is built this way:
# - Credentials go only to the origin (scheme, host, port) of the client's base URL: a
#   path or link pointing elsewhere is refused, a redirect elsewhere is not followed.
# - Every request and response is a data_out / data_in line of sync.log. Request headers
#   are never logged, and credential values (also URL- or base64-encoded) are replaced by
#   *** in log lines and error messages (a token may be part of a URL, as for Telegram).
# - Connections are kept alive per client and reused by later jobs of the project: a TLS
#   handshake per call would dominate small API calls. An idle connection the server
#   closed is noticed before use.
# - Failures feed the job's retry logic (http_results.py): HTTPClientError (a UserError)
#   for requests the server refused (4xx), HTTPRetryableError (a RetryableJobError) for
#   5xx, 408, 429 and rate limits, HTTPConnectionError (retryable too) when no response came.
import base64 as _base64
import datetime as _datetime
import decimal as _decimal
import http.client as _http
import json as _json
import re as _re
import select as _select
import ssl as _ssl
import threading as _threading
import urllib.parse as _parse
import urllib.request as _request
import uuid as _uuid

from pg_sync import errors as _errors
from pg_sync import http_results as _results
from pg_sync import job as _job

# Split off into http_results.py and settings.py; providers (and docs/providers.md) use
# them as rest.X.
from pg_sync.http_results import ERROR_BODY_LIMIT, ERRORS, HTTPClientError, HTTPConnectionError, HTTPError  # noqa: F401
from pg_sync.http_results import HTTPRetryableError, Response, next_link  # noqa: F401
from pg_sync.settings import Settings

DEFAULT_TIMEOUT = 30.0
# Longest body text written to one log line.
LOG_LIMIT = 20000
MAX_REDIRECTS = 5
USER_AGENT = "pg_sync-worker"
_IDLE_CONNECTIONS = 4
_METHOD = _re.compile(r"^[A-Z]+$")
_IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS"))
_STALE = (_http.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _json_default(value):
    if isinstance(value, (_datetime.datetime, _datetime.date, _datetime.time)):
        return value.isoformat()
    if isinstance(value, (_decimal.Decimal, _uuid.UUID)):
        return str(value)
    ids = getattr(value, "ids", None)
    if isinstance(ids, list):
        return ids
    raise TypeError("cannot send a %s as JSON" % type(value).__name__)


def _alive(conn):
    """A kept-alive connection with nothing to read (a closed one reads EOF)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = _select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class JsonClient:
    """A REST/JSON client bound to one base URL. `get/post/put/patch/delete(path,
    json=None, params=None, headers=None, timeout=None)` return the parsed response body
    (JSON, else text; None when empty); `request(method, path, ...)` is the same for any
    method and `response(...)` returns a Response (status, headers, text, data).

    `path` is relative to the base URL (an absolute URL must have the same origin).
    `params` become the query string, `json` the body (`data=`: form fields or raw text)."""

    __slots__ = (
        "_name",
        "_base",
        "_origin",
        "_prefix",
        "_headers",
        "_auth_params",
        "_timeout",
        "_masks",
        "_idle",
        "_lock",
        "_proxy",
        "_context",
        "_problem",
        "_log_limit",
    )

    def __init__(
        self,
        base_url,
        name="http_json",
        token=None,
        auth_header="Authorization",
        auth_scheme="Bearer",
        user=None,
        password=None,
        auth_params=None,
        path_prefix="",
        headers=None,
        timeout=DEFAULT_TIMEOUT,
        user_agent=USER_AGENT,
        ssl_context=None,
        masks=(),
        problem=None,
        log_limit=LOG_LIMIT,
    ):
        """Trusted code only: credentials are `token` (sent as `auth_header: auth_scheme
        token`), `user` + `password` (HTTP basic), `auth_params` (query parameters added to
        every request, e.g. Trello's key and token) and anything in `path_prefix`. `masks`
        are more values to hide in logs. `problem`: a configuration error raised on use."""
        self._name = str(name)
        self._prefix = path_prefix or ""
        self._timeout = float(timeout)
        self._idle = []
        self._lock = _threading.Lock()
        self._context = ssl_context
        self._proxy = None
        self._problem = problem
        self._log_limit = int(log_limit)
        self._auth_params = list((auth_params or {}).items())
        self._base = None
        self._origin = None
        try:
            self._set_base(base_url)
        except ValueError as e:
            if problem is None:
                self._problem = "%s: %s" % (self._name, e)
        hdrs = {"User-Agent": user_agent, "Accept": "application/json"}
        hdrs.update(headers or {})
        values = [str(v) for v in masks if v]
        if token:
            hdrs[auth_header] = ("%s %s" % (auth_scheme, token)) if auth_scheme else str(token)
            values.append(str(token))
        if user is not None or password is not None:
            pair = "%s:%s" % (user or "", password or "")
            encoded = _base64.b64encode(pair.encode()).decode()
            hdrs["Authorization"] = "Basic " + encoded
            values.extend([encoded, str(password or "")])
        values.extend(str(v) for _, v in self._auth_params if v)
        self._headers = hdrs
        self._masks = sorted(_results.mask_forms(values), key=len, reverse=True)

    def _set_base(self, base_url):
        if not isinstance(base_url, str) or not base_url.strip():
            raise ValueError("no base URL is configured")
        parts = _parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the base URL must be an http:// or https:// URL, not %r" % _results.clip(base_url, 80))
        if parts.username or parts.password:
            raise ValueError("the base URL must not contain credentials (keep them in secrets)")
        if parts.query or parts.fragment:
            raise ValueError("the base URL must not have a query or fragment")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError("the base URL has a bad port") from None
        self._origin = (parts.scheme, parts.hostname.lower(), port)
        self._base = "%s://%s%s" % (parts.scheme, parts.netloc, parts.path.rstrip("/"))
        proxy = _request.getproxies().get(parts.scheme)
        if proxy and not _request.proxy_bypass(parts.hostname):
            p = _parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            auth = {}
            if p.username:
                pair = "%s:%s" % (_parse.unquote(p.username), _parse.unquote(p.password or ""))
                auth["Proxy-Authorization"] = "Basic " + _base64.b64encode(pair.encode()).decode()
            self._proxy = (p.hostname, p.port or 8080, auth)

    # -- public properties ---------------------------------------------------------

    @property
    def name(self):
        """The client's name: the recipient of its log lines."""
        return self._name

    @property
    def base_url(self):
        """The base URL requests are relative to."""
        return self._base

    @property
    def timeout(self):
        """Default seconds to wait for a connection and for each read."""
        return self._timeout

    def __repr__(self):
        return "<%s client %s>" % (self._name, self._base or "(not configured)")

    # -- requests ------------------------------------------------------------------

    def get(self, path, json=None, params=None, headers=None, timeout=None):
        """GET `path`; the parsed response body."""
        return self.request("GET", path, json=json, params=params, headers=headers, timeout=timeout)

    def post(self, path, json=None, params=None, headers=None, timeout=None, data=None):
        """POST `json` (or `data`) to `path`; the parsed response body."""
        return self.request("POST", path, json=json, params=params, headers=headers, timeout=timeout, data=data)

    def put(self, path, json=None, params=None, headers=None, timeout=None, data=None):
        """PUT `json` (or `data`) to `path`; the parsed response body."""
        return self.request("PUT", path, json=json, params=params, headers=headers, timeout=timeout, data=data)

    def patch(self, path, json=None, params=None, headers=None, timeout=None, data=None):
        """PATCH `path` with `json` (or `data`); the parsed response body."""
        return self.request("PATCH", path, json=json, params=params, headers=headers, timeout=timeout, data=data)

    def delete(self, path, json=None, params=None, headers=None, timeout=None):
        """DELETE `path`; the parsed response body (often None)."""
        return self.request("DELETE", path, json=json, params=params, headers=headers, timeout=timeout)

    def request(self, method, path, json=None, params=None, headers=None, timeout=None, data=None, masks=()):
        """Any method; the parsed response body. Raises HTTPClientError (4xx),
        HTTPRetryableError (5xx, 408, 429, rate limit), HTTPConnectionError (no response).
        `masks`: more values (a secret sent in the body...) to hide in this request's log
        lines, errors and response, besides the client's credentials."""
        return self.response(method, path, json=json, params=params, headers=headers, timeout=timeout, data=data, masks=masks).data

    def response(self, method, path, json=None, params=None, headers=None, timeout=None, data=None, masks=()):
        """Like request(), but returns the whole Response (status, headers, text, data)."""
        if self._problem is not None:
            raise _errors.UserError(self._problem)
        method = str(method).upper()
        if not _METHOD.match(method):
            raise ValueError("%r is not an HTTP method" % method)
        mask = self._masker(masks)
        url = self._url(path, params)
        body, ctype, shown_body = self._body(json, data)
        hdrs = dict(self._headers)
        if ctype:
            hdrs["Content-Type"] = ctype
        for key, value in (headers or {}).items():
            if value is None:
                hdrs.pop(str(key), None)
            else:
                hdrs[str(key)] = str(value)
        wait = self._timeout if timeout is None else float(timeout)
        shown = mask(url)
        line = "%s %s" % (method, shown)
        if shown_body:
            line += "\n" + shown_body
        _job.log_transmission(self._name, mask(_results.clip(line, self._log_limit)))
        for _hop in range(MAX_REDIRECTS + 1):
            status, reason, rheaders, raw = self._exchange(method, url, body, hdrs, wait, shown)
            location = rheaders.get("location")
            if status in (301, 302, 303, 307, 308) and location:
                target = _parse.urljoin(url, location)
                follow = self._same_origin(target) and (status in (307, 308) or method in ("GET", "HEAD") or status == 303)
                if follow:
                    _job.log_response(self._name, mask("%d %s %s %s -> %s" % (status, reason, method, shown, target)))
                    if status == 303 and method not in ("GET", "HEAD"):
                        method, body = "GET", None
                        hdrs.pop("Content-Type", None)
                    url, shown = target, mask(target)
                    continue
            break
        # A server may echo credentials (a Location with key= and token=...).
        rheaders = {k: mask(v) for k, v in rheaders.items()}
        text, parsed = _results.decode(raw, rheaders)
        masked = mask(text)
        if masked != text:
            text, parsed = _results.decode(masked.encode(), rheaders)
        line = "%d %s %s %s" % (status, reason, method, shown)
        if text:
            line += "\n" + text
        _job.log_response(self._name, _results.clip(line, self._log_limit))
        if status >= 300:
            raise _results.status_error(self._name, self._mask, method, shown, status, reason, rheaders, text, parsed)
        return Response(status, reason, rheaders, text, parsed, shown)

    def close(self):
        """Close the kept-alive connections (later requests open new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- internals -----------------------------------------------------------------

    def _mask(self, text, masks=None):
        return _results.mask_text(text, self._masks if masks is None else masks)

    def _masker(self, extra):
        """The mask function of one request: the client's values and `extra` ones."""
        if not extra:
            return self._mask
        masks = set(self._masks)
        masks.update(_results.mask_forms([str(v) for v in extra if v]))
        ordered = sorted(masks, key=len, reverse=True)
        return lambda text: self._mask(text, ordered)

    def _same_origin(self, url):
        try:
            p = _parse.urlsplit(url)
            port = p.port or (443 if p.scheme == "https" else 80)
        except ValueError:
            return False
        return (p.scheme, (p.hostname or "").lower(), port) == self._origin

    def _url(self, path, params):
        if not isinstance(path, str):
            raise TypeError("the path must be a str, e.g. '/repos/o/r/issues'")
        if _re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
            if not self._same_origin(path):
                raise _errors.UserError(
                    "%s: refusing to send a request to %s: this client only talks to %s"
                    % (self._name, self._mask(_results.clip(path, 200)), self._base)
                )
            url = path.split("#", 1)[0]
        else:
            path = _parse.quote(path.split("#", 1)[0], safe="/:@!$&'()*+,;=-._~%?")
            url = self._base + self._prefix + ("/" + path.lstrip("/") if path.strip("/") else "")
        if params:
            query = self._query(params)
            if query:
                url += ("&" if "?" in url else "?") + query
        return url

    @staticmethod
    def _query(params):
        pairs = params.items() if isinstance(params, dict) else params
        out = []
        for key, value in pairs:
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if v is None:
                    continue
                if isinstance(v, bool):
                    v = "true" if v else "false"
                out.append((str(key), str(v)))
        return _parse.urlencode(out)

    def _body(self, json, data):
        if json is not None and data is not None:
            raise TypeError("pass json= or data=, not both")
        if json is not None:
            text = _json.dumps(json, default=_json_default, ensure_ascii=False)
            return text.encode(), "application/json", text
        if data is None:
            return None, None, ""
        if isinstance(data, (dict, list, tuple)):
            text = self._query(data)
            return text.encode(), "application/x-www-form-urlencoded", text
        if isinstance(data, str):
            return data.encode(), "text/plain; charset=utf-8", data
        if isinstance(data, (bytes, bytearray)):
            return bytes(data), "application/octet-stream", "<%d bytes>" % len(data)
        raise TypeError("data must be a dict of form fields, a str or bytes")

    def _connect(self, timeout):
        scheme, host, port = self._origin
        if self._proxy is not None:
            phost, pport, pauth = self._proxy
            if scheme == "https":
                conn = _http.HTTPSConnection(phost, pport, timeout=timeout, context=self._tls())
                conn.set_tunnel(host, port, headers=pauth)
                return conn
            return _http.HTTPConnection(phost, pport, timeout=timeout)
        if scheme == "https":
            return _http.HTTPSConnection(host, port, timeout=timeout, context=self._tls())
        return _http.HTTPConnection(host, port, timeout=timeout)

    def _tls(self):
        if self._context is None:
            self._context = _ssl.create_default_context()
        return self._context

    def _checkout(self, timeout):
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _alive(conn):
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                    return conn, True
                conn.close()
        return self._connect(timeout), False

    def _checkin(self, conn):
        with self._lock:
            if len(self._idle) < _IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def _exchange(self, method, url, body, headers, timeout, shown):
        parts = _parse.urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if self._auth_params:
            target += ("&" if "?" in target else "?") + _parse.urlencode(self._auth_params)
        if self._proxy is not None and self._origin[0] == "http":
            # A plain-HTTP proxy takes the absolute URL and its own credentials.
            target = "%s://%s%s" % (parts.scheme, parts.netloc, target)
            headers = dict(headers, **self._proxy[2])
        for attempt in (0, 1):
            conn, reused = self._checkout(timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except BaseException as e:
                conn.close()
                # A kept-alive connection the server closed as the request went out.
                if attempt == 0 and reused and method in _IDEMPOTENT and isinstance(e, _STALE):
                    continue
                if isinstance(e, Exception):
                    raise _results.connection_error(self._name, self._mask, e, method, shown, timeout) from None
                raise
            rheaders = {}
            for key, value in resp.getheaders():
                key = key.lower()
                rheaders[key] = "%s, %s" % (rheaders[key], value) if key in rheaders else value
            if resp.will_close:
                conn.close()
            else:
                self._checkin(conn)
            return resp.status, resp.reason, rheaders, raw
        raise AssertionError("unreachable")


def client_from_settings(prefix, secrets, params, name, default_base_url=None, cls=JsonClient, **options):
    """A JsonClient configured by `<PREFIX>_BASE_URL` (a secret), `_TOKEN` (bearer;
    `_AUTH_HEADER`, `_AUTH_SCHEME` change how it is sent), `_USER` + `_PASSWORD` (basic)
    and `_TIMEOUT`."""
    s = Settings(prefix, secrets, params)
    base, problem = s.base_url(name, default_base_url)
    scheme = s.value("AUTH_SCHEME")
    return cls(
        base,
        name=name,
        token=s.secret("TOKEN"),
        auth_header=s.value("AUTH_HEADER", "Authorization"),
        auth_scheme="Bearer" if scheme is None else ("" if scheme.lower() == "none" else scheme),
        user=s.secret("USER"),
        password=s.secret("PASSWORD"),
        timeout=s.number("TIMEOUT", DEFAULT_TIMEOUT),
        problem=problem,
        **options
    )
