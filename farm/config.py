"""Reading YAML files into validated specs, with errors that name the file, line, field and fix."""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.spelling import guess
from farm.errors import ConfigError

Spec = TypeVar("Spec", bound=BaseModel)


class Problem(ValueError):
    """Raised by validators: what is wrong, and how to fix it."""

    def __init__(self, problem: str, fix: str, loc: tuple = ()):
        super().__init__(problem)
        self.problem, self.fix = problem, fix
        self.loc = loc  # where in the file, for checks that span fields (a model validator's)


def _line_index(node, path=(), index=None) -> dict[tuple, int]:
    """Map each key path in a YAML document to the line it starts on."""
    index = {} if index is None else index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[path + (key.value,)] = key.start_mark.line + 1
            _line_index(value, path + (key.value,), index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), index)
    return index


# A farm file is a few hundred values; aliases may share some, but expanded (as validation and
# the line index walk them) a document stays far below this. A "billion laughs" file of a few
# hundred bytes expands past it at once, and is refused before anything walks it.
MAX_VALUES = 100_000
MAX_BYTES = 16 * 2**20  # far above any sweep or inventory; refuses /dev/zero and the like


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that remembers where the document's first alias is."""

    first_alias = None

    def compose_node(self, parent, index):
        if self.first_alias is None and self.check_event(yaml.AliasEvent):
            self.first_alias = self.peek_event().start_mark
        return super().compose_node(parent, index)


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(str(path), "(file)", f"cannot read: {error.strerror}",
                          "check the path") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(str(path), "(file)", f"larger than {MAX_BYTES // 2**20} MiB",
                          "check the path: a sweep or inventory is a small YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), "(file)", f"not UTF-8 text (byte {error.start})",
                          "check the path: a sweep or inventory is a YAML text file",
                          raw.count(b"\n", 0, error.start) + 1) from None
    if "\0" in text:
        raise ConfigError(str(path), "(file)", "not a text file (it holds a NUL byte)",
                          "check the path: a sweep or inventory is a YAML text file",
                          text.count("\n", 0, text.index("\0")) + 1)
    return text


def _compose(path: Path, text: str):
    """The document's node graph (None for a file of comments or blanks), checked for size,
    cycles and duplicate keys before anything expands it."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as error:
        raise _syntax_error(path, text, error) from None
    except RecursionError:
        raise ConfigError(str(path), "(yaml)", "nested too deeply",
                          "write fewer levels of lists and mappings") from None
    finally:
        loader.dispose()
    if node is not None:
        try:
            size = _expanded_size(path, node, {}, set())
        except RecursionError:
            size = MAX_VALUES + 1
        if size > MAX_VALUES:
            mark = loader.first_alias or node.start_mark
            raise ConfigError(str(path), "(yaml)", f"its aliases expand to more than "
                              f"{MAX_VALUES} values", "write the values out instead of "
                              "repeating aliases", mark.line + 1)
    return node


def _syntax_error(path: Path, text: str, error: yaml.YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None)
    line = mark.line + 1 if mark else None
    problem = str(getattr(error, "problem", None) or error).splitlines()[0]
    if mark and mark.index < len(text) and text[mark.index] == "\t":
        # PyYAML's "found character '\t' that cannot start any token" says neither what the
        # tab is doing there nor what to write.
        before = text[text.rfind("\n", 0, mark.index) + 1:mark.index]
        if not before.strip():
            return ConfigError(str(path), "(yaml)", "a tab in the indentation",
                               "indent with spaces, not tabs", line)
        return ConfigError(str(path), "(yaml)", f"a tab after {before.strip()!r}",
                           "write a space instead", line)
    return ConfigError(str(path), "(yaml)", f"invalid YAML: {problem}", "fix the YAML syntax",
                       line)


def _expanded_size(path: Path, node, sizes: dict, open_nodes: set) -> int:
    """How many values the node stands for once its aliases are expanded (memoized per node,
    so that the count itself stays cheap). Refuses duplicate keys and cyclic aliases."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(str(path), "(yaml)", "an alias refers to a value that contains it",
                          "remove the cycle of aliases", node.start_mark.line + 1)
    open_nodes.add(id(node))
    size = 1
    if isinstance(node, yaml.MappingNode):
        _no_duplicate_keys(path, node)
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    for child in children:
        size += _expanded_size(path, child, sizes, open_nodes)
        if size > MAX_VALUES:
            break
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _no_duplicate_keys(path: Path, node: yaml.MappingNode) -> None:
    """PyYAML keeps the last of two equal keys without a word; a sweep that lists batch_sizes
    twice would run only one of them."""
    seen = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base` merges are meant to be overridden by the keys beside them
        if (key.tag, key.value) in seen:
            raise ConfigError(str(path), str(key.value), "this key appears twice in one mapping "
                              "(YAML would keep only the last)", "keep one of them",
                              key.start_mark.line + 1)
        seen.add((key.tag, key.value))


def load_yaml(path: str | Path):
    """A farm YAML file's data and the line of each key path: UTF-8 text, no duplicate keys,
    aliases bounded. Every YAML file farm reads comes through here."""
    path = Path(path)
    text = _read_text(path)
    node = _compose(path, text)
    if node is None:
        return None, {}
    try:
        data = yaml.SafeLoader(text).construct_document(node)
    except yaml.YAMLError as error:  # e.g. a timestamp or a merge of a non-mapping
        raise _syntax_error(path, text, error) from None
    return data, _line_index(node)


def field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_FIXES = {
    "missing": "add this key",
    "int_parsing": "write a whole number", "int_type": "write a whole number",
    "float_parsing": "write a number", "float_type": "write a number",
    "greater_than": "use a larger value", "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value", "less_than_equal": "use a smaller value",
    "finite_number": "write a finite number (not .inf or .nan)",
    "string_type": "write a text value", "list_type": "write a YAML list, e.g. [a, b]",
    "too_short": "give at least one entry", "bool_parsing": "write true or false",
    "union_tag_not_found": "add a kind: key",
}


def load_spec(path: str | Path, model: type[Spec], context: dict | None = None) -> Spec:
    path = Path(path)
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(top level)", "expected a mapping of keys",
                          "see the README for this file's keys", 1)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise _config_error(path, error, lines, model) from None


def _config_error(path: Path, error: ValidationError, lines: dict,
                  model: type[BaseModel]) -> ConfigError:
    first = _to_report(error.errors())
    tags = _union_members()
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p in tags))
    problem = first.get("ctx", {}).get("error")
    if isinstance(problem, Problem) and problem.loc:
        loc = problem.loc
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    if isinstance(problem, Problem):
        return ConfigError(str(path), field_name(loc), problem.problem, problem.fix, line)
    return ConfigError(str(path), field_name(loc), *_in_words(first, model), line)


def _to_report(errors: list[dict]) -> dict:
    """The first error, unless it is a missing key beside an unknown one: `memroy: 2GiB` leaves
    memory missing, and the misspelling is what the user must hear about."""
    first = errors[0]
    if first["type"] == "missing":
        return next((e for e in errors if e["type"] == "extra_forbidden"
                     and e["loc"][:-1] == first["loc"][:-1]
                     and guess(e["loc"][-1], [first["loc"][-1]])), first)
    return first


def _in_words(error: dict, model: type[BaseModel]) -> tuple[str, str]:
    """pydantic's error as a problem and its fix, in the words of the file's user."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        key, known = error["loc"][-1], _keys_at(model, error["loc"][:-1])
        if known is None:
            return f"unknown key {key}", "remove this key, or check its spelling against the README"
        meant = guess(key, known)
        return f"unknown key {key}", (f"did you mean {meant}? Otherwise remove this key" if meant
                                      else f"remove this key, or use one of: {', '.join(known)}")
    if kind == "union_tag_invalid":
        expected = re.findall(r"'([^']*)'", ctx["expected_tags"])
        key, meant = ctx["discriminator"].strip("'"), guess(ctx["tag"], expected)
        return (f"unknown {key} {ctx['tag']!r}: expected {_listed(expected, 'or')}",
                f"did you mean {meant}?" if meant else "use one of them")
    if kind == "string_pattern_mismatch":
        said = _pattern_in_words(error["input"], ctx["pattern"])
        if said:
            return said
    return error["msg"].removeprefix("Value error, "), _FIXES.get(kind, "see the README")


def _keys_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys of the mapping at a pydantic location (union tags included), or None where
    that is not a model's mapping."""
    node = model
    for part in loc:
        node = next(filter(None, (_inside(member, part) for member in _members(node))), None)
    return list(node.model_fields) if _is_model(node) else None


def _inside(node, part):
    if isinstance(part, int) and typing.get_origin(node) in (tuple, list):
        return typing.get_args(node)[0]
    if _is_model(node):
        return node.model_fields[part].annotation if part in node.model_fields else None
    return _union_members().get(part) if isinstance(part, str) else None


def _members(node) -> list:
    """A type's alternatives: X of X | None, the type inside Annotated."""
    origin = typing.get_origin(node)
    if origin is typing.Annotated:
        return _members(typing.get_args(node)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(node) for m in _members(arg)]
    return [] if node is None else [node]


def _is_model(node) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


# Character classes as a pattern writes them, and as a person says them (many, and one).
_CLASS_WORDS = (("A-Za-z", "letters", "a letter"),
                ("a-z", "lowercase letters", "a lowercase letter"),
                ("A-Z", "capital letters", "a capital letter"), ("0-9", "digits", "a digit"))
_FIRST_THEN_REST = re.compile(r"\^\[([^\]\\]+)\]\[([^\]\\]+)\]\*\$")


def _pattern_in_words(value, pattern: str) -> tuple[str, str] | None:
    """A name pattern such as ^[A-Za-z0-9][A-Za-z0-9_.-]*$ said as people say it: which
    character is wrong, and which are allowed. None for a pattern of another shape."""
    shape = _FIRST_THEN_REST.fullmatch(pattern)
    if not (shape and isinstance(value, str)):
        return None
    first, rest = _class_in_words(shape[1], one=True), _class_in_words(shape[2], one=False)
    if not (first and rest):
        return None
    if not value:
        problem = "an empty name"
    elif not re.fullmatch(f"[{shape[1]}]", value[0]):
        problem = f"{value!r} starts with {value[0]!r}"
    else:
        wrong = next((c for c in value if not re.fullmatch(f"[{shape[2]}]", c)), None)
        problem = f"{value!r} holds {wrong!r}" if wrong else f"{value!r} is not allowed"
    return problem, f"use {rest}, starting with {first}"


def _class_in_words(chars: str, one: bool) -> str | None:
    words = []
    for written, many, single in _CLASS_WORDS:
        if written in chars:
            chars = chars.replace(written, "", 1)
            words.append(single if one else many)
    if chars.startswith("^") or "-" in chars.rstrip("-")[1:]:
        return None  # a negated class, or a range not in the table
    return _listed(words + [repr(c) for c in chars], "or" if one else "and")


def _listed(words: list[str], conjunction: str) -> str:
    return words[0] if len(words) == 1 else \
        f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _union_members() -> dict[str, type[BaseModel]]:
    """pydantic puts the chosen member of a tagged union into an error's location; users never
    wrote it. The one tagged union is a device's kind: its name -> its inventory entry."""
    from farm.devices.kinds import kinds
    return {kind.name: kind.description for kind in kinds()}
