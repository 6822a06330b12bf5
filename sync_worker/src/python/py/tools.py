# Libraries and tools of the context (module `pg_sync.tools`). Modules reach task code
# only as read-only proxies listing chosen attributes: a real module would lead to the
# modules it imports (json.codecs.sys.modules ...) and from there to everything.
import base64 as _base64
import datetime as _datetime
import html.parser as _html_parser
import json as _json
import re as _re
import time as _time
import urllib.request as _urllib_request

import dateutil.parser as _du_parser
import dateutil.relativedelta as _du_relativedelta
import dateutil.rrule as _du_rrule
import dateutil.tz as _du_tz

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
    """The language of the job (its `lang`, default en_US); texts.KEY uses it."""
    return _job.lang()


def url2base64(url, timeout=30):
    """Download `url` and return its content base64-encoded (bytes)."""
    if not isinstance(url, str) or not _re.match(r"^https?://", url):
        raise ValueError("url2base64 takes an http(s) URL")
    with _urllib_request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
        return _base64.b64encode(response.read())


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
