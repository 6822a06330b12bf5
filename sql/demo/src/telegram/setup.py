# Telegram demo, SETUP_TELEGRAM button: have Telegram send the bot's updates to the
# TELEGRAM webhook.


def handle_button():
    telegram_set_webhook(webhooks.TELEGRAM, allowed_updates=["message", "edited_message"])
    return {"webhook": webhooks.TELEGRAM}
