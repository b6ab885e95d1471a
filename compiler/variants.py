"""The compiler's half of each registry (zoo.spec.variants): the torch implementation
of every entry, and the initialisation the entries declare.

``implement(registry, impls)`` refuses, at import, a registry with a key that has no
implementation or an implementation without a key; each implementation class gets
its entry as ``variant``, which ``init_weights`` and the trained-like generator read.
"""

from __future__ import annotations

import math
from typing import Mapping, TypeVar

import torch
from torch import nn

from zoo.spec.variants import Init, Registry, Variant

T = TypeVar("T")
INIT_STD = 0.02  # GPT-2's N(0, 0.02) for every weight no entry names; biases 0


def implement(registry: Registry, impls: Mapping[str, T]) -> dict[str, T]:
    """``impls`` keyed like ``registry``, checked: every key implemented, nothing more."""
    missing, extra = set(registry) - set(impls), set(impls) - set(registry)
    if missing or extra:
        raise TypeError(
            f"the {registry.kind} registry and its implementations differ: "
            f"not implemented {sorted(missing)}, not declared {sorted(extra)}"
        )
    for key, impl in impls.items():
        if isinstance(impl, type):
            impl.variant = registry[key]  # type: ignore[attr-defined]
    return {key: impls[key] for key in registry}


def variant_of(module: nn.Module) -> Variant | None:
    """The registry entry ``module`` implements, or None."""
    return getattr(type(module), "variant", None)


def _apply(init: Init, p: torch.Tensor) -> None:
    if init.how == "constant":
        nn.init.constant_(p, init.value)
    else:
        std = init.value / math.sqrt(p.shape[-1]) if init.how == "fan" else init.value
        nn.init.normal_(p, std=std)


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Each parameter as its module's entry declares; otherwise weights N(0, 0.02)
    and biases 0. Parameters are visited in registration order, so a seed fixes every
    value."""
    for name, p in model.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        variant = variant_of(model.get_submodule(owner_name) if owner_name else model)
        if variant is not None and leaf in variant.init:
            _apply(variant.init[leaf], p)
        elif leaf == "bias":
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, std=INIT_STD)
