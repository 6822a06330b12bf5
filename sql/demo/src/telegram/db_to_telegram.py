# Telegram demo, database -> Telegram: an 'out' row of partner_message whose body starts
# with /telegram (db trigger ON_MESSAGE_POSTED) is sent, without that word, to the
# partner's Telegram chat; the row gets the message id and sent_at.


def handle_db(records):
    sent, skipped = [], []
    for message in records:
        if message.sent_at is not None:
            continue  # sent by an earlier try of this job
        partner = env["partner"].browse([message.partner_id])
        chat = chat_of(partner)
        text = message.body[len("/telegram") :].strip()
        if chat is None or not text:
            why = "no text after /telegram" if chat is not None else "partner %s is not a Telegram user" % partner.id
            log("message %s not sent: %s" % (message.id, why), LOG_WARNING)
            skipped.append(message.id)
            continue
        answer = telegram.send_message(chat, text)
        db.execute(
            "UPDATE partner_message SET telegram_message_id = $1, sent_at = now() WHERE id = $2",
            answer["message_id"],
            message.id,
        )
        sent.append(message.id)
    return {"sent": sent, "skipped": skipped}
