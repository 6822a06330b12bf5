# db2db demo, common code: partners of this database are copied to the partner table of
# a second database (the `postgres` provider, secret POSTGRES_DSN) and linked to their
# copy in relation PARTNER_REL; the link's sync_date is the copy's updated_at.
PARTNER_REL = "db2db_partner"
PARTNERS_PER_JOB = 50


def origin_ref(partner):
    # Marks the remote copy, so that a push tried again finds it instead of copying twice.
    return "%s:%s" % (params.ORIGIN, partner.id)


def push_partners(partners):
    """Copy the partners that have no linked copy yet; returns sync_db2x's summary."""
    copied_at = {}

    def create_copy(partner):
        row = postgres.query_one(
            "INSERT INTO partner (name, email, origin_ref) VALUES ($1, $2, $3) "
            "ON CONFLICT (origin_ref) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email "
            "RETURNING id, updated_at",
            partner.name,
            partner.email,
            origin_ref(partner),
        )
        copied_at[str(row.id)] = row.updated_at
        return row.id

    done = sync_db2x(partners, {"relation": PARTNER_REL, "x": {"create": create_copy}}, create=True)
    # The cron compares remote updated_at with sync_date: both must come from the remote
    # clock, so the new links get the copies' updated_at rather than our now().
    if copied_at:
        for link in partners.search_links(PARTNER_REL):
            if link.external in copied_at:
                link.update_links(copied_at[link.external])
    return done
