# Telegram demo, common code: a Telegram user is the partner whose ref is
# "<user id>@telegram" (the user id is also the id of their private chat with the bot).
REF_SUFFIX = "@telegram"


def user_ref(user):
    return "%s%s" % (user["id"], REF_SUFFIX)


def chat_of(partner):
    """The Telegram chat id of a partner, or None when it is not a Telegram user."""
    ref = partner.ref or ""
    if not ref.endswith(REF_SUFFIX) or not ref[: -len(REF_SUFFIX)].lstrip("-").isdigit():
        return None
    return int(ref[: -len(REF_SUFFIX)])


def user_name(user):
    if user.get("username"):
        return "@" + user["username"]
    name = " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part)
    return name or str(user["id"])
