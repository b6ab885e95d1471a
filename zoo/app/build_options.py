"""The options of a build (``zoo build --target --optimize --precision --kv-cache``):
what each selects, its check against the spec, and its part of the artifact id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from zoo.spec.errors import ArtifactError
from zoo.spec.contract import PRECISIONS
from zoo.spec.model import ModelSpec

TARGETS = ("cpu", "cuda")
KV_CACHES = ("concat", "shared")


@dataclass(frozen=True)
class BuildOptions:
    """How the exported graphs are prepared for deployment (issue 8).

    - ``target``: the execution provider the artifact is for (``cpu`` or ``cuda``); the
      optimizer picks the lowering of each component (standard ONNX ops, ONNX Runtime
      contrib ops, or decomposed) for it and records the choice.
    - ``optimize``: fused graphs (passes.optimize), checked by parity like the plain one.
    - ``precision``: ``fp32`` (the export), ``fp16`` (for CUDA; norms and softmax stay in
      fp32), ``int8`` (MatMulNBits 8-bit blocks, for CPU) or ``int4`` (MatMulNBits 4-bit
      blocks, CPU and CUDA) (zoo.app.convert).
    - ``int4``: passes.precision.Int4Options for an int4 build (None: the measured defaults).
    - ``kv_cache``: ``concat`` (copied every step) or ``shared`` (one preallocated buffer
      written in place, passes.optimize.kv_share: optimized CPU decoder-only graphs with a float32
      cache: fp32, int8, int4).
    """

    target: str = "cpu"
    optimize: bool = False
    precision: str = "fp32"
    int4: Optional[object] = None  # passes.precision.Int4Options
    kv_cache: str = "concat"

    def check(self, spec: ModelSpec) -> None:
        if self.target not in TARGETS:
            raise ArtifactError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.precision not in PRECISIONS:
            raise ArtifactError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision != "fp32" and spec.dtype != "float32":
            raise ArtifactError(f"--precision {self.precision} converts a float32 export; {spec.name} has dtype {spec.dtype}")
        if self.int4 is not None:
            try:
                self.int4.check()
            except ValueError as e:
                raise ArtifactError(str(e)) from None
        if self.kv_cache not in KV_CACHES:
            raise ArtifactError(f"--kv-cache must be one of {', '.join(KV_CACHES)}, got {self.kv_cache!r}")
        if self.kv_cache == "shared" and (not self.optimize or self.target != "cpu" or self.precision == "fp16" or spec.dtype != "float32"):
            raise ArtifactError(f"--kv-cache shared needs --optimize, --target cpu and a float32 cache (float32 spec; --precision fp32, "
                                f"int8 or int4); got optimize={self.optimize}, target {self.target}, precision {self.precision}, "
                                f"{spec.name} dtype {spec.dtype}")

    @property
    def is_default(self) -> bool:
        return self == BuildOptions()

    @property
    def key(self) -> str:
        """Part of the artifact id, with the versions of the passes that run."""
        key = f"{self.target}:{int(self.optimize)}:{self.precision}"
        if self.optimize:
            from passes.optimize import VERSION

            key += f":optimize-v{VERSION}"
        if self.precision != "fp32":
            from passes.precision import VERSION

            key += f":precision-v{VERSION}"
        if self.precision == "int4" and self.int4 is not None:
            key += ":" + json.dumps(self.int4.to_json(), sort_keys=True)
        if self.kv_cache != "concat":
            from passes.optimize.kv_share import VERSION
            key += f":kv-{self.kv_cache}-v{VERSION}"
        return key

    @property
    def label(self) -> str:
        kv = "shared-cache" if self.kv_cache == "shared" else ""
        return " ".join(filter(None, ["optimized" if self.optimize else "", kv, self.precision, f"({self.target})"]))

    def to_json(self) -> dict:
        kv = {"kv_cache": {"buffer": self.kv_cache}} if self.kv_cache != "concat" else {}  # int4 options: in the precision record
        return {"target": self.target, "optimize": self.optimize, "precision": self.precision, **kv}

    def parity_args(self) -> dict:
        """Keyword arguments of zoo.app.parity.parity for graphs built with these options."""
        return {"precision": self.precision}
