"""YAML as the project reads its files: safe, and a key written twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word, so `seeds: [0]` written twice with different
values runs whatever came last. Configs, search spaces and table specs are read here instead. The error
names the key path (`profiles.cpu.config.seeds`) and both lines; a `<<` merge that a later key overrides
is not a duplicate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, path: str, first_line: int, line: int):
        self.path, self.first_line, self.line = path, first_line, line
        super().__init__(f"{path}: written twice (lines {first_line} and {line}); YAML would silently keep "
                         f"the last one, so remove or rename one of them")


def loads(text: str) -> Any:
    """The document in `text`; yaml.YAMLError (DuplicateKeyError for a repeated key) on a mistake."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        _check(root, "", set())
    return yaml.safe_load(text)


def load(path: str | Path) -> Any:
    return loads(Path(path).read_text())


def _check(node: yaml.Node, path: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias of a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node))
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            inner = f"{path}.{name}" if path else str(name)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise DuplicateKeyError(inner, lines[key], line)
            lines[key] = line
            _check(value_node, inner, seen)
    elif isinstance(node, yaml.SequenceNode):
        for n, item in enumerate(node.value):
            _check(item, f"{path}[{n}]", seen)
