#!/usr/bin/env python3
# Keeps pg_sync/sql/pg_sync--<prev>--<next>.sql in step with sql/ while <next> is not
# released: every function the upgrade script (re)creates gets its current source text,
# and the roles-and-grants tail is replayed from sql/roles.sql. New tables, indexes and
# functions are added to the upgrade script by hand; tests/tests/upgrade.rs proves the
# result equals a fresh install. Usage: scripts/refresh-upgrade.py [upgrade-script]
import glob
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES_MARK = "-- Roles are shared by all databases of the cluster"
FUNC = re.compile(r"^CREATE (?:OR REPLACE )?FUNCTION ([\w.\"]+)\(", re.M)
COMMENT = re.compile(r"\nCOMMENT ON FUNCTION [^\n]*(?:\n    IS [^\n]*)?(?=\n)")


def blocks(text):
    """Function definitions by name: (start, end) of 'CREATE ... FUNCTION' to its '$$;',
    and the COMMENT ON FUNCTION right after it if there is one."""
    out = {}
    for m in FUNC.finditer(text):
        end = text.find("\n$$;", m.start())
        if end < 0:
            continue
        end += len("\n$$;")
        comment = COMMENT.match(text, end)
        if comment:
            end = comment.end()
        out.setdefault(m.group(1), []).append((m.start(), end))
    return out


def main():
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else sorted(
        (ROOT / "pg_sync/sql").glob("pg_sync--*--*.sql"))[-1]
    sources = {}
    for f in sorted(glob.glob(str(ROOT / "sql/*.sql"))):
        text = Path(f).read_text()
        for name, spans in blocks(text).items():
            sources.setdefault(name, []).extend(text[a:b] for a, b in spans)
    upgrade = target.read_text()
    pieces, pos, replaced = [], 0, 0
    spans = sorted((a, b, name) for name, ss in blocks(upgrade).items() for a, b in ss)
    for a, b, name in spans:
        src = sources.get(name)
        if not src or len(src) != 1:
            continue  # overloaded or gone: maintained by hand
        body = src[0]
        if upgrade[a:b].startswith("CREATE OR REPLACE"):
            body = body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        pieces.append(upgrade[pos:a])
        pieces.append(body)
        pos = b
        replaced += upgrade[a:b] != body
    pieces.append(upgrade[pos:])
    upgrade = "".join(pieces)
    roles = (ROOT / "sql/roles.sql").read_text()
    if ROLES_MARK in upgrade and ROLES_MARK in roles:
        upgrade = upgrade[: upgrade.index(ROLES_MARK)] + roles[roles.index(ROLES_MARK):]
    target.write_text(upgrade)
    print(f"{target.name}: {replaced} function(s) refreshed, roles tail replayed")


if __name__ == "__main__":
    main()
