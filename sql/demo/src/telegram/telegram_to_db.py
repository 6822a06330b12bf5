# Telegram demo, Telegram -> database: the TELEGRAM webhook gets the bot's updates.
# /start creates the partner "<user id>@telegram" (if new) and answers with
# texts.TELEGRAM_WELCOME_MESSAGE; any other message is stored in partner_message
# (direction 'in'), against that partner (created if /start was missed).


def handle_webhook(httprequest):
    if not telegram_update_is_genuine(httprequest):
        return {"ok": False, "error": "wrong secret token"}, 403
    update = httprequest.json or {}
    message = update.get("message") or update.get("edited_message")
    if not message or not message.get("from"):
        return {"ok": True, "ignored": sorted(update)}
    user = message["from"]
    text = message.get("text") or message.get("caption") or "[a message without text]"
    partner = find_or_create_partner(user)
    if text.split(" ")[0].split("@")[0] == "/start":
        sent = telegram.send_message(message["chat"]["id"], texts.TELEGRAM_WELCOME_MESSAGE)
        db.execute(
            "INSERT INTO partner_message (partner_id, direction, body, telegram_message_id, sent_at) "
            "VALUES ($1, 'out', $2, $3, now())",
            partner.id,
            texts.TELEGRAM_WELCOME_MESSAGE,
            sent["message_id"],
        )
        return {"ok": True, "partner": partner.id, "welcomed": True}
    env["partner_message"].create(
        {
            "partner_id": partner.id,
            "direction": "in",
            "body": text,
            "edited": "edited_message" in update,
            "telegram_message_id": message.get("message_id"),
        }
    )
    return {"ok": True, "partner": partner.id}


def find_or_create_partner(user):
    ref = user_ref(user)
    partner = env["partner"].search("ref = $1", ref)
    if partner:
        return partner
    return env["partner"].create({"name": texts.PARTNER_NAME_PREFIX + user_name(user), "ref": ref})
