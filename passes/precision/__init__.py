"""Reduced-precision graph passes, ONNX to ONNX (onnx, numpy and ONNX Runtime's offline
converters only; nothing here runs a graph):

- ``fp16`` (to_fp16): float16 weights and compute; norms, softmax with its scores and
  position math stay float32; float16 cache, float32 logits.
- ``int8`` (to_int8): weight-only int8 blocks (ONNX Runtime's MatMulNBits), the outlier
  input channels of each matmul in float32 as the calibration (zoo.app.convert.calibrate)
  found them; the token embedding and a tied output projection share one int8 table.
- ``int4`` (to_int4): weight-only 4-bit blocks (MatMulNBits bits 4) on int8's machinery:
  outlier channels in float32, the query/key projections in int8, the token embedding
  (GatherBlockQuantized) and a tied output projection sharing one 4-bit table.
- ``dynamic``: the dynamic quantization of VERSION 1, kept to compare with.

The build step that runs them, measures them and writes the manifest's record is
zoo.app.convert.
"""

from passes.precision.fp16 import KEPT_FP32_OPS, drop_round_trips, fp32_nodes, to_fp16
from passes.precision.graph import quiet_logs, reinfer, topological_sort
from passes.precision.int4 import Int4Options, to_int4
from passes.precision.int8 import Int8Options, to_int8

# Part of an artifact's identity: bump when the conversion changes, so earlier builds are not reused.
VERSION = 6

__all__ = [
    "VERSION", "KEPT_FP32_OPS", "Int4Options", "Int8Options", "drop_round_trips", "fp32_nodes",
    "quiet_logs", "reinfer", "to_fp16", "to_int4", "to_int8", "topological_sort",
]
