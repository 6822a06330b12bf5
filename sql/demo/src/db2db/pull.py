# db2db demo, remote -> local: each CHECK_REMOTE_PARTNERS run reads the linked copies
# whose updated_at is newer than their link's sync_date, writes their name and email to
# the local partner and moves the link's sync_date to that updated_at.


def handle_cron():
    links = search_links(PARTNER_REL, {"__external__": None, "public.partner": None})
    if not links:
        log("no partner is linked to a copy yet")
        return {"pulled": []}
    by_copy = {link.external: link for link in links}
    rows = postgres.query(
        "SELECT p.id, p.name, p.email, p.updated_at FROM partner p "
        "JOIN unnest($1::bigint[], $2::timestamptz[]) AS l(id, sync_date) ON l.id = p.id "
        "WHERE p.updated_at > l.sync_date ORDER BY p.id",
        [int(ref) for ref in by_copy],
        [link.sync_date for link in by_copy.values()],
    )
    done = sync_x2db(
        rows,
        {
            "relation": PARTNER_REL,
            "x": {"get_ref": lambda row: row.id},
            "db": {"update": lambda partner, row: partner.write({"name": row.name, "email": row.email})},
        },
        update=True,
    )
    for row in rows:
        by_copy[str(row.id)].update_links(row.updated_at)
    return {"pulled": done["updated"]}
