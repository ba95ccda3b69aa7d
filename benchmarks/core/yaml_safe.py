"""Reading YAML that a person wrote: a key given twice is an error (YAML's "last one wins" hides typos and bad
merges), and aliases may not expand past a bound (a few hundred bytes of nested aliases, a "billion laughs",
expand to billions of values that hashing or copying the params would walk at 100% CPU with no output).

    data = load_yaml(text)   # yaml.YAMLError (with a mark) on a duplicate key; AliasBomb on runaway aliases
"""

from __future__ import annotations

from typing import Any

import yaml

# Values a params file may hold once its aliases are expanded: params.yaml has a few thousand.
MAX_EXPANDED = 100_000


class AliasBomb(ValueError):
    """Aliases that expand past MAX_EXPANDED values, or one that contains itself."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        super().__init__(why)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's parser where PyYAML has it (the same documents, ~8x faster than the pure-Python one), with a
    constructor that refuses a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges on purpose; later keys override merged ones
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first at line {first.line + 1}); keep one of them",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    data = yaml.load(text, Loader=_Loader)
    check_expansion(data)
    return data


def check_expansion(data: Any, limit: int = MAX_EXPANDED) -> None:
    """AliasBomb when ``data`` (shared references where the YAML had aliases) expands past ``limit`` values."""
    sizes: dict[int, int] = {}
    if _size(data, sizes, set()) > limit:
        raise AliasBomb(_where(data, sizes, limit), f"its aliases expand to more than {limit:,} values")


def _size(obj: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """Values in ``obj`` with every alias expanded, counted once per shared node (memoised by identity)."""
    if not isinstance(obj, (dict, list)):
        return 1
    key = id(obj)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise AliasBomb("", "an alias refers to the node that contains it (an endless value)")
    open_.add(key)
    children = obj.values() if isinstance(obj, dict) else obj
    total = 1
    for child in children:
        total += _size(child, sizes, open_)
    open_.discard(key)
    sizes[key] = total
    return total


def _where(obj: Any, sizes: dict[int, int], limit: int, path: str = "") -> str:
    """The deepest key path whose value alone is still over ``limit``."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, child in items:
        if isinstance(child, (dict, list)) and sizes.get(id(child), 0) > limit:
            return _where(child, sizes, limit, f"{path}.{key}" if path else str(key))
    return path
