# What a REST request (rest.py) gives back: a Response, or an HTTPError the job retries or
# not; and the masking that keeps credentials out of every message and log line.
import json as _json
import socket as _socket
import ssl as _ssl
import urllib.parse as _parse

from pg_sync import errors as _errors
from pg_sync import job as _job

# Longest response text quoted in an error message.
ERROR_BODY_LIMIT = 2000
MASK = "***"


class Response:
    """`.status`, `.reason`, `.headers` (dict, lower-case names), `.text`, `.data` (the
    body parsed as JSON when it is JSON, else the text; None when empty), `.url`."""

    __slots__ = ("status", "reason", "headers", "text", "data", "url")

    def __init__(self, status, reason, headers, text, data, url):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.text = text
        self.data = data
        self.url = url

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.reason)


def next_link(headers):
    """The rel="next" URL of a Link header (GitHub's pagination), or None."""
    for part in (headers.get("link") or "").split(","):
        section = part.split(";")
        if len(section) < 2:
            continue
        url = section[0].strip()
        if url.startswith("<") and url.endswith(">") and any(s.strip() in ('rel="next"', "rel=next") for s in section[1:]):
            return url[1:-1]
    return None


def decode(raw, headers):
    """(text, data) of a response body: data is the parsed JSON when it is JSON, else the
    text; None when empty."""
    ctype = headers.get("content-type", "")
    charset = "utf-8"
    for param in ctype.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"')
    try:
        text = raw.decode(charset, "replace")
    except LookupError:
        text = raw.decode("utf-8", "replace")
    if not raw:
        return text, None
    if "json" in ctype.lower():
        try:
            return text, _json.loads(text)
        except ValueError:
            return text, text
    return text, text


class HTTPError(Exception, metaclass=_errors.Frozen):
    """An HTTP request failed. `.status` (None when no response came), `.method`, `.url`
    (credentials masked), `.body` (response text), `.data` (the body parsed as JSON, or
    None), `.headers` (response headers, lower-case names)."""

    __module__ = "builtins"

    def __init__(self, message, method=None, url=None, status=None, body=None, data=None, headers=None):
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.data = data
        self.headers = dict(headers or {})


class HTTPClientError(HTTPError, _errors.UserError):
    """The server refused the request (4xx except 408 and 429): the job fails, no retry."""

    __module__ = "builtins"


class HTTPRetryableError(HTTPError, _errors.RetryableJobError):
    """A failure worth trying again later (5xx, 408, 429, rate limit): the job is retried."""

    __module__ = "builtins"


class HTTPConnectionError(HTTPRetryableError):
    """No response: connection refused or lost, host not found, timeout. Retried."""

    __module__ = "builtins"


ERRORS = {
    "HTTPError": HTTPError,
    "HTTPClientError": HTTPClientError,
    "HTTPRetryableError": HTTPRetryableError,
    "HTTPConnectionError": HTTPConnectionError,
}


def retryable(status, headers):
    if status >= 500 or status in (408, 425, 429):
        return True
    # GitHub's primary and secondary rate limits answer 403.
    return status == 403 and (headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers)


def clip(text, limit):
    if len(text) <= limit:
        return text
    return "%s... (%d more characters)" % (text[:limit], len(text) - limit)


def mask_forms(values):
    """The forms a value to hide may take in a log line: as is, URL-encoded (in a path or
    a query), JSON-escaped (in a body)."""
    forms = set()
    for v in values:
        if v:
            forms.update((v, _parse.quote(v, safe=""), _parse.quote_plus(v), _parse.quote(v)))
            forms.update((_json.dumps(v)[1:-1], _json.dumps(v, ensure_ascii=False)[1:-1]))
    forms.discard("")
    return forms


def mask_text(text, masks):
    """`text` with each of `masks` as ***; they come longest first, so that no part of a
    longer one is left visible."""
    for m in masks:
        if m in text:
            text = text.replace(m, MASK)
    return text


def connection_error(name, mask, e, method, shown, timeout):
    """The error for a request that got no response (logged as its response line);
    `shown` is the URL as logged, `mask` the client's mask function."""
    cls = HTTPConnectionError
    if isinstance(e, (_socket.timeout, TimeoutError)):
        why = "no answer within %g s (timeout)" % timeout
    elif isinstance(e, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(e, _socket.gaierror):
        why = "cannot resolve the host name (%s)" % e
    elif isinstance(e, _ssl.SSLCertVerificationError):
        why = "the TLS certificate could not be verified (%s)" % getattr(e, "verify_message", e)
        cls = HTTPError
    elif isinstance(e, ValueError):
        # http.client refuses header values with line breaks and the like.
        return _errors.UserError(mask("%s: %s %s: %s" % (name, method, shown, e)))
    else:
        why = "%s (%s)" % (type(e).__name__, e) if str(e) else type(e).__name__
    message = mask("%s: %s %s failed: %s" % (name, method, shown, why))
    _job.log_response(name, message)
    return cls(message, method=method, url=shown)


def status_error(name, mask, method, shown, status, reason, headers, text, parsed):
    """The error for a response of status 300 or more (a redirect not followed)."""
    if 300 <= status < 400:
        detail = "redirect to %s not followed" % mask(headers.get("location") or "?")
        cls = HTTPError
    else:
        detail = clip(text, ERROR_BODY_LIMIT) if text else "(no body)"
        if retryable(status, headers):
            cls = HTTPRetryableError
        elif status < 500:
            cls = HTTPClientError
        else:
            cls = HTTPError
    message = "%s: %s %s returned %d %s: %s" % (name, method, shown, status, reason, detail)
    return cls(message, method=method, url=shown, status=status, body=text, data=parsed if text else None, headers=headers)
