"""The nodes as classic ComfyUI classes (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``), for ComfyUI versions
without ``comfy_api.latest``."""

from __future__ import annotations

from .specs import CATEGORY, NODES, NodeSpec


def input_types(spec: NodeSpec) -> dict:
    """``INPUT_TYPES()``'s value: ``{"required": {name: (type or choices, options)}}``."""
    required = {}
    for item in spec.inputs:
        kind = item.choice_list() if item.kind == "COMBO" else item.kind
        required[item.name] = (kind, dict(item.options))
    return {"required": required}


def legacy_class(spec: NodeSpec) -> type:
    """A class ComfyUI's ``NODE_CLASS_MAPPINGS`` accepts, running ``spec.run``."""

    def run(self, **inputs):
        return spec.run(**inputs)

    return type(
        spec.node_id,
        (),
        {
            "INPUT_TYPES": classmethod(lambda cls: input_types(spec)),
            "RETURN_TYPES": tuple(kind for kind, _ in spec.outputs),
            "RETURN_NAMES": tuple(name for _, name in spec.outputs),
            "FUNCTION": "run",
            "CATEGORY": CATEGORY,
            "DESCRIPTION": spec.description,
            "run": run,
            "__doc__": spec.description,
        },
    )


LEGACY_CLASSES = {spec.node_id: legacy_class(spec) for spec in NODES}
DISPLAY_NAMES = {spec.node_id: spec.display_name for spec in NODES}
