-- Links of deleted rows and dropped tables: when a row of a linked table is deleted
-- (or the table truncated or dropped), its links are deleted in the same transaction.
-- The code is Rust (pg_sync/src/links/cleanup.rs); this file declares it.

-- Installed by sync_set_link on every table whose rows get linked, as the statement
-- triggers pg_sync_link_cleanup (AFTER DELETE, old rows as transition table
-- pg_sync_old_rows) and pg_sync_link_truncate (AFTER TRUNCATE).
-- SECURITY DEFINER: whoever may delete the rows may delete their links.
CREATE FUNCTION sync.link_cleanup() RETURNS trigger
LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pg_sync_link_cleanup';
COMMENT ON FUNCTION sync.link_cleanup() IS 'pg_sync: deletes the links of deleted rows (trigger installed by sync_set_link on linked tables).';

-- DROP TABLE (also DROP SCHEMA ... CASCADE): the links of the dropped tables' rows go.
CREATE FUNCTION sync.links_on_drop() RETURNS event_trigger
LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pg_sync_links_on_drop';
COMMENT ON FUNCTION sync.links_on_drop() IS 'pg_sync: deletes the links of the rows of dropped tables (event trigger pg_sync_links_drop).';

-- No tag filter: tables also go with DROP SCHEMA, DROP OWNED, DROP EXTENSION, ...
CREATE EVENT TRIGGER pg_sync_links_drop ON sql_drop
    EXECUTE FUNCTION sync.links_on_drop();

-- What sync_search_links(relation, refs) filters on, as checked by sync.refs_filter.
CREATE TYPE sync.refs_filter AS (
    relation text,
    system1  text,
    system2  text,
    refs1    text[],
    refs2    text[]
);
COMMENT ON TYPE sync.refs_filter IS 'A checked refs search: the two systems sorted, their refs (NULL = any).';
