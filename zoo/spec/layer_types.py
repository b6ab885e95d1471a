"""Per-layer heterogeneity in a stack: ``layer_types``, a list of entries repeated as a
period over the layers (layer i uses entry i % len). An entry says what the layer's
self-attention sees (``attention``: zoo.spec.variants.LAYER_ATTENTION), whether it takes
the model's positions (``positions``: LAYER_POSITIONS) and, optionally, its own RoPE base
and scaling (``rope``). Parameters and the cache layout do not depend on them.

No torch, no onnxruntime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pydantic import Field

from zoo.spec.fields import FieldIssue, Strict_
from zoo.spec.positional import RopeScaling
from zoo.spec.variants import LAYER_ATTENTION, LAYER_POSITIONS, POSITIONAL

if TYPE_CHECKING:  # pragma: no cover
    from zoo.spec.model import ModelSpec, Stack


class LayerRope(Strict_):
    """A layer's own RoPE base and scaling, in place of positional.theta and positional.scaling
    (Gemma 3: base 10000 unscaled on its sliding layers, 1e6 scaled on the full ones)."""

    theta: float = Field(gt=0, description="base of this layer's rotation frequencies")
    scaling: Optional[RopeScaling] = Field(None, description="this layer's scaling (none: plain frequencies)")


class LayerType(Strict_):
    """One entry of a stack's ``layer_types``."""

    attention: LAYER_ATTENTION.literal() = Field("full", description=LAYER_ATTENTION.describe())  # type: ignore[valid-type]
    positions: LAYER_POSITIONS.literal() = Field("model", description=LAYER_POSITIONS.describe())  # type: ignore[valid-type]
    rope: Optional[LayerRope] = Field(None, description="this layer's RoPE base and scaling (positional rope only)")


def layer_type(stack: "Stack", i: int) -> LayerType:
    """Layer i's entry: layer_types[i % len], else every layer alike (sliding where attention.window is set)."""
    if stack.layer_types:
        return stack.layer_types[i % len(stack.layer_types)]
    return LayerType(attention="sliding" if stack.attention.window is not None else "full")


def check(spec: "ModelSpec", part: str, stack: "Stack") -> None:
    """The rules layer_types sets on the rest of the spec (numbers in the messages)."""
    types = stack.layer_types
    if not types:
        return
    where = (part, "layer_types")
    if len(types) > stack.layers:
        raise FieldIssue(where, f"layer_types has {len(types)} entries, more than layers={stack.layers} (it repeats as a period)")
    window = stack.attention.window
    sliding = [i for i, t in enumerate(types) if LAYER_ATTENTION[t.attention].windowed]
    if sliding and window is None:
        raise FieldIssue(where + (sliding[0], "attention"),
                         f"layer_types[{sliding[0]}].attention=sliding needs {part}.attention.window (none is set)")
    if window is not None and not sliding:
        raise FieldIssue((part, "attention", "window"),
                         f"attention.window={window} is used by no layer: layer_types has no sliding entry")
    kind = spec.positional.kind
    hook = POSITIONAL[kind].hook or "none"
    for i, t in enumerate(types):
        if hook not in LAYER_POSITIONS[t.positions].hooks:
            raise FieldIssue(where + (i, "positions"),
                             f"layer_types[{i}].positions={t.positions} cannot leave out positional.kind={kind} "
                             "(absolute positions are added once, to the embeddings)", where=where + (i, "positions"))
        if t.rope is None:
            continue
        if kind != "rope":
            raise FieldIssue(where + (i, "rope"), f"layer_types[{i}].rope sets a RoPE base: it needs positional.kind=rope, not {kind}")
        if not LAYER_POSITIONS[t.positions].positioned:
            raise FieldIssue(where + (i, "rope"), f"layer_types[{i}].rope is set on a layer with positions={t.positions}")
