# Built-in provider "trello": `trello`, a Trello REST API client (boards' lists and
# labels, cards, comments, card labels) on pg_sync.rest: logged, key and token masked.
#
# Settings:
#   TRELLO_KEY, TRELLO_TOKEN   secrets: API key and token (sent as the query parameters
#                              key= and token=, as Trello expects; masked in logs)
#   TRELLO_BASE_URL            secret; default https://api.trello.com/1 (never a param: it
#                              decides where the key and token go, and developers
#                              write params)
#   TRELLO_TIMEOUT             seconds (default 30)
import re
import urllib.parse

from pg_sync import rest

DEFAULT_BASE_URL = "https://api.trello.com/1"
_ID = re.compile(r"^[A-Za-z0-9]+$")


def _id(value, what):
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError("a Trello %s id is letters and digits, not %r" % (what, value))
    return urllib.parse.quote(value, safe="")


class Trello(rest.JsonClient):
    """Trello REST API client. Methods return Trello's JSON (dicts and lists)."""

    __slots__ = ()

    # -- boards ------------------------------------------------------------------------

    def get_board(self, board_id, **params):
        """The board `board_id` (Trello query parameters as keywords, e.g. fields='name')."""
        return self.get("/boards/%s" % _id(board_id, "board"), params=params)

    def board_lists(self, board_id, filter="open"):
        """Lists of a board (filter: open|closed|all)."""
        return self.get("/boards/%s/lists" % _id(board_id, "board"), params={"filter": filter})

    def board_labels(self, board_id):
        """Labels defined on a board."""
        return self.get("/boards/%s/labels" % _id(board_id, "board"))

    def create_label(self, board_id, name, color=None):
        """Define a label on a board (color: green, yellow, orange, red, purple, blue, sky,
        lime, pink, black, or None)."""
        return self.post("/boards/%s/labels" % _id(board_id, "board"), json={"name": name, "color": color})

    def board_cards(self, board_id, filter="open"):
        """Cards of a board (filter: open|closed|all)."""
        return self.get("/boards/%s/cards" % _id(board_id, "board"), params={"filter": filter})

    def list_cards(self, list_id):
        """Open cards of a list."""
        return self.get("/lists/%s/cards" % _id(list_id, "list"))

    # -- cards ---------------------------------------------------------------------------

    def get_card(self, card_id, **params):
        """The card `card_id`."""
        return self.get("/cards/%s" % _id(card_id, "card"), params=params)

    def create_card(self, list_id, name, desc=None, **fields):
        """A new card in list `list_id`; more fields as keywords (idLabels=[...], pos='top',
        due=...). Returns the card (with its `id`)."""
        payload = dict(fields, idList=list_id, name=name)
        if desc is not None:
            payload["desc"] = desc
        _id(list_id, "list")
        return self.post("/cards", json=payload)

    def update_card(self, card_id, **fields):
        """Change a card: name=, desc=, closed=True (archive), idList= (move), due=..."""
        return self.put("/cards/%s" % _id(card_id, "card"), json=fields)

    # -- comments ------------------------------------------------------------------------

    def card_comments(self, card_id):
        """Comments of a card: actions of type commentCard, newest first (text in
        action['data']['text'])."""
        return self.get("/cards/%s/actions" % _id(card_id, "card"), params={"filter": "commentCard"})

    def add_comment(self, card_id, text):
        """Comment on a card; returns the commentCard action."""
        return self.post("/cards/%s/actions/comments" % _id(card_id, "card"), json={"text": text})

    # -- labels of a card ------------------------------------------------------------------

    def add_label(self, card_id, label_id):
        """Put the board label `label_id` on a card; returns the card's label ids."""
        return self.post("/cards/%s/idLabels" % _id(card_id, "card"), json={"value": label_id})

    def remove_label(self, card_id, label_id):
        """Take the label `label_id` off a card."""
        return self.delete("/cards/%s/idLabels/%s" % (_id(card_id, "card"), _id(label_id, "label")))


def eval_context(secrets, context):
    s = rest.Settings("TRELLO", secrets, context["params"])
    base, problem = s.base_url("trello", DEFAULT_BASE_URL)
    missing = s.missing("KEY", "TOKEN")
    client = Trello(
        base,
        name="trello",
        auth_params={"key": s.secret("KEY") or "", "token": s.secret("TOKEN") or ""},
        timeout=s.number("TIMEOUT", rest.DEFAULT_TIMEOUT),
        problem=problem or (("trello: " + missing) if missing else None),
    )
    helpers = {"trello": client}
    helpers.update(rest.ERRORS)
    return helpers
