"""Reading a rollout spec's YAML: bounded in size and nesting, without aliases, and with every
field's line kept, so that an error can name the line it is about."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Set as AbstractSet
from typing import Any

from modelcanary.domain.errors import SpecError

MAX_SPEC_CHARS = 64 * 1024  # a spec is a page or two; past this the pure-Python YAML reader takes seconds
MAX_NESTING = 64  # a spec nests six levels; past a few hundred the YAML composer overflows the stack


def read_yaml(text: str, *, source: str) -> Any:
    """The YAML document, read in one pass, its size bounded first: the reader is pure Python (some
    100 µs a token), so a megabyte of ``[1,1,…]`` took a minute and a half (two passes then)."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    if len(text) > MAX_SPEC_CHARS:
        problem = f"{len(text)} characters is too long: a rollout spec is at most {MAX_SPEC_CHARS} (64 KiB)"
        raise SpecError([("spec", problem)], source=source)
    try:
        return _guarded_yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise SpecError([(where, str(exc.problem or exc))], source=source) from exc
    except ReaderError as exc:  # a character YAML does not allow (a control character, say)
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise SpecError([(f"line {line}", f"character {char!r} is not allowed in YAML")], source=source) from exc
    except YAMLError as exc:
        raise SpecError([("yaml", str(exc))], source=source) from exc
    except _UNREADABLE as exc:  # a value's builder failing outside ``construct_object`` (no node to name)
        raise SpecError([("yaml", f"cannot read a value: {exc}")], source=source) from exc


# what ruamel's value builders raise on a value they cannot build (a date past the month's end, an
# integer past Python's 4,300 digits, ``!!bool maybe``): not YAML errors, and were tracebacks
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, OverflowError)


def _guarded_yaml() -> Any:
    """A round-trip YAML reader (it keeps each key's line) that refuses, while it composes and so
    before anything is built, an alias (nested ones repeat their anchor exponentially: "billion
    laughs") and nesting past ``MAX_NESTING`` (a RecursionError out of the composer)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.Composer = _guarded_composer()
    yaml.Constructor = _guarded_constructor()
    return yaml


@functools.cache
def _guarded_constructor() -> type[Any]:
    from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
    from ruamel.yaml.nodes import ScalarNode

    class GuardedConstructor(RoundTripConstructor):
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            """The value, or a ``ConstructorError`` at its line where its builder fails."""
            try:
                return super().construct_object(node, deep=deep)
            except _UNREADABLE as exc:
                kind = str(node.tag).rpartition(":")[2] or "value"
                text = node.value if isinstance(node, ScalarNode) else ""
                shown = f" {text[:40]!r}{'...' if len(text) > 40 else ''}" if text else ""
                why = "not one of its values" if isinstance(exc, KeyError) else str(exc)
                problem = f"cannot read{shown} as {kind}: {why}"
                raise ConstructorError(problem=problem, problem_mark=node.start_mark) from exc

    return GuardedConstructor


@functools.cache
def _guarded_composer() -> type[Any]:
    from ruamel.yaml.composer import Composer, ComposerError
    from ruamel.yaml.events import AliasEvent, CollectionStartEvent

    class GuardedComposer(Composer):
        nesting = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.parser.peek_event()
            if isinstance(event, AliasEvent):
                problem = f"YAML aliases (*{event.anchor}) are not allowed: write the value out"
                raise ComposerError(problem=problem, problem_mark=event.start_mark)
            if not isinstance(event, CollectionStartEvent):
                return super().compose_node(parent, index)
            self.nesting += 1
            if self.nesting > MAX_NESTING:
                problem = f"nested more than {MAX_NESTING} levels deep; a rollout spec needs a handful"
                raise ComposerError(problem=problem, problem_mark=event.start_mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self.nesting -= 1

    return GuardedComposer


class Unsavable(ValueError):
    """A value that has no JSON form, which a spec is saved as: at ``loc`` in the document."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        self.loc, self.problem = loc, problem
        super().__init__(problem)


def plain(node: Any, loc: tuple[int | str, ...] = ()) -> Any:
    """ruamel's commented containers as plain dicts and lists (pydantic wants plain types), and
    every value one that JSON holds, since a spec is saved as JSON: an unquoted date or time (a
    change-freeze window's ``start: 2025-12-20T00:00:00+00:00``) as its ISO text, as if quoted.
    ``Unsavable`` for what JSON cannot hold: bytes (``!!binary``), a set (``!!set``), text with a
    lone surrogate (``"\\ud800"``), two keys with one text (``1:`` and ``"1":``).

    >>> plain({1: [2025], "when": datetime.date(2025, 12, 20)})
    {'1': [2025], 'when': '2025-12-20'}
    """
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        written: dict[str, Any] = {}
        for key, value in node.items():
            name = str(plain(key, loc) if isinstance(key, datetime.date | str) else key)
            if name in out:
                raise Unsavable((*loc, name), f"keys {written[name]!r} and {key!r} are both {name!r}; give each once")
            out[name], written[name] = plain(value, (*loc, name)), key
        return out
    if isinstance(node, list):
        return [plain(item, (*loc, index)) for index, item in enumerate(node)]
    if isinstance(node, datetime.date):  # a datetime too
        return node.isoformat()
    if isinstance(node, str):
        try:
            node.encode()
        except UnicodeEncodeError:
            raise Unsavable(loc, "holds a lone surrogate (\\ud800-\\udfff), which is no character") from None
        return node
    if node is None or isinstance(node, bool | int | float):
        return node
    from ruamel.yaml.comments import TaggedScalar

    if isinstance(node, TaggedScalar):  # ruamel keeps an explicitly tagged scalar so
        tag = str(node.tag)
        if tag == "tag:yaml.org,2002:str" and isinstance(node.value, str):
            return plain(node.value, loc)  # !!str 5: the text "5"
        raise Unsavable(loc, f"a value tagged {tag!r} is not read; write it without the tag")
    kind = "binary data (!!binary)" if isinstance(node, bytes) else "this value"
    kind = "a set (!!set)" if isinstance(node, AbstractSet) else kind
    raise Unsavable(loc, f"{kind} has no JSON form, which a spec is saved as; write a string, number, list or mapping")


_MISSING = object()  # no such key in the YAML


def where(document: Any, loc: tuple[int | str, ...], *, unions: tuple[str, ...] = ()) -> str:
    """``spec.traffic.steps[1].weight (line 14)``: the path, and the line of its deepest part in the
    YAML. ``unions`` are the names pydantic gives a union's members in a location, which the YAML
    has no level for."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    path, line, node = "", 1, document
    for part in loc:
        key = _key(node, part) if isinstance(node, CommentedMap) else _MISSING
        if isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            path += f"[{part}]"
            line = node.lc.item(part)[0] + 1
            node = node[part]
        elif key is not _MISSING:
            path += f".{part}" if path else str(part)
            line = node.lc.key(key)[0] + 1
            node = node[key]
        elif isinstance(node, CommentedMap) and (node.get("kind") == part or part in unions):
            continue  # pydantic names the union member it tried (the kind); the YAML has no such level
        else:
            path += f".{part}" if path else str(part)
            node = None
    return f"{path or 'spec'} (line {line})"


def _key(mapping: dict[Any, Any], part: int | str) -> Any:
    """The YAML key that ``part`` of an error's location names: ``plain`` made every key a string,
    so ``1: x`` is reported as ``"1"``, which the YAML holds as the number 1."""
    if part in mapping:
        return part
    return next((key for key in mapping if str(key) == str(part)), _MISSING)
