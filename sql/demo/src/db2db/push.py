# db2db demo, local -> remote: a partner inserted here is copied at once (db trigger
# LOCAL_PARTNER_CREATED); the PUSH_ALL_PARTNERS button copies every partner that has no
# copy yet, in child jobs of PARTNERS_PER_JOB partners (add_job).


def handle_db(records):
    return push_partners(records)


def handle_button():
    partners = env["partner"].search(order="id")
    links = partners.search_links(PARTNER_REL)
    linked = set(links.record.ids) if links else set()
    todo = [p.id for p in partners if p.id not in linked]
    for start in range(0, len(todo), PARTNERS_PER_JOB):
        chunk = todo[start : start + PARTNERS_PER_JOB]
        add_job("push_chunk", description="copy partners %s to %s" % (chunk[0], chunk[-1]))(chunk)
    log("%d partners without a copy, %d jobs queued" % (len(todo), (len(todo) + PARTNERS_PER_JOB - 1) // PARTNERS_PER_JOB))
    return {"queued": todo}


def push_chunk(ids):
    # Partners copied since the button was pressed (by the db trigger, or a press before)
    # are skipped by sync_db2x: they are linked.
    return push_partners(env["partner"].browse(ids).exists())
