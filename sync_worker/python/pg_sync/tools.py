# Libraries and tools of the context (module `pg_sync.tools`). Modules reach task code
# only as read-only proxies listing chosen attributes: a real module would lead to the
# modules it imports (json.codecs.sys.modules ...) and from there to everything.
import base64 as _base64
import datetime as _datetime
import html.parser as _html_parser
import http.client as _http
import ipaddress as _ipaddress
import json as _json
import os as _os
import re as _re
import socket as _socket
import ssl as _ssl
import time as _time
import urllib.parse as _parse

import dateutil.parser as _du_parser
import dateutil.relativedelta as _du_relativedelta
import dateutil.rrule as _du_rrule
import dateutil.tz as _du_tz

from pg_sync import errors as _errors
from pg_sync import job as _job

DEFAULT_SERVER_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_SERVER_DATE_FORMAT = "%Y-%m-%d"


class LibraryProxy:
    """A read-only view of some attributes of a module."""

    __slots__ = ("_name", "_attrs")

    def __init__(self, name, attrs):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_attrs", dict(attrs))

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._attrs[name]
        except KeyError:
            raise AttributeError(
                "%s.%s is not available to task code (available: %s)" % (self._name, name, ", ".join(sorted(self._attrs)))
            ) from None

    def __setattr__(self, name, value):
        raise AttributeError("%s is read-only" % self._name)

    def __delattr__(self, name):
        raise AttributeError("%s is read-only" % self._name)

    def __dir__(self):
        return sorted(self._attrs)

    def __repr__(self):
        return "<library %s>" % self._name


def _wrap(name, module, attrs):
    return LibraryProxy(name, {a: getattr(module, a) for a in attrs if hasattr(module, a)})


_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

json = _wrap("json", _json, ("loads", "dumps", "JSONDecodeError"))
time = _wrap(
    "time",
    _time,
    ("time", "time_ns", "sleep", "strftime", "strptime", "gmtime", "localtime", "mktime", "monotonic", "perf_counter"),
)
datetime = _wrap("datetime", _datetime, ("date", "datetime", "time", "timedelta", "timezone", "tzinfo", "MINYEAR", "MAXYEAR"))
dateutil = LibraryProxy(
    "dateutil",
    {
        "parser": _wrap("dateutil.parser", _du_parser, ("parse", "isoparse", "ParserError")),
        "relativedelta": _wrap("dateutil.relativedelta", _du_relativedelta, ("relativedelta",) + _WEEKDAYS),
        "rrule": _wrap(
            "dateutil.rrule",
            _du_rrule,
            ("rrule", "rruleset", "rrulestr", "YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")
            + _WEEKDAYS,
        ),
        "tz": _wrap("dateutil.tz", _du_tz, ("gettz", "tzutc", "tzoffset", "tzlocal", "UTC")),
    },
)

try:
    from pytz import timezone  # noqa: F401  (Sync Studio code uses pytz's localize())
except ImportError:  # pragma: no cover - python3-tz is installed with the worker
    from zoneinfo import ZoneInfo as timezone  # noqa: F401

b64encode = _base64.b64encode
b64decode = _base64.b64decode


def type2str(obj):
    """The type of a value as text, e.g. "<class 'int'>"."""
    return "%s" % type(obj)


def get_lang(*_args):
    """The language of the job (its `lang`, else the project's); texts.KEY uses it."""
    return _job.lang()


# ---------------------------------------------------------------------------------
# url2base64: downloads chosen by task code
# ---------------------------------------------------------------------------------
# Task code picks the URL, and the download runs on the worker's host: without rules it
# could read the worker's own services (the admin API on 127.0.0.1) or a cloud metadata
# service (169.254.169.254, which hands out the host's credentials). So every host is
# resolved once, each of its addresses checked, and the connection made to a checked
# address (asking DNS again could give another one: rebinding); every redirect target
# is checked the same way. Private networks (10/8, 192.168/16...) are not refused:
# intranet files are a legitimate use.

FETCH_ALLOW_ENV = "SYNC_WORKER_FETCH_ALLOW"
FETCH_MAX_SIZE = 20 * 1024 * 1024
FETCH_MAX_REDIRECTS = 5
_FETCH_CHUNK = 65536
_FETCH_USER_AGENT = "pg_sync-worker"
_THIS_NETWORK = _ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = _ipaddress.ip_address("255.255.255.255")
# Metadata services outside the link-local ranges: AWS's IPv6 one (a unique local
# address) and Alibaba Cloud's (in the shared 100.64/10 range).
_METADATA = frozenset(_ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200"))


def _size_text(n):
    if n % (1024 * 1024) == 0:
        return "%d MiB" % (n // (1024 * 1024))
    return "%d bytes" % n


def _refusal(address):
    """Why the worker must not connect to `address` (an ip_address), or None."""
    if address.is_loopback:
        return "a loopback address (the worker's own host)"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "an unspecified address (the worker's own host)"
    if address.is_multicast:
        return "a multicast address"
    if address == _BROADCAST:
        return "the broadcast address"
    if address in _METADATA:
        return "a cloud metadata address"
    return None


def _fetch_allowed():
    """The networks SYNC_WORKER_FETCH_ALLOW lets through despite the rules: read at each
    call, so a bad value fails the jobs that fetch (saying why), not the worker."""
    networks = []
    for item in _os.environ.get(FETCH_ALLOW_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(_ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _errors.UserError(
                "url2base64: %s holds %r, which is not an IP network: give comma-separated CIDRs such as 127.0.0.1/32,fd00::/8"
                % (FETCH_ALLOW_ENV, item)
            ) from None
    return networks


def _check_address(address, allowed):
    """None when `address` may be used, else why not."""
    # An IPv4-mapped IPv6 address (::ffff:127.0.0.1) reaches the IPv4 address it holds.
    plain = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped is not None else address
    why = _refusal(plain)
    if why is None:
        return None
    for net in allowed:
        if (plain.version == net.version and plain in net) or (address.version == net.version and address in net):
            return None
    return why


def _resolve(url, host, port, allowed, via):
    """The checked (family, sockaddr) pairs to connect to for `host`; UserError when one
    of its addresses is refused (`via`: the URL that redirected to `url`, or None)."""
    try:
        infos = _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM, proto=_socket.IPPROTO_TCP)
    except _socket.gaierror as e:
        raise OSError("url2base64: GET %s failed: cannot resolve the host name %s (%s)" % (url, host, e)) from None
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        # The scope of a link-local IPv6 address (fe80::1%eth0) does not change the rule.
        address = _ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        why = _check_address(address, allowed)
        if why is not None:
            # One refused address refuses the host: a name pointing at the worker's own
            # host besides a public address is no accident.
            shown = (address.ipv4_mapped or address) if address.version == 6 else address
            what = "%s is" % host if _is_ip(host) else "%s resolves to %s," % (host, address)
            raise _errors.UserError(
                "url2base64: refusing to fetch %s%s: %s %s; to allow it, set %s=%s/%d in the worker's environment"
                % (url, " (redirected to by %s)" % via if via else "", what, why, FETCH_ALLOW_ENV, shown, shown.max_prefixlen)
            )
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise OSError("url2base64: GET %s failed: the host name %s has no address" % (url, host))
    return addresses


def _is_ip(host):
    try:
        _ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _pinned_connect(addresses):
    """A socket.create_connection() for http.client that connects only to the checked
    addresses, whatever host name the connection carries (for Host and TLS)."""

    def connect(_host_port, timeout, source_address=None):
        last = None
        for family, sockaddr in addresses:
            sock = _socket.socket(family, _socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                last = e
        raise last

    return connect


def _split(url):
    """(scheme, host, port, request target) of an http(s) URL; ValueError otherwise."""
    if not isinstance(url, str) or not _re.match(r"^https?://", url, _re.IGNORECASE):
        raise ValueError("url2base64 takes an http(s) URL")
    parts = _parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError("url2base64 takes an http(s) URL with a host, not %r" % url[:200])
    if parts.username is not None or parts.password is not None:
        raise ValueError("url2base64 does not send credentials in URLs (user:password@host)")
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError("url2base64: %r has a bad port" % url[:200]) from None
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return scheme, parts.hostname, port, target


def url2base64(url, timeout=30, max_size=FETCH_MAX_SIZE):
    """Download `url` (http or https) and return its content base64-encoded (bytes).

    Refused (UserError): hosts whose addresses are loopback, link-local (cloud metadata),
    unspecified, multicast or broadcast, directly or after a redirect, unless the
    worker's SYNC_WORKER_FETCH_ALLOW lists them; contents over `max_size` bytes (20 MiB).
    `timeout`: seconds for the connection and each read. Failures without an answer and
    answers other than 2xx raise OSError."""
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError("url2base64: timeout must be a positive number of seconds")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
        raise ValueError("url2base64: max_size must be a positive number of bytes")
    allowed = _fetch_allowed()
    via = None
    for _hop in range(FETCH_MAX_REDIRECTS + 1):
        status, reason, location, body = _get(url, timeout, max_size, allowed, via)
        if status in (301, 302, 303, 307, 308) and location:
            # Checked like the first URL on the next turn.
            target = _parse.urljoin(url, location.strip())
            if not _re.match(r"^https?://", target, _re.IGNORECASE):
                raise _errors.UserError("url2base64: refusing to follow the redirect of %s to %s: not an http(s) URL" % (url, target[:200]))
            url, via = target, url
            continue
        if not 200 <= status < 300:
            raise OSError("url2base64: GET %s returned %d %s" % (url, status, reason))
        return _base64.b64encode(body)
    raise OSError("url2base64: GET %s: more than %d redirects" % (url, FETCH_MAX_REDIRECTS))


def _get(url, timeout, max_size, allowed, via):
    """One GET of `url` on a connection to a checked address: (status, reason, Location,
    body); the body is read only for a 2xx answer."""
    scheme, host, port, target = _split(url)
    addresses = _resolve(url, host, port, allowed, via)
    if scheme == "https":
        conn = _http.HTTPSConnection(host, port, timeout=timeout, context=_ssl.create_default_context())
    else:
        conn = _http.HTTPConnection(host, port, timeout=timeout)
    # http.client connects through this attribute: to the checked addresses only, while
    # the Host header and the TLS certificate check use the host name.
    conn._create_connection = _pinned_connect(addresses)
    try:
        conn.request("GET", target, headers={"User-Agent": _FETCH_USER_AGENT, "Accept": "*/*", "Connection": "close"})
        resp = conn.getresponse()
        body = _read_capped(resp, url, max_size) if 200 <= resp.status < 300 else b""
        return resp.status, resp.reason, resp.getheader("Location"), body
    except (_socket.timeout, TimeoutError):
        raise OSError("url2base64: GET %s failed: no answer within %g s (timeout)" % (url, timeout)) from None
    except (OSError, _http.HTTPException) as e:
        raise OSError("url2base64: GET %s failed: %s" % (url, str(e) or type(e).__name__)) from None
    finally:
        conn.close()


def _read_capped(resp, url, max_size):
    """The response body, refusing (UserError) one longer than max_size bytes."""
    too_big = "url2base64: %s is larger than %s, the most url2base64 downloads: pass max_size=<bytes> to allow more" % (
        url,
        _size_text(max_size),
    )
    length = resp.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_size:
        raise _errors.UserError(too_big)
    chunks, total = [], 0
    while True:
        chunk = resp.read(min(_FETCH_CHUNK, max_size + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_size:
            raise _errors.UserError(too_big)
        chunks.append(chunk)


class _TextExtractor(_html_parser.HTMLParser):
    _BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "pre"}
    _SKIP = {"script", "style", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.links = []
        self.skip = 0
        self.href = None

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self.href = dict(attrs).get("href")
        if tag == "li":
            self.parts.append("* ")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self.href:
            if not self.href.startswith(("#", "mailto:", "javascript:")):
                self.links.append(self.href)
                self.parts.append(" [%d]" % len(self.links))
            self.href = None

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(_re.sub(r"\s+", " ", data))


def html2plaintext(html):
    """Plain text of an HTML fragment: tags dropped, blocks on their own lines, links as
    footnotes [n]."""
    if not html:
        return ""
    parser = _TextExtractor()
    parser.feed(str(html))
    parser.close()
    text = "".join(parser.parts)
    lines = [line.strip() for line in text.split("\n")]
    text = _re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if parser.links:
        text += "\n\n" + "\n".join("[%d] %s" % (i + 1, url) for i, url in enumerate(parser.links))
    return text
