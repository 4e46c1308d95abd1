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
    "string_type": "write a text value", "list_type": "write a YAML list, e.g. [a, b]",
    "too_short": "give at least one entry", "bool_parsing": "write true or false",
    "union_tag_invalid": "use one of the expected values", "union_tag_not_found": "add a kind: key",
}


def load_spec(path: str | Path, model: type[Spec], context: dict | None = None) -> Spec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(str(path), "(file)", f"cannot read: {error.strerror}",
                          "check the path") from None
    try:
        node = yaml.compose(text)  # None for a file of comments or blanks only
        lines = _line_index(node) if node is not None else {}
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(str(path), "(yaml)", f"invalid YAML: {getattr(error, 'problem', error)}",
                          "fix the YAML syntax", mark.line + 1 if mark else None) from None
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
