"""The nodes as ``comfy_api.latest`` V3 nodes (``io.ComfyNode`` + ``ComfyExtension``).

Imported only where ComfyUI's ``comfy_api`` is there; nothing of ComfyUI is copied here, only called.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .specs import CATEGORY, NODES, InputSpec, NodeSpec

_BUILT_IN = {
    "INT": io.Int,
    "FLOAT": io.Float,
    "STRING": io.String,
    "IMAGE": io.Image,
    "CONDITIONING": io.Conditioning,
}
_CUSTOM: dict[str, type] = {}


def _io_type(kind: str):
    """ComfyUI's io type for ``kind``; our own types (e.g. FACECLIP_ENCODER) made once with ``io.Custom``."""
    if kind in _BUILT_IN:
        return _BUILT_IN[kind]
    if kind not in _CUSTOM:
        _CUSTOM[kind] = io.Custom(kind)
    return _CUSTOM[kind]


def _input(item: InputSpec):
    options = dict(item.options)
    if "dynamicPrompts" in options:
        options["dynamic_prompts"] = options.pop("dynamicPrompts")
    if item.kind == "COMBO":
        return io.Combo.Input(item.name, options=item.choice_list(), **options)
    return _io_type(item.kind).Input(item.name, **options)


def schema(spec: NodeSpec) -> io.Schema:
    """The V3 schema of ``spec``."""
    return io.Schema(
        node_id=spec.node_id,
        display_name=spec.display_name,
        category=CATEGORY,
        description=spec.description,
        inputs=[_input(item) for item in spec.inputs],
        outputs=[_io_type(kind).Output(display_name=name) for kind, name in spec.outputs],
    )


def v3_class(spec: NodeSpec) -> type[io.ComfyNode]:
    """An ``io.ComfyNode`` subclass running ``spec.run``."""

    def define_schema(cls) -> io.Schema:
        return schema(spec)

    def execute(cls, **inputs) -> io.NodeOutput:
        return io.NodeOutput(*spec.run(**inputs))

    return type(
        spec.node_id,
        (io.ComfyNode,),
        {
            "define_schema": classmethod(define_schema),
            "execute": classmethod(execute),
            "__doc__": spec.description,
        },
    )


class FaceCLIPExtension(ComfyExtension):
    """The pack's nodes for ComfyUI's V3 loader."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [v3_class(spec) for spec in NODES]
