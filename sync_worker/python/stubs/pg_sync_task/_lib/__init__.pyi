# The libraries task code gets as read-only proxies: only the attributes listed in each
# module here exist at run time (pg_sync.tools), so nothing else type-checks.
