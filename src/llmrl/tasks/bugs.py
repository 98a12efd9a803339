"""Realistic one-edit bugs injected into Python source with ``ast`` (the ``code_repair`` task's generator).

Corpus (:class:`Corpus`): the ``.py`` files under a root directory, in sorted order. Skipped: directories
named ``test``, ``tests``, ``idle_test``, ``site-packages``, ``dist-packages``, ``__pycache__`` or starting
with ``.``; files named ``test_*.py``, ``*_test.py`` or ``conftest.py``; files over :data:`MAX_FILE_BYTES`;
files that are not UTF-8, contain line breaks other than ``\\n``/``\\r\\n`` (form feeds, ...) or do not
parse. A file's text is read with universal newlines (what ``Path.read_text()`` returns).

Units: top-level functions and methods of top-level classes (decorators included). Bugs are injected only
into units of at most ``max_function_lines`` lines, inside their body (never the signature, defaults or
docstring, never inside f-strings, whose node positions are unreliable before Python 3.12).

Kinds (each candidate replaces the source text of one AST node, or the text between two sibling nodes, by
new text; the rest of the file is byte-identical):

``operator``       ``+``↔``-``, ``*``→``/``, ``/``→``//``, ``//``→``/``, ``%``→``//``, ``**``→``*``,
                   ``<<``↔``>>``, ``&``↔``|``, ``^``→``|`` in a binary operation (not on string literals) or
                   an augmented assignment (``+=``→``-=``...);
``comparison``     ``<``↔``<=``, ``>``↔``>=``, ``==``↔``!=``, ``is``↔``is not``, ``in``↔``not in``;
``off_by_one``     an integer literal ±1 in an index, slice bound, comparison, ``+``/``-`` operand, ``+=``/
                   ``-=`` value or ``range()`` argument; or ``+ 1``/``- 1`` appended to a name, attribute,
                   call or subscript used as a slice bound or ``range()`` argument;
``wrong_variable`` a local name read replaced by another local of the same function bound no later than
                   the read (the two most recently bound candidates; ``self``/``cls``/``_`` never);
``missing_call``   a one-argument call wrapper dropped (``len(x)``→``x``, ``f(a + b)``→``(a + b)``), or a
                   call statement (``obj.close()``) deleted from a block with other statements;
``boolean_op``     ``and``↔``or`` between two operands of a boolean operation;
``negation``       ``not`` dropped from a ``not`` expression, or added to an ``if``/``while`` condition
                   (not to comparisons, which ``comparison`` flips, nor to constants such as ``while True``;
                   ``not (...)`` around and/or tests).

Verification (:meth:`Corpus.make_bug`, every bug): the edit changes the text; undoing it restores the
original text exactly; the buggy file compiles; and ``ast.dump`` of the edited function differs from the
original's (positions are not part of the dump, and the rest of the file is textually unchanged, so this is
exactly "the module's ``ast.dump`` differs"). Candidates failing any check are skipped.

Speed: a file is parsed once (cached per process, keyed by path, size and mtime) into its units and
candidate sites; the tree itself is not kept. Checking a bug costs one ``compile`` of the buggy file and
two parses of the edited function.
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmrl.tasks.io import DataError

KINDS = ("operator", "comparison", "off_by_one", "wrong_variable", "missing_call", "boolean_op", "negation")
MAX_FILE_BYTES = 200_000
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_CACHE_SIZE = 4096

_BINOPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "//"),
           ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"), ast.LShift: ("<<", ">>"),
           ast.RShift: (">>", "<<"), ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&"), ast.BitXor: ("^", "|")}
_CMPOPS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
           ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is"),
           ast.In: ("in", "not in"), ast.NotIn: ("not in", "in")}
_OP_RE = re.compile(r"(?P<pre>[\s()\\]*)(?P<op>\*\*|//|<<|>>|<=|>=|==|!=|[-+*/%@&|^<>]|is\s+not|not\s+in|is|in"
                    r"|and|or)(?P<post>[\s()\\]*)")
_AUG_RE = re.compile(r"(?P<pre>\s*)(?P<op>(?:\*\*|//|<<|>>|[-+*/%@&|^])=)(?P<post>[\s()\\]*)")
_NOT_RE = re.compile(r"not[ \t]*(?P<rest>[\s(]*)")
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]*")
_ATOMIC = (ast.Name, ast.Attribute, ast.Call, ast.Subscript)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)
_NEVER_SWAP = frozenset({"self", "cls", "_"})
_BITWISE = frozenset({"<<", ">>", "&", "|", "^"})


@dataclass(frozen=True)
class Site:
    """One candidate edit: replace ``text[start:end]`` by ``new``."""

    kind: str
    variant: str
    start: int
    end: int
    new: str
    bug_id: str


@dataclass
class Unit:
    """A top-level function or a method of a top-level class. ``sites`` and ``dump`` (the original
    function's ``ast.dump``) are filled on first use by :func:`unit_sites`."""

    qualname: str
    start_line: int  # first line, decorators included (1-based)
    def_line: int
    end_line: int
    indent: int
    signature: str  # the ``def`` header lines, for skeletons
    sites: list[Site] | None = None
    dump: str | None = None

    @property
    def num_lines(self) -> int:
        return self.end_line - self.start_line + 1


@dataclass
class SourceFile:
    path: str  # relative, "/"-separated
    text: str
    starts: list[int]  # char offset of each line start; starts[num_lines] = len(text)
    classes: list[tuple[str, int, str]]  # (name, line, header) of top-level classes, for skeletons
    units: list[Unit]

    @property
    def num_lines(self) -> int:
        return len(self.starts) - 1

    def line_span(self, first: int, last: int) -> tuple[int, int]:
        """Char offsets [start, end) of lines ``first..last`` (1-based, inclusive, newlines included)."""
        return self.starts[first - 1], self.starts[last]

    def line(self, lineno: int) -> str:
        """Line ``lineno`` (1-based) without its newline."""
        return self.text[self.starts[lineno - 1] : self.starts[lineno]].removesuffix("\n")


@dataclass(frozen=True)
class Bug:
    """A verified bug: ``buggy`` is ``source.text`` with ``site`` applied."""

    source: SourceFile
    unit: Unit
    site: Site
    buggy: str

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def line_delta(self) -> int:
        """Lines added (negative: removed) by the bug."""
        return self.site.new.count("\n") - self.source.text.count("\n", self.site.start, self.site.end)

    def gold_lines(self) -> list[int]:
        """Lines of the buggy file to edit: the changed lines, or for a deleted statement the two lines
        around the gap (within the function)."""
        line = self.source.text.count("\n", 0, self.site.start) + 1
        if self.site.variant == "statement":  # a deleted statement
            lo, hi = self.unit.start_line, self.unit.end_line + self.line_delta
            return [n for n in (line - 1, line) if lo <= n <= hi]
        return list(range(line, line + self.site.new.count("\n") + 1))


# -- loading -------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def list_sources(root: str) -> tuple[str, ...]:
    """Relative paths of the candidate ``.py`` files under ``root`` (see the module docstring), sorted."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("test_") or name.endswith("_test.py"):
                continue
            if name == "conftest.py":
                continue
            full = os.path.join(dirpath, name)
            try:
                if os.path.getsize(full) > MAX_FILE_BYTES:
                    continue
            except OSError:
                continue
            out.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return tuple(out)


_PARSED: OrderedDict[tuple[str, int, int], SourceFile | None] = OrderedDict()


def load_source(root: str, rel: str) -> SourceFile | None:
    """The parsed file (None if unusable), cached by (path, size, mtime)."""
    full = os.path.join(root, rel)
    try:
        st = os.stat(full)
    except OSError:
        return None
    key = (os.path.abspath(full), st.st_size, st.st_mtime_ns)
    if key in _PARSED:
        _PARSED.move_to_end(key)
        return _PARSED[key]
    sf = _parse_file(full, rel)
    _PARSED[key] = sf
    if len(_PARSED) > _CACHE_SIZE:
        _PARSED.popitem(last=False)
    return sf


def _parse_file(full: str, rel: str) -> SourceFile | None:
    try:
        with open(full, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    pieces = text.split("\n")
    if len(text.splitlines()) != len(pieces) - (1 if text.endswith("\n") or not text else 0):
        return None  # form feeds, \x0b, \u2028...: line numbers would disagree between tools
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, rel)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece) + 1)
    starts[-1] = len(text)
    if len(starts) >= 2 and starts[-2] == len(text):  # text ends with "\n": no empty last line
        starts.pop()
    sf = SourceFile(path=rel, text=text, starts=starts, classes=[], units=[])
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            sf.classes.append((node.name, _first_line(node), _header(sf, node)))
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                    sf.units.append(_unit(sf, sub, f"{node.name}.{sub.name}"))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            sf.units.append(_unit(sf, node, node.name))
    return sf


def _header(sf: SourceFile, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """The header lines (``def``/``class`` line up to the line before the body; at least one line)."""
    last = max(node.lineno, node.body[0].lineno - 1)
    while last > node.lineno and not sf.line(last).strip():
        last -= 1
    return "\n".join(sf.line(n) for n in range(node.lineno, last + 1)).rstrip()


def _unit(sf: SourceFile, node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str) -> Unit:
    first = _first_line(node)
    return Unit(qualname=qualname, start_line=first, def_line=node.lineno, end_line=node.end_lineno or first,
                indent=node.col_offset, signature=_header(sf, node))


def unit_sites(sf: SourceFile, unit: Unit) -> list[Site]:
    """The unit's candidate sites (extracted on first call, from a parse of the unit's lines only)."""
    if unit.sites is None:
        unit.sites = []
        lo, hi = sf.line_span(unit.start_line, unit.end_line)
        node = _parse_unit(sf.text[lo:hi], unit.indent)
        if node is not None:
            unit.dump = ast.dump(node)
            ast.increment_lineno(node, unit.start_line - 1)
            unit.sites = _Extractor(sf).run(node)
    return unit.sites


# -- candidate sites -------------------------------------------------------------------------------------
def _bug_id(path: str, start: int, end: int, new: str) -> str:
    return hashlib.sha256(f"{path}\0{start}\0{end}\0{new}".encode()).hexdigest()[:16]


class _Extractor:
    """Walks one function and records its candidate sites."""

    def __init__(self, sf: SourceFile) -> None:
        self.sf, self.ascii = sf, sf.text.isascii()
        self.sites: list[Site] = []

    # positions ----------------------------------------------------------------------------------------
    def off(self, lineno: int, col: int) -> int:
        """Char offset of a (1-based line, UTF-8 byte column) position."""
        if not self.ascii:
            col = len(self.sf.line(lineno).encode("utf-8")[:col].decode("utf-8", "replace"))
        return self.sf.starts[lineno - 1] + col

    def start(self, node: ast.AST) -> int:
        return self.off(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(self, node: ast.AST) -> int:
        return self.off(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def seg(self, node: ast.AST) -> str:
        return self.sf.text[self.start(node) : self.end(node)]

    def add(self, kind: str, variant: str, start: int, end: int, new: str) -> None:
        if self.sf.text[start:end] != new:
            self.sites.append(Site(kind, variant, start, end, new, _bug_id(self.sf.path, start, end, new)))

    def run(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Site]:
        body = fn.body[1:] if _has_docstring(fn) else fn.body
        if body:
            for child, parent in _walk(body):
                self.visit(child, parent)
            self.wrong_variables(fn, body)
            self.call_statements(body)
        seen: set[str] = set()
        out = []
        for site in self.sites:
            if site.bug_id not in seen:
                seen.add(site.bug_id)
                out.append(site)
        return out

    # kinds --------------------------------------------------------------------------------------------
    def visit(self, node: ast.AST, parent: ast.AST | None) -> None:
        if isinstance(node, ast.BinOp):
            swap = _BINOPS.get(type(node.op))
            if swap and not (_stringy(node.left) or _stringy(node.right)):
                variant = "bitwise" if swap[0] in _BITWISE else "arithmetic"
                self.between(node.left, node.right, swap, "operator", variant)
                if isinstance(node.op, ast.Add | ast.Sub):
                    self.literals(node.left, node.right)
        elif isinstance(node, ast.AugAssign):
            swap = _BINOPS.get(type(node.op))
            if swap and not _stringy(node.value):
                gap_start, gap_end = self.end(node.target), self.start(node.value)
                m = _AUG_RE.fullmatch(self.sf.text, gap_start, gap_end)
                if m and m["op"] == swap[0] + "=":
                    self.add("operator", "augmented", m.start("op"), m.end("op"), swap[1] + "=")
            if isinstance(node.op, ast.Add | ast.Sub):
                self.literals(node.value)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                swap = _CMPOPS[type(op)]
                variant = "boundary" if swap[0] in ("<", "<=", ">", ">=") else "equality"
                self.between(operands[i], operands[i + 1], swap, "comparison", variant)
            self.literals(*operands)
        elif isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            for a, b in zip(node.values, node.values[1:]):
                self.between(a, b, (word, "or" if word == "and" else "and"), "boolean_op", word)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            m = _NOT_RE.fullmatch(self.sf.text, self.start(node), self.start(node.operand))
            if m:
                self.add("negation", "dropped", m.start(), m.end(), m["rest"])
        elif isinstance(node, ast.If | ast.While):
            test = node.test
            negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
            if not (negated or isinstance(test, ast.Compare | ast.Constant)):
                text = self.seg(test)
                wrapped = isinstance(test, ast.BoolOp | ast.IfExp | ast.NamedExpr | ast.Lambda)
                self.add("negation", "added", self.start(test), self.end(test),
                         f"not ({text})" if wrapped else f"not {text}")
        elif isinstance(node, ast.Subscript):
            if not isinstance(node.slice, ast.Slice | ast.Tuple):
                self.literals(node.slice)
        elif isinstance(node, ast.Slice):
            bounds = [b for b in (node.lower, node.upper) if b is not None]
            self.literals(*bounds)
            self.bounds(*bounds)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "range":
                self.literals(*node.args)
                self.bounds(*node.args)
            if not isinstance(parent, ast.Expr):
                self.wrapper(node)

    def between(self, left: ast.AST, right: ast.AST, swap: tuple[str, str], kind: str, variant: str) -> None:
        """Swap the operator token written between two operands (only whitespace/parens around it)."""
        m = _OP_RE.fullmatch(self.sf.text, self.end(left), self.start(right))
        if m and " ".join(m["op"].split()) == swap[0]:
            self.add(kind, variant, m.start("op"), m.end("op"), swap[1])

    def literals(self, *exprs: ast.AST) -> None:
        """Off-by-one edits of the (possibly negated) decimal integer literals among ``exprs``."""
        for expr in exprs:
            negated = isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub)
            lit = expr.operand if negated else expr  # type: ignore[attr-defined]
            if not (isinstance(lit, ast.Constant) and type(lit.value) is int and lit.value < 10**6):
                continue
            s, e = self.start(lit), self.end(lit)
            if not _DECIMAL_RE.fullmatch(self.sf.text, s, e):
                continue
            self.add("off_by_one", "literal", s, e, str(lit.value + 1))
            if lit.value >= 1 and not (negated and lit.value == 1):
                self.add("off_by_one", "literal", s, e, str(lit.value - 1))

    def bounds(self, *exprs: ast.AST) -> None:
        """``+ 1`` / ``- 1`` appended to atomic slice bounds and ``range()`` arguments."""
        for expr in exprs:
            if isinstance(expr, _ATOMIC) and not (isinstance(expr, ast.Call) and _is_range(expr)):
                s, e, text = self.start(expr), self.end(expr), self.seg(expr)
                self.add("off_by_one", "bound", s, e, f"{text} + 1")
                self.add("off_by_one", "bound", s, e, f"{text} - 1")

    def wrapper(self, node: ast.Call) -> None:
        """Drop a one-argument call wrapper: ``f(x)`` → ``x``; ``f(a + b)`` → ``(a + b)``."""
        if len(node.args) != 1 or node.keywords or not isinstance(node.func, ast.Name | ast.Attribute):
            return
        arg = node.args[0]
        if isinstance(arg, ast.Starred | ast.Constant) or (isinstance(node.func, ast.Name) and node.func.id == "super"):
            return
        s, e = self.start(node), self.end(node)
        if isinstance(arg, _ATOMIC):
            self.add("missing_call", "wrapper", s, e, self.seg(arg))
        else:
            rest = self.sf.text[self.end(node.func) : e]
            if rest.startswith("(") and rest.endswith(")"):
                self.add("missing_call", "wrapper", s, e, rest)

    def call_statements(self, body: list[ast.stmt]) -> None:
        """Delete whole-line call statements from blocks that keep at least one other statement."""
        for block in _blocks(body):
            if len(block) < 2:
                continue
            for stmt in block:
                if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
                    continue
                first, last = stmt.lineno, stmt.end_lineno or stmt.lineno
                s, e = self.start(stmt), self.end(stmt)
                line_s, line_e = self.sf.line_span(first, last)
                head, tail = self.sf.text[line_s:s], self.sf.text[e:line_e]
                if head.strip() or (tail.strip() and not tail.lstrip().startswith("#")) or ";" in tail:
                    continue
                self.add("missing_call", "statement", line_s, line_e, "")

    def wrong_variables(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, body: list[ast.stmt]) -> None:
        """Replace a local name read by another local bound no later than the read."""
        bound: dict[str, int] = {}
        a = fn.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                bound.setdefault(arg.arg, fn.lineno)
        declared: set[str] = set()
        reads: list[ast.Name] = []
        for node, parent in _walk(body, scopes=False):
            if isinstance(node, ast.Global | ast.Nonlocal):
                declared.update(node.names)
            elif isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Store):
                    bound[node.id] = min(bound.get(node.id, node.lineno), node.lineno)
                elif isinstance(node.ctx, ast.Load) and not (isinstance(parent, ast.Call) and parent.func is node):
                    reads.append(node)
        names = {n: line for n, line in bound.items() if n not in declared and n not in _NEVER_SWAP}
        for node in reads:
            if node.id not in names:
                continue
            options = sorted((line, n) for n, line in names.items() if n != node.id and line <= node.lineno)
            for _, other in options[-2:]:
                self.add("wrong_variable", "local", self.start(node), self.end(node), other)


# -- walking helpers -------------------------------------------------------------------------------------
def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> int:
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def _has_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0]
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def _stringy(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str | bytes))


def _is_range(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == "range"


def _walk(stmts: Sequence[ast.AST], scopes: bool = True) -> Iterator[tuple[ast.AST, ast.AST | None]]:
    """(node, parent) pairs under ``stmts``, depth first in source order; never into f-strings or
    annotations; with ``scopes=False`` never into nested functions, classes, lambdas or comprehensions."""
    stack: list[tuple[ast.AST, ast.AST | None]] = [(s, None) for s in reversed(stmts)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        if isinstance(node, ast.JoinedStr) or (not scopes and isinstance(node, _SCOPES)):
            continue
        children: list[ast.AST] = []
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns", "type_comment"):
                continue
            if isinstance(value, ast.AST):
                children.append(value)
            elif isinstance(value, list):
                children.extend(v for v in value if isinstance(v, ast.AST))
        stack.extend((c, node) for c in reversed(children))


def _blocks(body: list[ast.stmt]) -> Iterator[list[ast.stmt]]:
    """Every statement list in ``body`` (itself, branch bodies, handlers...), nested scopes included."""
    yield body
    for node, _ in _walk(body):
        for name in ("body", "orelse", "finalbody"):
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                yield value


# -- the corpus ------------------------------------------------------------------------------------------
class Corpus:
    """The candidate bugs of a source tree: draw one with :meth:`draw`, verified by :meth:`make_bug`."""

    def __init__(self, root: str | os.PathLike[str], max_function_lines: int = 60) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"code_repair: source_dir {str(path)!r} is not a directory")
        self.root = str(path.resolve())
        self.max_function_lines = max_function_lines
        self.paths = list_sources(self.root)
        if not self.paths:
            raise DataError(f"code_repair: source_dir {self.root!r} has no usable .py files "
                            f"(tests, site-packages and files over {MAX_FILE_BYTES} bytes are skipped)")

    def file(self, rel: str) -> SourceFile | None:
        return load_source(self.root, rel)

    def draw(self, rng: random.Random, kinds: Sequence[str], accept: Callable[[str], bool] | None = None,
             ) -> Bug | None:
        """One verified bug, or None when this draw found none. Draws a kind uniformly from ``kinds`` and
        a file; scans the file's functions of at most ``max_function_lines`` lines in random order for a
        site of that kind (that ``accept`` -- a predicate on the bug id, e.g. the split -- keeps) and
        picks one uniformly; if no function has one, a site of any of ``kinds`` in the first function
        that has such sites."""
        sf = self.file(self.paths[rng.randrange(len(self.paths))])
        if sf is None:
            return None
        units = [u for u in sf.units if u.num_lines <= self.max_function_lines]
        rng.shuffle(units)
        wanted = kinds[rng.randrange(len(kinds))]
        fallback: tuple[Unit, list[Site]] | None = None
        for unit in units:
            sites = [s for s in unit_sites(sf, unit) if s.kind in kinds and (accept is None or accept(s.bug_id))]
            of_kind = [s for s in sites if s.kind == wanted]
            if of_kind:
                return self.make_bug(sf, unit, of_kind[rng.randrange(len(of_kind))])
            if sites and fallback is None:
                fallback = unit, sites
        if fallback is None:
            return None
        unit, sites = fallback
        return self.make_bug(sf, unit, sites[rng.randrange(len(sites))])

    def make_bug(self, sf: SourceFile, unit: Unit, site: Site) -> Bug | None:
        """The bug if it passes verification (see the module docstring), else None."""
        text = sf.text
        buggy = text[: site.start] + site.new + text[site.end :]
        if buggy == text:
            return None
        restored = buggy[: site.start] + text[site.start : site.end] + buggy[site.start + len(site.new) :]
        if restored != text:  # pragma: no cover - holds by construction; checked anyway
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(buggy, sf.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        unit_sites(sf, unit)  # fills unit.dump
        lo, hi = sf.line_span(unit.start_line, unit.end_line)
        after = _parse_unit(buggy[lo : hi + len(site.new) - (site.end - site.start)], unit.indent)
        if unit.dump is None or after is None or ast.dump(after) == unit.dump:
            return None
        return Bug(source=sf, unit=unit, site=site, buggy=buggy)


def _parse_unit(segment: str, indent: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The function whose (decorators-included) source lines are ``segment``; None if they do not parse.
    Line numbers are relative to the segment (``if 1:`` wraps an indented method and is undone)."""
    source = f"if 1:\n{segment}" if indent else segment
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    node = tree.body[0].body[0] if indent else tree.body[0]  # type: ignore[attr-defined]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    if indent:
        ast.increment_lineno(node, -1)
    return node


__all__ = ["KINDS", "Bug", "Corpus", "Site", "SourceFile", "Unit", "list_sources", "load_source", "unit_sites"]
