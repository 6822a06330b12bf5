# Rows and records (pg_sync.records) without a database: Row access, the text form of
# primary keys in links, record sets (browse, set operations, old images of deleted
# rows), and the SQL and bound arguments they send, read from a stand-in for _native.
import pytest

from pg_sync import _native, records
from pg_sync.errors import UserError

PARTNER = ("oid", "schema", "name", "pk", "pk_types")


class FakeNative:
    """Records each call; query() answers from a queue of (column names, rows)."""

    def __init__(self):
        self.calls = []
        self.answers = []

    def query(self, sql, args):
        self.calls.append(("query", " ".join(sql.split()), args))
        return self.answers.pop(0) if self.answers else ((), [])

    def execute(self, sql, args):
        self.calls.append(("execute", " ".join(sql.split()), args))
        return 1

    def savepoint(self, op):
        self.calls.append(("savepoint", op))


@pytest.fixture()
def native(monkeypatch):
    fake = FakeNative()
    for name in ("query", "execute", "savepoint"):
        monkeypatch.setattr(_native, name, getattr(fake, name))
    return fake


def partner():
    return records.Model(16384, "public", "partner", ("id",), ("integer",))


def pair_table():
    return records.Model(16385, "s", "pair", ("a", "b"), ("integer", "text"))


# -- rows -------------------------------------------------------------------------


def test_a_row_reads_by_attribute_name_and_position():
    row = records.make_row(("id", "name", "id"), (1, "Ann", 2))
    assert (row.id, row["name"], row[2], tuple(row)) == (1, "Ann", 2, (1, "Ann", 2))
    assert row.get("email", "-") == "-"
    assert row.keys() == ["id", "name", "id"]
    assert row.items() == [("id", 1), ("name", "Ann"), ("id", 2)]
    assert repr(row) == "Row(id=1, name='Ann', id=2)"
    with pytest.raises(AttributeError, match=r"no column 'email' \(columns: id, name, id\)"):
        row.email
    with pytest.raises(KeyError, match="no column 'email'"):
        row["email"]


def test_rows_of_the_same_columns_share_one_class():
    a = records.make_row(("x", "y"), (1, 2))
    b = records.make_row(["x", "y"], (3, 4))
    c = records.make_row(("y", "x"), (3, 4))
    assert type(a) is type(b) and type(a) is not type(c)
    assert c.x == 4


def test_db_queries_bind_records_as_their_ids(native):
    native.answers.append((("n",), [(7,)]))
    m = partner()
    rows = records.DB.query("SELECT $1::int + $2, $3", m.browse(5), m.browse([1, 2]))
    assert rows == [(7,)] and rows[0].n == 7
    assert native.calls == [("query", "SELECT $1::int + $2, $3", (5, [1, 2]))]
    assert records.DB.query_one("SELECT 1") is None
    assert records.DB.execute("DELETE FROM t WHERE id = $1", 3) == 1
    with pytest.raises(TypeError):
        records.DB.query(b"SELECT 1")


def test_db_names_are_still_reached_through_records():
    # db.py was split off records.py; links, sync_helpers and project use records.X.
    from pg_sync import db

    for name in ("DB", "Database", "Row", "Savepoint", "execute", "make_row", "query", "_args", "_row_class"):
        assert getattr(records, name) is getattr(db, name)


def test_query_arguments_bind_records_as_ids_and_pass_other_values():
    from pg_sync import db

    m, pair = partner(), pair_table()
    assert db._args((m.browse(5), m.browse([1, 2]), pair.browse([(1, "x")]), "s", None)) == (5, [1, 2], (1, "x"), "s", None)


def test_a_savepoint_is_released_or_rolled_back(native):
    with records.DB.savepoint():
        pass
    with pytest.raises(ZeroDivisionError):
        with records.DB.savepoint():
            1 / 0
    assert native.calls == [("savepoint", 0), ("savepoint", 1), ("savepoint", 0), ("savepoint", 2)]


# -- keys as links store them ----------------------------------------------------------


@pytest.mark.parametrize(
    "key, text",
    [
        (42, "42"),
        (True, "true"),
        ((1, "x"), "(1,x)"),
        ((1, "a b", None, False), '(1,"a b",,false)'),
        (("a,b", "(c)"), '("a,b","(c)")'),
        (("x,\"y\"", "back\\slash", ""), '("x,\\"y\\"","back\\\\slash","")'),
    ],
)
def test_key_text_is_the_columns_text_form(key, text):
    assert records.key_text(key) == text


def test_composite_key_text_reads_back():
    key = (1, 'a "quoted", (odd) value', None, "back\\slash", "")
    parsed = records.parse_key_text(records.key_text(key), True)
    assert parsed == ("1", 'a "quoted", (odd) value', None, "back\\slash", "")
    assert records.parse_key_text("17", False) == "17"
    with pytest.raises(ValueError):
        records.parse_key_text("1,2", True)


def test_identifiers_are_quoted():
    assert records.quote_ident('we"ird') == '"we""ird"'


# -- record sets --------------------------------------------------------------------------


def test_browse_coerces_ids_drops_duplicates_and_keeps_order():
    m = partner()
    assert m.browse(["3", 1, 3.0, 2, 1]).ids == [3, 1, 2]
    assert m.browse(None).ids == [] and not m.browse([])
    assert m.browse(m.browse([4, 5])).ids == [4, 5]
    with pytest.raises(ValueError, match="not a valid integer key"):
        m.browse("x")


def test_composite_ids_are_tuples_of_the_columns_types():
    m = pair_table()
    assert m.browse("(1,x)").ids == [(1, "x")]
    assert m.browse((2, "y")).ids == [(2, "y")]
    assert m.browse([("3", "z"), (3, "z")]).ids == [(3, "z")]
    with pytest.raises(ValueError, match="2-column primary key"):
        m.browse(5)


def test_record_sets_combine_like_sets_of_one_table():
    m = partner()
    a, b = m.browse([1, 2, 3]), m.browse([3, 4])
    assert (a | b).ids == [1, 2, 3, 4]
    assert (a & b).ids == [3]
    assert (a - b).ids == [1, 2]
    assert a == m.browse([3, 2, 1]) and hash(a) == hash(m.browse([3, 2, 1]))
    assert [r.id for r in a] == [1, 2, 3] and len(a) == 3
    assert a[1:].ids == [2, 3] and a[0].id == 1
    with pytest.raises(TypeError, match="different tables"):
        a | pair_table().browse((1, "x"))
    with pytest.raises(ValueError, match="single record, this set has 3"):
        a.id
    with pytest.raises(AttributeError, match="write"):
        a.name = "x"


def test_old_images_of_deleted_rows_are_read_only(native):
    gone = partner()._images([5], [{"id": 5, "name": "Gone"}])
    assert gone.ids == [5] and gone.name == "Gone" and gone.read() == [{"id": 5, "name": "Gone"}]
    with pytest.raises(UserError, match="read-only"):
        gone.write({"name": "x"})
    with pytest.raises(UserError, match="read-only"):
        gone.unlink()
    assert native.calls == []


def test_values_are_read_once_and_writes_send_bound_values(native):
    m = partner()
    native.answers.append((("id", "name"), [(5, "Ann"), (6, "Bob")]))
    recs = m.browse([5, 6, 7])
    found = recs.exists()
    assert found.ids == [5, 6]
    assert [r.name for r in found] == ["Ann", "Bob"] and recs[1].name == "Bob"
    assert native.calls == [("query", 'SELECT * FROM "public"."partner" t WHERE t."id" = ANY ($1)', ([5, 6, 7],))]
    native.answers.append((("id", "name"), [(5, "Anna")]))
    recs[0].write({"name": "Anna"})
    assert native.calls[-1] == (
        "query",
        'UPDATE "public"."partner" AS t SET "name" = $1 WHERE t."id" = ANY ($2) RETURNING *',
        ("Anna", [5]),
    )
    assert recs[0].name == "Anna" and len(native.calls) == 2
    with pytest.raises(UserError, match="no row with key 7"):
        recs[2].name


def test_composite_keys_are_matched_column_by_column(native):
    pair_table().browse([(1, "x"), (2, "y")]).unlink()
    assert native.calls == [
        (
            "execute",
            'DELETE FROM "s"."pair" AS t WHERE (t."a", t."b") IN (SELECT * FROM ROWS FROM '
            "(pg_catalog.unnest($1::integer[]), pg_catalog.unnest($2::text[])))",
            ([1, 2], ["x", "y"]),
        )
    ]


def test_create_inserts_the_given_columns(native):
    native.answers.append((("id", "name"), [(9, "New")]))
    rec = partner().create({"name": "New"})
    assert rec.id == 9 and rec.name == "New"
    assert native.calls == [("query", 'INSERT INTO "public"."partner" AS t ("name") VALUES ($1) RETURNING *', ("New",))]


# -- env and handle_db's records ---------------------------------------------------------


def test_env_looks_tables_up_once(native):
    native.answers.append((PARTNER, [(16384, "public", "partner", ["id"], ["integer"])]))
    env = records.Environment()
    model = env["partner"]
    assert env["partner"] is model and model.table == "public.partner"
    assert len(native.calls) == 1 and native.calls[0][2] == ("partner",)
    with pytest.raises(UserError, match="no such table"):
        env["missing"]
    with pytest.raises(AttributeError):
        env.x = 1


def test_a_delete_event_gives_the_old_rows_without_reading_them(native):
    native.answers.append((PARTNER, [(16384, "public", "partner", ["id"], ["integer"])]))
    args = {"event": "delete", "table": "public.partner", "keys": [5], "old": [{"id": 5, "name": "Gone"}]}
    recs = records.records_for_db_event(records.Environment(), args)
    assert recs.ids == [5] and recs.name == "Gone"
    assert [c[2] for c in native.calls] == [('"public"."partner"',)]


def test_an_update_event_gives_the_rows_that_still_exist(native):
    native.answers.append((PARTNER, [(16385, "s", "pair", ["a", "b"], ["integer", "text"])]))
    native.answers.append((("a", "b", "v"), [(1, "x", 10)]))
    args = {"event": "update", "table": "s.pair", "keys": [[1, "x"], [2, "y"]]}
    recs = records.records_for_db_event(records.Environment(), args)
    assert recs.ids == [(1, "x")] and recs.v == 10
    assert native.calls[1][2] == ([1, 2], ["x", "y"])
    with pytest.raises(UserError, match="no table"):
        records.records_for_db_event(records.Environment(), {"event": "insert"})
