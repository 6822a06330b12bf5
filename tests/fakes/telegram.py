#!/usr/bin/env python3
# A fake Telegram Bot API for tests and demos: /bot<token>/<method> with getMe,
# sendMessage (recorded), setWebhook, deleteWebhook, getWebhookInfo, getUpdates.
# `python3 telegram.py --port 0` prints its port on the first line.
#
# Auth: the token in the path must be --token (default 123456:telegram-test-token), else
# 401 {"ok": false, "error_code": 401, "description": "Unauthorized"}. Parameters come from
# the query string, a JSON body or a form. Besides fakebase.py's /_fake API:
#   POST /_fake/updates {"chat_id": 42, "text": "hi", "from": {...}}  a user writes to
#        the bot: the update is POSTed to the webhook (with X-Telegram-Bot-Api-Secret-Token
#        when setWebhook had a secret_token) or kept for getUpdates.
# State: "messages" (what the bot sent), "webhook", "updates" (not yet fetched).
import itertools
import re
import time

import fakebase
from fakebase import HttpError

_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")


def bad_request(description):
    return HttpError(400, {"ok": False, "error_code": 400, "description": "Bad Request: " + description})


class Telegram(fakebase.Fake):
    name = "telegram"

    def __init__(self, args):
        self.message_ids = itertools.count(1)
        self.update_ids = itertools.count(100000)
        super().__init__(args)
        self.methods = {
            "getme": self.get_me,
            "sendmessage": self.send_message,
            "setwebhook": self.set_webhook,
            "deletewebhook": self.delete_webhook,
            "getwebhookinfo": self.get_webhook_info,
            "getupdates": self.get_updates,
        }

    def state_reset(self):
        self.messages = []
        self.webhook = {"url": "", "secret_token": None, "allowed_updates": None}
        self.updates = []

    def state(self):
        return {"messages": list(self.messages), "webhook": dict(self.webhook), "updates": list(self.updates)}

    def bot(self):
        return {"id": 1000001, "is_bot": True, "first_name": "pg_sync test bot", "username": "pg_sync_test_bot", "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def authorized(self, request):
        m = _PATH.match(request.path)
        return m is None or m.group("token") == self.args.token

    def unauthorized(self, request):
        return HttpError(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})

    def not_found(self, request):
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}, {}

    def handle(self, request):
        m = _PATH.match(request.path)
        if request.path.startswith("/_fake/") or m is None or not self.authorized(request):
            return super().handle(request)
        failure = self._injected(request.method, request.path)
        if failure:
            if failure.get("delay"):
                time.sleep(float(failure["delay"]))
            if failure.get("status"):
                return failure["status"], failure.get("body", {"ok": False, "error_code": failure["status"], "description": "injected failure"}), {}
        method = self.methods.get(m.group("method").lower())
        if method is None:
            return self.not_found(request)
        try:
            with self.lock:
                return 200, {"ok": True, "result": method(request.params)}, {}
        except HttpError as e:
            return e.status, e.body, e.headers

    # -- methods -----------------------------------------------------------------------

    def get_me(self, params):
        return self.bot()

    def send_message(self, params):
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise bad_request("chat_id is empty")
        text = params.get("text")
        if not text:
            raise bad_request("message text is empty")
        if len(str(text)) > 4096:
            raise bad_request("message is too long")
        try:
            chat = int(chat_id)
        except (TypeError, ValueError):
            chat = chat_id
        message = {
            "message_id": next(self.message_ids),
            "from": self.bot(),
            "chat": {"id": chat, "type": "private" if isinstance(chat, int) and chat > 0 else "channel"},
            "date": int(time.time()),
            "text": str(text),
        }
        extra = {k: v for k, v in params.items() if k not in ("chat_id", "text")}
        self.messages.append(dict(message, options=extra))
        return message

    def set_webhook(self, params):
        url = params.get("url")
        if url is None:
            raise bad_request("url is empty")
        if url and not str(url).startswith(("https://", "http://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = {"url": str(url), "secret_token": params.get("secret_token"), "allowed_updates": params.get("allowed_updates")}
        return True

    def delete_webhook(self, params):
        self.webhook = {"url": "", "secret_token": None, "allowed_updates": None}
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.updates = []
        return True

    def get_webhook_info(self, params):
        return {"url": self.webhook["url"], "has_custom_certificate": False, "pending_update_count": len(self.updates)}

    def get_updates(self, params):
        if self.webhook["url"]:
            raise HttpError(409, {"ok": False, "error_code": 409, "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"})
        offset = int(params.get("offset") or 0)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        limit = int(params.get("limit") or 100)
        return self.updates[:limit]

    # -- a user writes to the bot ----------------------------------------------------------

    def inspect_updates(self, request):
        body = request.body if isinstance(request.body, dict) else {}
        chat_id = body.get("chat_id", 42)
        sender = body.get("from") or {"id": chat_id if isinstance(chat_id, int) else 42, "is_bot": False, "first_name": "Test", "username": "test_user"}
        update = {
            "update_id": next(self.update_ids),
            "message": {
                "message_id": next(self.message_ids),
                "from": sender,
                "chat": {"id": chat_id, "type": "private"},
                "date": int(time.time()),
                "text": body.get("text", ""),
            },
        }
        if self.webhook["url"]:
            headers = {}
            if self.webhook["secret_token"]:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook["secret_token"]
            self.deliver(self.webhook["url"], update, headers)
        else:
            self.updates.append(update)
        return update


def main():
    parser = fakebase.arguments("Fake Telegram Bot API")
    parser.add_argument("--token", default="123456:telegram-test-token")
    args = parser.parse_args()
    fakebase.serve(Telegram(args))


if __name__ == "__main__":
    main()
