"""Reading YAML files into validated specs, with errors that name the file, line, field and fix."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

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
        mark = getattr(error, "problem_mark", None)
        problem = str(getattr(error, "problem", None) or error).splitlines()[0]
        raise ConfigError(str(path), "(yaml)", f"invalid YAML: {problem}",
                          "fix the YAML syntax", mark.line + 1 if mark else None) from None
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
        mark = getattr(error, "problem_mark", None)
        problem = str(getattr(error, "problem", None) or error).splitlines()[0]
        raise ConfigError(str(path), "(yaml)", f"invalid YAML: {problem}",
                          "fix the YAML syntax", mark.line + 1 if mark else None) from None
    return data, _line_index(node)


def field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_FIXES = {
    "missing": "add this key",
    "extra_forbidden": "remove this key, or check its spelling against the README",
    "int_parsing": "write a whole number", "int_type": "write a whole number",
    "float_parsing": "write a number", "float_type": "write a number",
    "greater_than": "use a larger value", "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value", "less_than_equal": "use a smaller value",
    "finite_number": "write a finite number (not .inf or .nan)",
    "string_type": "write a text value", "list_type": "write a YAML list, e.g. [a, b]",
    "too_short": "give at least one entry", "bool_parsing": "write true or false",
    "union_tag_invalid": "use one of the expected values", "union_tag_not_found": "add a kind: key",
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
        raise _config_error(path, error, lines) from None


def _config_error(path: Path, error: ValidationError, lines: dict) -> ConfigError:
    first = error.errors()[0]
    tags = _union_tags()
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p in tags))
    problem = first.get("ctx", {}).get("error")
    if isinstance(problem, Problem) and problem.loc:
        loc = problem.loc
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    if isinstance(problem, Problem):
        return ConfigError(str(path), field_name(loc), problem.problem, problem.fix, line)
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(str(path), field_name(loc), message,
                       _FIXES.get(first["type"], "see the README"), line)


def _union_tags() -> set[str]:
    """pydantic puts the chosen member of a tagged union into an error's location; users never
    wrote it. The one tagged union is a device's kind."""
    from farm.devices.kinds import names
    return set(names())
