-- Links of deleted local rows: when a row of a linked table is deleted (or the table
-- truncated or dropped), its links are deleted in the same transaction.

CREATE TABLE sync.link_system (
    system   text NOT NULL,
    relation text NOT NULL,
    PRIMARY KEY (system, relation)
);
COMMENT ON TABLE sync.link_system IS 'Local tables (as system names) that have links, per relation; maintained by sync_set_link for the cleanup triggers.';
SELECT pg_catalog.pg_extension_config_dump('sync.link_system', '');

-- Statement-level: one DELETE per statement, whatever the number of rows.
CREATE FUNCTION sync.link_cleanup_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sys text := TG_ARGV[0];
    key_expr text := TG_ARGV[1];
BEGIN
    EXECUTE format(
        'DELETE FROM sync.link l
          USING sync.link_system s, (SELECT %s AS k FROM pg_sync_old_rows o) d
          WHERE s.system = $1 AND l.relation = s.relation
            AND ((l.system1 = $1 AND l.ref1 = d.k) OR (l.system2 = $1 AND l.ref2 = d.k))',
        key_expr) USING sys;
    RETURN NULL;
END
$$;

CREATE FUNCTION sync.link_cleanup_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM sync.link l USING sync.link_system s
    WHERE s.system = TG_ARGV[0] AND l.relation = s.relation
      AND (l.system1 = TG_ARGV[0] OR l.system2 = TG_ARGV[0]);
    RETURN NULL;
END
$$;

-- Called by sync_set_link the first time a backend links rows of (relation, table).
-- SECURITY DEFINER: the caller may link rows without owning the table.
CREATE FUNCTION sync.install_link_cleanup(tbl regclass, relation text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sys text;
    key_expr text;
BEGIN
    SELECT n.nspname || '.' || c.relname INTO sys
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    INSERT INTO sync.link_system (system, relation) VALUES (sys, relation)
    ON CONFLICT DO NOTHING;
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'pg_sync_link_cleanup') THEN
        RETURN;
    END IF;
    SELECT CASE WHEN count(*) = 1 THEN 'o.' || min(quote_ident(a.attname)) || '::text'
                ELSE 'ROW(' || string_agg('o.' || quote_ident(a.attname), ', '
                                          ORDER BY array_position(i.indkey::int2[], a.attnum)) || ')::text'
           END
      INTO key_expr
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = tbl AND i.indisprimary;
    EXECUTE format('CREATE OR REPLACE TRIGGER pg_sync_link_cleanup AFTER DELETE ON %s
                      REFERENCING OLD TABLE AS pg_sync_old_rows
                      FOR EACH STATEMENT EXECUTE FUNCTION sync.link_cleanup_delete(%L, %L)',
                   tbl, sys, key_expr);
    EXECUTE format('CREATE OR REPLACE TRIGGER pg_sync_link_truncate AFTER TRUNCATE ON %s
                      FOR EACH STATEMENT EXECUTE FUNCTION sync.link_cleanup_truncate(%L)',
                   tbl, sys);
END
$$;
REVOKE ALL ON FUNCTION sync.install_link_cleanup(regclass, text) FROM PUBLIC;
