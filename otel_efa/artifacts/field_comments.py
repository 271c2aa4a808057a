"""What the comments of a dataclass say about its fields: the configuration reference's descriptions.

The schema (otel_efa/config.py) documents each key where it is declared, as a comment on the field's line or
on the comment lines just above it, the convention Sphinx's autodoc also reads. Reading them here keeps each
description written once: the reference page is generated from them (``otel-efa docs configuration``).
"""
import ast
import functools
import inspect
import io
import textwrap
import tokenize
from typing import Dict, List


@functools.cache
def field_comments(cls: type) -> Dict[str, str]:
    """Field name -> its comment text (the lines above it, then the one on its line), for a class whose
    source Python can find."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: Dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    [body] = ast.parse(source).body
    described: Dict[str, str] = {}
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts: List[str] = []
        above = node.lineno - 1
        while above >= 1 and above in comments and lines[above - 1].lstrip().startswith("#"):
            parts.insert(0, comments[above])
            above -= 1
        end = getattr(node, "end_lineno", None) or node.lineno
        parts += [comments[n] for n in range(node.lineno, end + 1) if n in comments]
        described[node.target.id] = " ".join(p for p in parts if p)
    return described


def class_doc(cls: type) -> str:
    """The class's own docstring, or "" (a dataclass without one gets its signature as ``__doc__``)."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(cls.__name__ + "("):
        return ""
    return inspect.cleandoc(doc)
