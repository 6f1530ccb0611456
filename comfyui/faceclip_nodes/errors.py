"""The one kind of error the nodes raise: a message naming the node, the input and what to do."""

from __future__ import annotations


class NodeInputError(ValueError):
    """A node input a user can get wrong; ComfyUI shows ``str(error)`` on the node that raised it."""

    def __init__(self, node: str, input_name: str, problem: str) -> None:
        self.node = node
        self.input_name = input_name
        super().__init__(f"{node}: input '{input_name}': {problem}")
