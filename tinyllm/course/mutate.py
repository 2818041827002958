"""Mechanical mutants of the solution regions: plausible mistakes, one at a time.

Each mutant changes one thing inside one region, the way a student's slip would:

* ``op``: an arithmetic or augmented-assignment operator swapped (``+``/``-``, ``*``/``/``,
  ``@``/``*``, ``**``/``*``, ``&``/``|``);
* ``operand``: one side of a binary operation or a boolean operand dropped (a forgotten factor);
* ``compare``: a comparison swapped (``<``/``<=``, ``==``/``!=``, ``in``/``not in``, ...);
* ``not``: a unary minus, ``not`` or ``~`` dropped; an ``if`` condition negated;
* ``const``: an integer constant off by one (both ways), a float halved and doubled (0 becomes
  1), ``True``/``False`` flipped;
* ``call``: a call dropped for its first argument (``unbroadcast(g, s)`` becomes ``g``), a method
  call dropped for its receiver (``g.sum(axis=0)`` becomes ``g``), one keyword argument dropped
  (``mask=mask`` forgotten), a slice bound dropped, the branches of ``a if c else b`` swapped;
* ``delete``: a statement replaced by ``pass``.

A mutant is the region's file with the lines of one statement replaced (padded with blank lines,
so that every later line keeps its number). Its ``key`` names it without line numbers (exercise,
function, the node before and after), so that it survives edits elsewhere in the file; the
allowlist of equivalent mutants refers to keys.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path

from tinyllm.course.registry import _PARSE_LOCK, Region

MODULE_NAMES = {"xp", "np", "math", "F", "backend", "tl", "nn", "optim", "ops", "autograd"}
_OP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
            ast.MatMult: ast.Mult, ast.Pow: ast.Mult, ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv,
            ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
             ast.IsNot: ast.Is}
_DROPPABLE = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.MatMult, ast.BitAnd, ast.BitOr)


@dataclass(frozen=True)
class Mutant:
    exercise: str
    path: str  # relative to the repository root
    qualname: str
    line: int
    kind: str
    before: str
    after: str
    source: str  # the whole mutated file
    index: int = 0  # among mutants with the same exercise, function, before and after

    @property
    def key(self) -> str:
        more = f" #{self.index + 1}" if self.index else ""
        return f"{self.exercise} {self.qualname}: {self.before} -> {self.after}{more}"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _one_line(node, width: int = 90) -> str:
    text = ast.unparse(node).strip()
    lines = text.splitlines()
    text = lines[0] + (f" ... ({len(lines)} lines)" if len(lines) > 1 else "")
    return text if len(text) <= width else text[: width - 3] + "..."


def _variants(node) -> list[tuple[str, ast.AST]]:
    """(kind, replacement node) for each mutation of ``node`` itself."""
    out = []
    if isinstance(node, ast.BinOp):
        if type(node.op) in _OP_SWAP:
            out.append(("op", ast.BinOp(node.left, _OP_SWAP[type(node.op)](), node.right)))
        if isinstance(node.op, _DROPPABLE):
            out += [("operand", node.left), ("operand", node.right)]
    elif isinstance(node, ast.AugAssign) and type(node.op) in _OP_SWAP:
        out.append(("op", ast.AugAssign(node.target, _OP_SWAP[type(node.op)](), node.value)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
        out.append(("not", node.operand))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                ops = list(node.ops)
                ops[i] = _CMP_SWAP[type(op)]()
                out.append(("compare", ast.Compare(node.left, ops, node.comparators)))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("op", ast.BoolOp(other, node.values)))
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1:]
            out.append(("operand", rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)))
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            out.append(("const", ast.Constant(not v)))
        elif isinstance(v, int):
            out += [("const", ast.Constant(v + 1)), ("const", ast.Constant(v - 1))]
        elif isinstance(v, float):
            out += ([("const", ast.Constant(1.0))] if v == 0 else
                    [("const", ast.Constant(v * 2)), ("const", ast.Constant(v / 2))])
    elif isinstance(node, ast.Call):
        if node.args and not isinstance(node.args[0], ast.Starred):
            out.append(("call", node.args[0]))
        f = node.func
        if isinstance(f, ast.Attribute) and not (isinstance(f.value, ast.Name)
                                                 and f.value.id in MODULE_NAMES):
            out.append(("call", f.value))
        for i in range(len(node.keywords)):
            if node.keywords[i].arg is not None:
                kws = node.keywords[:i] + node.keywords[i + 1:]
                out.append(("call", ast.Call(node.func, node.args, kws)))
    elif isinstance(node, ast.Slice):
        if node.lower is not None:
            out.append(("call", ast.Slice(None, node.upper, node.step)))
        if node.upper is not None:
            out.append(("call", ast.Slice(node.lower, None, node.step)))
    elif isinstance(node, ast.IfExp):
        out.append(("call", ast.IfExp(node.test, node.orelse, node.body)))
    elif isinstance(node, (ast.If, ast.While)):
        neg = ast.UnaryOp(ast.Not(), node.test)
        out.append(("not", type(node)(neg, node.body, node.orelse)))
    return out


def _replace_in(parent, old, new) -> bool:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return True
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return True
    return False


def _statements(tree, region: Region):
    """The statements lying inside the region (nested ones too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and region.begin < node.lineno and \
                node.end_lineno < region.end:
            yield node


def _splice(lines, stmt, text: str) -> str:
    first = lines[stmt.lineno - 1]
    indent = first[: len(first) - len(first.lstrip())]
    new = [indent + ln if ln else ln for ln in text.splitlines()]
    span = stmt.end_lineno - stmt.lineno + 1
    new += [""] * max(0, span - len(new))
    out = lines[: stmt.lineno - 1] + new + lines[stmt.end_lineno:]
    return "\n".join(out) + "\n"


def region_mutants(source: str, region: Region, exercise: str) -> list[Mutant]:
    """Every mechanical mutant of one solution region of ``source``."""
    with _PARSE_LOCK:
        tree = ast.parse(source, filename=region.path)
    lines = source.splitlines()
    stmts = list(_statements(tree, region))
    found: list[tuple] = []
    for stmt in stmts:  # deletions
        found.append((stmt, stmt, "delete", ast.Pass()))
    for stmt in stmts:
        nodes = [stmt] if isinstance(stmt, (ast.If, ast.While, ast.AugAssign)) else []
        body_nodes = {id(n) for f in ("body", "orelse", "handlers", "finalbody")
                      for s in getattr(stmt, f, []) for n in ast.walk(s)}
        for n in ast.walk(stmt):
            if n is stmt or id(n) in body_nodes or isinstance(n, ast.stmt):
                continue
            nodes.append(n)
        for n in nodes:
            for kind, new in _variants(n):
                found.append((stmt, n, kind, new))
    out, seen = [], {}
    for stmt, node, kind, new in found:
        if kind == "delete":
            before, after = f"delete `{_one_line(stmt)}`", "pass"
            text = "pass"
        else:
            twin = copy.deepcopy(stmt)
            pairs = dict(zip(map(id, ast.walk(stmt)), ast.walk(twin)))
            target = pairs[id(node)]
            replacement = copy.deepcopy(new)
            if target is twin:
                twin = replacement
            else:
                next(p for p in ast.walk(twin) if _replace_in(p, target, replacement))
            before, after = _one_line(node), _one_line(new)
            if before == after:
                continue
            text = ast.unparse(ast.fix_missing_locations(twin))
        mutated = _splice(lines, stmt, text)
        try:
            with _PARSE_LOCK:
                compile(mutated, region.path, "exec")
        except SyntaxError:
            continue  # e.g. a `pass` left where an expression was needed
        k = (before, after)
        idx = seen.get(k, 0)
        seen[k] = idx + 1
        out.append(Mutant(exercise, region.path, region.qualname, node.lineno, kind, before,
                          after, mutated, idx))
    return out


def apply_named(source: str, region: Region, exercise: str, find: str, replace: str,
                why: str) -> Mutant:
    """A hand-written mutant: ``find`` (exactly once inside the region) becomes ``replace``."""
    lines = source.splitlines()
    body = "\n".join(lines[region.begin: region.end - 1])
    if body.count(find) != 1:
        raise ValueError(f"named mutant of {exercise} ({why}): {find!r} occurs "
                         f"{body.count(find)} times in {region.path}:{region.begin}-{region.end}")
    offset = len("\n".join(lines[: region.begin])) + 1
    start = offset + body.index(find)
    mutated = source[:start] + replace + source[start + len(find):]
    line = source[:start].count("\n") + 1
    return Mutant(exercise, region.path, region.qualname, line, "named", find, replace,
                  mutated if mutated.endswith("\n") else mutated + "\n")


def module_name(path: str) -> str:
    return Path(path).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
