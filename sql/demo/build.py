#!/usr/bin/env python3
# Builds the demo project documents sql/demo/<name>.json from sql/demo/src/<name>/:
# project.json (the document, where {"file": "x.py"} stands for the text of src/<name>/x.py).
#
# The Python code lives in .py files so that it can be read and edited as code; the
# .json documents (export format 1, what sync_import_project and `sync_worker import`
# take) are what ships. `build.py --check` exits 1 when a document is not up to date.
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def expand(value, src):
    if isinstance(value, dict):
        if set(value) == {"file"}:
            return (src / value["file"]).read_text(encoding="utf-8")
        return {k: expand(v, src) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, src) for v in value]
    return value


def build(src):
    doc = expand(json.loads((src / "project.json").read_text(encoding="utf-8")), src)
    # The layout of `sync_worker export`: keys sorted, two-space indent.
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv):
    check = "--check" in argv
    stale = []
    for src in sorted(p for p in (HERE / "src").iterdir() if (p / "project.json").is_file()):
        out = HERE / (src.name + ".json")
        text = build(src)
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current == text:
            continue
        if check:
            stale.append(out.name)
        else:
            out.write_text(text, encoding="utf-8")
            print("wrote %s" % out.relative_to(HERE.parent.parent))
    if stale:
        print("not up to date (run python3 sql/demo/build.py): %s" % ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
