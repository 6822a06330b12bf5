#!/usr/bin/env python3
# A fake Trello REST API (/1/...) for tests and demos: boards, lists, cards, labels,
# comments (commentCard actions), webhooks, stateful in memory. `--port 0` prints its port.
#
# Auth: query (or body) parameters key= and token= equal to --key / --token (defaults
# trello-test-key / trello-test-token), else 401 "invalid key" / "invalid token".
# Endpoints (as Trello's, parameters from the query string or a JSON/form body):
# GET /1/members/me; POST /1/boards {name, defaultLists, defaultLabels}; GET /1/boards/{id}
# and its /lists, /labels, /cards, /actions; POST /1/boards/{id}/labels {name, color};
# POST /1/lists {name, idBoard}; GET/PUT /1/lists/{id}, GET /1/lists/{id}/cards;
# POST /1/cards {idList, name, desc, idLabels, pos, due}; GET/PUT/DELETE /1/cards/{id};
# GET /1/cards/{id}/actions?filter=commentCard; POST /1/cards/{id}/actions/comments {text};
# PUT /1/actions/{id} {text}; POST /1/cards/{id}/idLabels {value};
# DELETE /1/cards/{id}/idLabels/{idLabel}; POST /1/labels {idBoard, name, color},
# GET/PUT/DELETE /1/labels/{id}; POST /1/webhooks {callbackURL, idModel}, GET/DELETE
# /1/webhooks/{id}. Actions on a board, list or card are POSTed to the webhooks watching
# it as {"action": ..., "model": ...}. See fakebase.py for the /_fake inspection API.
import itertools
import re
import time

import fakebase
from fakebase import HttpError, now_iso

_ID = re.compile(r"^[0-9a-fA-F]{24}$")
COLORS = ("green", "yellow", "orange", "red", "purple", "blue", "sky", "lime", "pink", "black")


class Trello(fakebase.Fake):
    name = "trello"

    def __init__(self, args):
        self.counter = itertools.count(1)
        super().__init__(args)
        b = "/1/boards/(?P<id>[^/]+)"
        c = "/1/cards/(?P<id>[^/]+)"
        self.route("GET", "/1/members/me", self.me)
        self.route("POST", "/1/boards", self.create_board)
        self.route("GET", b, self.get_board)
        self.route("GET", b + "/lists", self.board_lists)
        self.route("GET", b + "/labels", self.board_labels)
        self.route("POST", b + "/labels", self.create_board_label)
        self.route("GET", b + "/cards", self.board_cards)
        self.route("GET", b + "/actions", self.board_actions)
        self.route("POST", "/1/lists", self.create_list)
        self.route("GET", "/1/lists/(?P<id>[^/]+)", self.get_list)
        self.route("PUT", "/1/lists/(?P<id>[^/]+)", self.update_list)
        self.route("GET", "/1/lists/(?P<id>[^/]+)/cards", self.list_cards)
        self.route("POST", "/1/cards", self.create_card)
        self.route("GET", c, self.get_card)
        self.route("PUT", c, self.update_card)
        self.route("DELETE", c, self.delete_card)
        self.route("GET", c + "/actions", self.card_actions)
        self.route("POST", c + "/actions/comments", self.add_comment)
        self.route("POST", c + "/idLabels", self.add_card_label)
        self.route("DELETE", c + "/idLabels/(?P<label>[^/]+)", self.remove_card_label)
        self.route("PUT", "/1/actions/(?P<id>[^/]+)", self.update_action)
        self.route("POST", "/1/labels", self.create_label)
        self.route("GET", "/1/labels/(?P<id>[^/]+)", self.get_label)
        self.route("PUT", "/1/labels/(?P<id>[^/]+)", self.update_label)
        self.route("DELETE", "/1/labels/(?P<id>[^/]+)", self.delete_label)
        self.route("POST", "/1/webhooks", self.create_webhook)
        self.route("GET", "/1/webhooks/(?P<id>[^/]+)", self.get_webhook)
        self.route("DELETE", "/1/webhooks/(?P<id>[^/]+)", self.delete_webhook)

    # -- state -------------------------------------------------------------------------

    def state_reset(self):
        self.boards, self.lists, self.cards, self.labels, self.actions, self.webhooks = {}, {}, {}, {}, {}, {}

    def state(self):
        return {
            "boards": list(self.boards.values()),
            "lists": list(self.lists.values()),
            "cards": [self.card_json(c) for c in self.cards.values()],
            "labels": list(self.labels.values()),
            "actions": list(self.actions.values()),
            "webhooks": list(self.webhooks.values()),
        }

    def new_id(self):
        return "%08x%016x" % (int(time.time()), next(self.counter))

    def authorized(self, request):
        return request.params.get("key") == self.args.key and request.params.get("token") == self.args.token

    def unauthorized(self, request):
        if request.params.get("key") != self.args.key:
            return HttpError(401, "invalid key")
        return HttpError(401, "invalid token")

    def not_found(self, request):
        return 404, "The requested resource was not found.", {}

    def member(self):
        return {"id": "5c0000000000000000000001", "username": "pgsync", "fullName": "pg_sync test member"}

    def find(self, table, value, what):
        if not isinstance(value, str) or not _ID.match(value):
            raise HttpError(400, "invalid id")
        item = table.get(value)
        if item is None:
            raise HttpError(404, "The requested resource was not found.")
        return item

    def required(self, request, key):
        value = request.params.get(key)
        if value in (None, ""):
            raise HttpError(400, "invalid value for %s" % key)
        return value

    @staticmethod
    def flag(value, default):
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        return str(value).lower() == "true"

    # -- actions and webhooks -------------------------------------------------------------

    def action(self, kind, board, data, model_ids):
        action = {
            "id": self.new_id(),
            "idMemberCreator": self.member()["id"],
            "type": kind,
            "date": now_iso(),
            "data": dict(data, board={"id": board["id"], "name": board["name"]}),
            "memberCreator": self.member(),
        }
        self.actions[action["id"]] = action
        for hook in self.webhooks.values():
            if hook["active"] and hook["idModel"] in model_ids:
                model = self.boards.get(hook["idModel"]) or self.lists.get(hook["idModel"]) or self.card_json(self.cards.get(hook["idModel"]))
                self.deliver(hook["callbackURL"], {"action": action, "model": model, "webhook": hook})
        return action

    def card_ref(self, card):
        return {"id": card["id"], "name": card["name"], "idShort": card["idShort"], "shortLink": card["shortLink"]}

    def card_json(self, card):
        if card is None:
            return None
        out = dict(card)
        out["labels"] = [self.labels[i] for i in card["idLabels"] if i in self.labels]
        return out

    def card_models(self, card):
        return {card["id"], card["idList"], card["idBoard"]}

    # -- boards ------------------------------------------------------------------------

    def me(self, request):
        return self.member()

    def create_board(self, request):
        name = self.required(request, "name")
        board = {"id": self.new_id(), "name": name, "desc": request.params.get("desc", ""), "closed": False, "url": "https://trello.com/b/fake/%s" % name}
        self.boards[board["id"]] = board
        if self.flag(request.params.get("defaultLists"), True):
            for pos, list_name in enumerate(("To Do", "Doing", "Done")):
                lst = {"id": self.new_id(), "name": list_name, "idBoard": board["id"], "closed": False, "pos": (pos + 1) * 16384}
                self.lists[lst["id"]] = lst
        if self.flag(request.params.get("defaultLabels"), True):
            for color in COLORS[:6]:
                label = {"id": self.new_id(), "idBoard": board["id"], "name": "", "color": color}
                self.labels[label["id"]] = label
        return board

    def get_board(self, request):
        return self.find(self.boards, request.match.group("id"), "board")

    def filtered(self, items, request):
        which = request.query.get("filter", "open")
        if which == "all":
            return items
        closed = which == "closed"
        return [i for i in items if bool(i.get("closed")) == closed]

    def board_lists(self, request):
        board = self.get_board(request)
        items = sorted((l for l in self.lists.values() if l["idBoard"] == board["id"]), key=lambda l: l["pos"])
        return self.filtered(items, request)

    def board_labels(self, request):
        board = self.get_board(request)
        return [l for l in self.labels.values() if l["idBoard"] == board["id"]]

    def create_board_label(self, request):
        board = self.get_board(request)
        return self.new_label(board, request)

    def new_label(self, board, request):
        name = request.params.get("name")
        if name is None:
            raise HttpError(400, "invalid value for name")
        color = request.params.get("color")
        if color in ("", "null"):
            color = None
        if color is not None and color not in COLORS:
            raise HttpError(400, "invalid value for color")
        label = {"id": self.new_id(), "idBoard": board["id"], "name": name, "color": color}
        self.labels[label["id"]] = label
        return label

    def board_cards(self, request):
        board = self.get_board(request)
        items = sorted((c for c in self.cards.values() if c["idBoard"] == board["id"]), key=lambda c: c["pos"])
        return [self.card_json(c) for c in self.filtered(items, request)]

    def board_actions(self, request):
        board = self.get_board(request)
        return self.actions_of(request, lambda a: a["data"]["board"]["id"] == board["id"])

    def actions_of(self, request, keep):
        kinds = [k for k in request.query.get("filter", "all").split(",") if k]
        items = [a for a in self.actions.values() if keep(a) and ("all" in kinds or a["type"] in kinds)]
        return sorted(items, key=lambda a: a["id"], reverse=True)

    # -- lists -------------------------------------------------------------------------

    def create_list(self, request):
        board = self.find(self.boards, self.required(request, "idBoard"), "board")
        existing = [l["pos"] for l in self.lists.values() if l["idBoard"] == board["id"]]
        lst = {"id": self.new_id(), "name": self.required(request, "name"), "idBoard": board["id"], "closed": False, "pos": max(existing or [0]) + 16384}
        self.lists[lst["id"]] = lst
        self.action("createList", board, {"list": {"id": lst["id"], "name": lst["name"]}}, {board["id"]})
        return lst

    def get_list(self, request):
        return self.find(self.lists, request.match.group("id"), "list")

    def update_list(self, request):
        lst = self.get_list(request)
        for key in ("name",):
            if key in request.params:
                lst[key] = request.params[key]
        if "closed" in request.params:
            lst["closed"] = self.flag(request.params["closed"], False)
        return lst

    def list_cards(self, request):
        lst = self.get_list(request)
        items = sorted((c for c in self.cards.values() if c["idList"] == lst["id"] and not c["closed"]), key=lambda c: c["pos"])
        return [self.card_json(c) for c in items]

    # -- cards -------------------------------------------------------------------------

    def label_ids(self, value, board):
        if value is None:
            return []
        ids = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
        for i in ids:
            label = self.find(self.labels, i, "label")
            if label["idBoard"] != board["id"]:
                raise HttpError(400, "invalid value for idLabels")
        return list(dict.fromkeys(ids))

    def create_card(self, request):
        lst = self.find(self.lists, self.required(request, "idList"), "list")
        board = self.boards[lst["idBoard"]]
        siblings = [c["pos"] for c in self.cards.values() if c["idList"] == lst["id"]]
        short = sum(1 for c in self.cards.values() if c["idBoard"] == board["id"]) + 1
        card = {
            "id": self.new_id(),
            "name": request.params.get("name") or "",
            "desc": request.params.get("desc") or "",
            "idList": lst["id"],
            "idBoard": board["id"],
            "idLabels": self.label_ids(request.params.get("idLabels"), board),
            "closed": False,
            "due": request.params.get("due"),
            "pos": (min(siblings or [16384]) / 2) if request.params.get("pos") == "top" else max(siblings or [0]) + 16384,
            "idShort": short,
            "shortLink": "fk%06d" % short,
            "dateLastActivity": now_iso(),
        }
        card["url"] = "https://trello.com/c/%s" % card["shortLink"]
        self.cards[card["id"]] = card
        self.action("createCard", board, {"card": self.card_ref(card), "list": {"id": lst["id"], "name": lst["name"]}}, self.card_models(card))
        return self.card_json(card)

    def get_card(self, request):
        return self.card_json(self.find(self.cards, request.match.group("id"), "card"))

    def update_card(self, request):
        card = self.find(self.cards, request.match.group("id"), "card")
        board = self.boards[card["idBoard"]]
        old = {}
        models = self.card_models(card)
        for key in ("name", "desc", "due"):
            if key in request.params and request.params[key] != card[key]:
                old[key] = card[key]
                card[key] = request.params[key]
        if "closed" in request.params:
            closed = self.flag(request.params["closed"], False)
            if closed != card["closed"]:
                old["closed"] = card["closed"]
                card["closed"] = closed
        if "idList" in request.params and request.params["idList"] != card["idList"]:
            lst = self.find(self.lists, request.params["idList"], "list")
            old["idList"] = card["idList"]
            card["idList"] = lst["id"]
            models |= self.card_models(card)
        if "idLabels" in request.params:
            card["idLabels"] = self.label_ids(request.params["idLabels"], board)
        card["dateLastActivity"] = now_iso()
        if old:
            data = {"card": dict(self.card_ref(card), **{k: card[k] for k in old}), "old": old}
            if "idList" in old:
                data["listBefore"] = {"id": old["idList"], "name": self.lists[old["idList"]]["name"]}
                data["listAfter"] = {"id": card["idList"], "name": self.lists[card["idList"]]["name"]}
            self.action("updateCard", board, data, models)
        return self.card_json(card)

    def delete_card(self, request):
        card = self.find(self.cards, request.match.group("id"), "card")
        board = self.boards[card["idBoard"]]
        models = self.card_models(card)
        del self.cards[card["id"]]
        self.action("deleteCard", board, {"card": {"id": card["id"], "idShort": card["idShort"]}, "list": {"id": card["idList"]}}, models)
        return {"limits": {}}

    def card_actions(self, request):
        card = self.find(self.cards, request.match.group("id"), "card")
        return self.actions_of(request, lambda a: (a["data"].get("card") or {}).get("id") == card["id"])

    def add_comment(self, request):
        card = self.find(self.cards, request.match.group("id"), "card")
        text = request.params.get("text")
        if not text:
            raise HttpError(400, "invalid value for text")
        board = self.boards[card["idBoard"]]
        lst = self.lists[card["idList"]]
        card["dateLastActivity"] = now_iso()
        return self.action("commentCard", board, {"text": text, "card": self.card_ref(card), "list": {"id": lst["id"], "name": lst["name"]}}, self.card_models(card))

    def update_action(self, request):
        action = self.find(self.actions, request.match.group("id"), "action")
        if action["type"] != "commentCard":
            raise HttpError(400, "only comments can be edited")
        text = self.required(request, "text")
        action["data"]["text"] = text
        action["data"]["dateLastEdited"] = now_iso()
        card = self.cards.get(action["data"]["card"]["id"])
        if card is not None:
            board = self.boards[card["idBoard"]]
            self.action("updateComment", board, {"action": {"id": action["id"], "text": text}, "card": self.card_ref(card)}, self.card_models(card))
        return action

    def add_card_label(self, request):
        card = self.find(self.cards, request.match.group("id"), "card")
        label = self.find(self.labels, self.required(request, "value"), "label")
        if label["idBoard"] != card["idBoard"]:
            raise HttpError(400, "invalid value for value")
        if label["id"] in card["idLabels"]:
            raise HttpError(400, "that label is already on the card")
        card["idLabels"].append(label["id"])
        board = self.boards[card["idBoard"]]
        self.action("addLabelToCard", board, {"card": self.card_ref(card), "label": dict(label), "text": label["name"]}, self.card_models(card))
        return list(card["idLabels"])

    def remove_card_label(self, request):
        card = self.find(self.cards, request.match.group("id"), "card")
        label = self.find(self.labels, request.match.group("label"), "label")
        if label["id"] not in card["idLabels"]:
            raise HttpError(400, "that label is not on the card")
        card["idLabels"].remove(label["id"])
        board = self.boards[card["idBoard"]]
        self.action("removeLabelFromCard", board, {"card": self.card_ref(card), "label": dict(label), "text": label["name"]}, self.card_models(card))
        return {"_value": None}

    # -- labels --------------------------------------------------------------------------

    def create_label(self, request):
        board = self.find(self.boards, self.required(request, "idBoard"), "board")
        return self.new_label(board, request)

    def get_label(self, request):
        return self.find(self.labels, request.match.group("id"), "label")

    def update_label(self, request):
        label = self.get_label(request)
        for key in ("name", "color"):
            if key in request.params:
                label[key] = request.params[key]
        return label

    def delete_label(self, request):
        label = self.get_label(request)
        del self.labels[label["id"]]
        for card in self.cards.values():
            if label["id"] in card["idLabels"]:
                card["idLabels"].remove(label["id"])
        return {"limits": {}}

    # -- webhooks --------------------------------------------------------------------------

    def create_webhook(self, request):
        url = self.required(request, "callbackURL")
        model = self.required(request, "idModel")
        if model not in self.boards and model not in self.lists and model not in self.cards:
            raise HttpError(400, "invalid value for idModel")
        hook = {"id": self.new_id(), "description": request.params.get("description", ""), "idModel": model, "callbackURL": url, "active": True}
        self.webhooks[hook["id"]] = hook
        return hook

    def get_webhook(self, request):
        return self.find(self.webhooks, request.match.group("id"), "webhook")

    def delete_webhook(self, request):
        hook = self.get_webhook(request)
        del self.webhooks[hook["id"]]
        return {"_value": None}


def main():
    parser = fakebase.arguments("Fake Trello REST API")
    parser.add_argument("--key", default="trello-test-key")
    parser.add_argument("--token", default="trello-test-token")
    args = parser.parse_args()
    fakebase.serve(Trello(args))


if __name__ == "__main__":
    main()
