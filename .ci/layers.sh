#!/usr/bin/env bash
# The engine's layering (src/engine/mod.rs's doc comment): data flows one way
# through src/engine, so no two of its modules may import each other. Reads
# every file of each module (src/engine/NAME.rs, or everything under
# src/engine/NAME/) for paths that name a sibling module, `crate::engine::NAME`
# or `super::NAME` from the module's top (groups like `crate::engine::{a, b}`
# too), prints the import graph, and fails naming each pair that imports
# both ways and each import of a module that mod.rs's list puts above the
# importer. The same holds one level down, inside each folder module
# (src/engine/NAME/, e.g. compact/): its parts may not import each other,
# nor one that NAME/mod.rs's list (`//! - `part``) puts above them. Needs
# only python3 (which python/ci.sh needs too).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'EOF'
import pathlib
import re
import sys

ENGINE = pathlib.Path("src/engine")
mod_rs = (ENGINE / "mod.rs").read_text()
modules = re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", mod_rs, re.M)
if not modules:
    sys.exit("layers.sh: found no `mod NAME;` in src/engine/mod.rs")


RAW = re.compile(r'b?r(#*)"')


def is_ident(c):
    return c.isalnum() or c == "_"


def strip(src):
    """The source without comments, string, char and byte literals."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := RAW.match(src, i)) and (i == 0 or not is_ident(src[i - 1])):
            end = '"' + m.group(1)
            j = src.find(end, m.end())
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and (m := re.compile(r"'(\\.[^']*|[^'\\])'").match(src, i)):
            i = m.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def group_heads(text, start):
    """The first segment of each item of the `{..}` group opening at start."""
    depth, i, item, heads = 0, start, "", []
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        if depth == 1 and c == ",":
            heads.append(item)
            item = ""
        else:
            item += c
        i += 1
    return [m.group(0) for h in heads if (m := re.match(r"\w+", h.strip()))]


def path_re(parent):
    """Paths from `crate::engine[::parent]::` or from `super::`s."""
    crate = r"crate\s*::\s*engine\s*::" + (rf"\s*{parent}\s*::" if parent else "")
    return re.compile(rf"\b({crate}|(?:super\s*::\s*)+)\s*(\{{|\w+)")


def imports(path, module, depth_in_engine, modules=modules, parent=None):
    """Sibling modules (of `modules`) that the file at path (a file of
    engine::module, or of engine::parent::module) names; `depth_in_engine`
    counts the `super`s from the file up to the siblings' parent."""
    text = strip(path.read_text())
    found = set()
    # Inline `mod x { .. }` blocks move `super::` one level down each.
    mod_starts = [m.end() - 1 for m in re.finditer(r"\bmod\s+\w+\s*\{", text)]
    opens, inline = [], []  # brace positions; which of them open an inline mod
    depth_at = {}
    for i, c in enumerate(text):
        if c == "{":
            opens.append(i in mod_starts)
        elif c == "}" and opens:
            opens.pop()
        depth_at[i] = sum(opens)
    for m in path_re(parent).finditer(text):
        head = m.group(1)
        if head.startswith("crate"):
            up_to_engine = True
        else:
            supers = head.count("super")
            up_to_engine = supers == depth_in_engine + depth_at.get(m.start(), 0)
        if not up_to_engine:
            continue
        names = group_heads(text, m.start(2)) if m.group(2) == "{" else [m.group(2)]
        found.update(n for n in names if n in modules and n != module)
    return found


edges = {}
for module in modules:
    single = ENGINE / f"{module}.rs"
    folder = ENGINE / module
    files = [(single, 1)] if single.exists() else []
    if folder.is_dir():
        for f in sorted(folder.rglob("*.rs")):
            rel = f.relative_to(folder).parts
            depth = len(rel) if f.name != "mod.rs" else len(rel) - 1
            files.append((f, 1 + depth))
    if not files:
        sys.exit(f"layers.sh: no source for engine module `{module}`")
    edges[module] = set()
    for f, depth in files:
        edges[module] |= imports(f, module, depth)

for module in modules:
    print(f"{module:12} -> {', '.join(sorted(edges[module])) or '(nothing)'}")

# The order of mod.rs's list: a module may import only modules below it.
# Modules the list leaves out (those "beside them") are held to no order.
order = re.findall(r"^//! - `(\w+)`", mod_rs, re.M)
upward = [
    (a, b)
    for a in order
    for b in sorted(edges.get(a, ()))
    if b in order and order.index(b) < order.index(a)
]
for a, b in upward:
    print(f"layers.sh: engine::{a} imports engine::{b}, which src/engine/mod.rs lists above it "
          "(data flows down that list: move the code, or the list if it is wrong)", file=sys.stderr)

cycles = sorted({tuple(sorted((a, b))) for a in modules for b in edges[a] if a in edges[b]})
if cycles:
    for a, b in cycles:
        print(f"layers.sh: engine::{a} and engine::{b} import each other", file=sys.stderr)


def check_parts(folder):
    """The same two rules among the parts of the folder module `folder`."""
    mod = (ENGINE / folder / "mod.rs").read_text()
    parts = re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", mod, re.M)
    part_edges = {}
    for part in parts:
        single = ENGINE / folder / f"{part}.rs"
        sub = ENGINE / folder / part
        files = [(single, 1)] if single.exists() else []
        if sub.is_dir():
            for f in sorted(sub.rglob("*.rs")):
                rel = f.relative_to(sub).parts
                files.append((f, 1 + (len(rel) if f.name != "mod.rs" else len(rel) - 1)))
        if not files:
            sys.exit(f"layers.sh: no source for engine module `{folder}::{part}`")
        part_edges[part] = set()
        for f, depth in files:
            part_edges[part] |= imports(f, part, depth, parts, folder)
    for part in parts:
        print(f"{folder + '::' + part:24} -> {', '.join(sorted(part_edges[part])) or '(nothing)'}")
    part_order = re.findall(r"^//! - `(\w+)`", mod, re.M)
    bad = 0
    for a in part_order:
        for b in sorted(part_edges.get(a, ())):
            if b in part_order and part_order.index(b) < part_order.index(a):
                bad += 1
                print(f"layers.sh: engine::{folder}::{a} imports {b}, which {folder}/mod.rs lists "
                      "above it", file=sys.stderr)
    for a, b in sorted({tuple(sorted((a, b))) for a in parts for b in part_edges[a]
                        if a in part_edges[b]}):
        bad += 1
        print(f"layers.sh: engine::{folder}::{a} and {b} import each other", file=sys.stderr)
    return len(parts), bad


folders = [m for m in modules if (ENGINE / m).is_dir()]
part_count = part_failures = 0
for folder in folders:
    n, bad = check_parts(folder)
    part_count += n
    part_failures += bad

if cycles or upward or part_failures:
    sys.exit(1)
print(f"layers.sh: {len(modules)} engine modules, no two import each other, "
      f"none imports one above it in mod.rs's list of {len(order)}; "
      f"the same within {', '.join(folders) or 'no folder module'} ({part_count} parts)")
EOF
