"""Solution markers in `student_code.py`: parse them and strip the reference answers into stubs.

Markers (whole lines, any indentation, the END at the indentation of its BEGIN):

    # BEGIN SOLUTION (Part 2a)
    ...reference answer...
    # END SOLUTION

Stripping rule:
- a block inside a function body becomes, at the block's indentation,
  `raise NotImplementedError("Part 2a: implement Attention.forward (see its docstring)")`;
  when one function holds several blocks only the first raises and the later ones vanish;
- a block at module level (e.g. helper classes of the default CNN) vanishes entirely;
- every line outside the markers is kept byte for byte (line endings included).

Pure functions on source text; nothing here imports or runs the code.
"""
import ast
import json
import re
from dataclasses import dataclass

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION \(Part (?P<part>[^)]*)\)[ \t]*$")
END_RE = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION[ \t]*$")
PART_RE = re.compile(r"^[1-9][a-z](-[ivx]+)?$")  # 1a, 1b-iii, 2b, 3b, ...
ANY_MARKER_RE = re.compile(r"#\s*(BEGIN|END)\s+SOLUTION", re.IGNORECASE)


class MarkerError(ValueError):
    """Malformed, unbalanced or misplaced solution markers."""


@dataclass(frozen=True)
class Block:
    """One solution block. Line numbers are 1-based and inclusive of both marker lines."""
    part: str
    begin: int
    end: int
    indent: str
    qualname: str  # enclosing function, e.g. "Attention.forward"; "" at module level

    @property
    def module_level(self):
        return self.qualname == ""

    def stub_message(self):
        return f"Part {self.part}: implement {self.qualname} (see its docstring)"


def _strip_eol(line):
    return line.rstrip("\r\n")


def _functions(tree):
    """`(qualname, node)` for every function and method, nested ones included."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((name, child))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _classes(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]


def parse_blocks(source, filename="student_code.py"):
    """All solution blocks of `source`, in file order.

    Raises `MarkerError` for: a BEGIN inside a block, an END without BEGIN, an unclosed BEGIN, an END
    whose indentation differs from its BEGIN, a part label that is not like `1a`/`1b-iii`, a marker that
    does not match the exact spelling, an empty block, or a block directly in a class body.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise MarkerError(f"{filename} does not parse: {exc}") from exc
    lines = source.splitlines(keepends=True)
    raw = []
    open_ = None
    for i, line in enumerate(lines, start=1):
        text = _strip_eol(line)
        b, e = BEGIN_RE.match(text), END_RE.match(text)
        if b:
            if open_ is not None:
                raise MarkerError(f"{filename}:{i}: BEGIN SOLUTION inside the block opened at line {open_[0]}")
            if not PART_RE.match(b["part"]):
                raise MarkerError(f"{filename}:{i}: part label {b['part']!r} is not like '1a' or '1b-iii'")
            open_ = (i, b["part"], b["indent"])
        elif e:
            if open_ is None:
                raise MarkerError(f"{filename}:{i}: END SOLUTION without a BEGIN SOLUTION")
            if e["indent"] != open_[2]:
                raise MarkerError(f"{filename}:{i}: END SOLUTION indented differently from its BEGIN "
                                  f"at line {open_[0]}")
            if i == open_[0] + 1:
                raise MarkerError(f"{filename}:{open_[0]}: empty solution block")
            raw.append((open_[1], open_[0], i, open_[2]))
            open_ = None
        elif ANY_MARKER_RE.search(text):
            raise MarkerError(f"{filename}:{i}: looks like a solution marker but is not spelled exactly "
                              f"'# BEGIN SOLUTION (Part X)' / '# END SOLUTION': {text.strip()!r}")
    if open_ is not None:
        raise MarkerError(f"{filename}:{open_[0]}: BEGIN SOLUTION is never closed")

    funcs = _functions(tree)
    classes = _classes(tree)
    blocks = []
    for part, begin, end, indent in raw:
        owner = ""
        owner_depth = -1
        for qualname, node in funcs:
            def_indent = node.col_offset
            if node.lineno < begin and end <= _last_line(node, lines) and len(indent) > def_indent:
                if def_indent > owner_depth:
                    owner, owner_depth = qualname, def_indent
        if not owner and indent:
            in_class = [c.name for c in classes if c.lineno < begin <= _last_line(c, lines)
                        and len(indent) > c.col_offset]
            if in_class:
                raise MarkerError(f"{filename}:{begin}: solution block directly in the body of class "
                                  f"{in_class[-1]} (put it in a method, or around the whole class)")
            raise MarkerError(f"{filename}:{begin}: indented solution block outside any function")
        blocks.append(Block(part, begin, end, indent, owner))
    return blocks


def _last_line(node, lines):
    """Last source line of `node` including trailing comment lines indented deeper than the node (an
    `# END SOLUTION` after a function's last statement still belongs to the function)."""
    last = node.end_lineno
    col = node.col_offset
    j = last
    while j < len(lines):
        text = _strip_eol(lines[j])
        stripped = text.lstrip(" \t")
        if stripped == "":
            j += 1
            continue
        if stripped.startswith("#") and len(text) - len(stripped) > col:
            j += 1
            last = j
            continue
        break
    return last


def strip_source(source, filename="student_code.py"):
    """Return `(stub_source, blocks)`: `source` with every solution block replaced by its stub."""
    blocks = parse_blocks(source, filename)
    lines = source.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    by_begin = {b.begin: b for b in blocks}
    raised = set()
    out = []
    i = 1
    while i <= len(lines):
        block = by_begin.get(i)
        if block is None:
            out.append(lines[i - 1])
            i += 1
            continue
        if not block.module_level and block.qualname not in raised:
            raised.add(block.qualname)
            out.append(f"{block.indent}raise NotImplementedError({json.dumps(block.stub_message())}){newline}")
        i = block.end + 1
    stub = "".join(out)
    try:
        ast.parse(stub, filename=filename)
    except SyntaxError as exc:
        raise MarkerError(f"the stripped {filename} does not parse ({exc}); a later block of a function "
                          f"probably left an empty suite: give it its own function or merge the blocks")
    return stub, blocks


def outside_lines(source, blocks):
    """The lines of `source` outside every solution block (the text students receive), without EOLs."""
    inside = set()
    for b in blocks:
        inside.update(range(b.begin, b.end + 1))
    return [_strip_eol(l) for i, l in enumerate(source.splitlines(keepends=True), start=1) if i not in inside]


def inside_lines(source, blocks):
    """`(part, line_number, text)` for every line strictly between the markers of each block."""
    lines = source.splitlines(keepends=True)
    return [(b.part, i, _strip_eol(lines[i - 1])) for b in blocks for i in range(b.begin + 1, b.end)]


def module_level_names(source, blocks):
    """Names defined (class/def/assignment) at the top level of module-level solution blocks."""
    tree = ast.parse(source)
    names = set()
    spans = [(b.begin, b.end) for b in blocks if b.module_level]
    for node in tree.body:
        if not any(lo < node.lineno < hi for lo, hi in spans):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names
