"""YAML for settings and schema files: the safe loader, without aliases or repeated keys."""

from __future__ import annotations

from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: settings and schemas never need them, and an alias
    bomb (a billion laughs) expands into gigabytes from a few lines. A key given twice is refused
    (it would silently keep the last value)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.YAMLError(f"line {mark.line + 1}: aliases (*name) are not allowed here")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice")
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key_node))
        return super().construct_mapping(node, deep=deep)


def strict_yaml(text: str) -> Any:
    """Parse ``text``; raises ``yaml.YAMLError`` (or ``RecursionError`` for absurd nesting)."""
    return yaml.load(text, Loader=_StrictLoader)
