"""An artifact as a Triton Inference Server model repository (ONNX Runtime backend).

``export_triton(artifact, repo)`` writes::

    REPO/README.md                      how to serve it, what goes in and out
    REPO/NAME/config.pbtxt              one model per graph of the artifact
    REPO/NAME/1/model.onnx              the graph, byte for byte (+ its external data files)

Decoder-only and encoder-only artifacts give one model, NAME; encoder-decoder gives
NAME_encoder and NAME_decoder. Every input and output of the config comes from the
artifact's manifest (names, dtypes, axes): the leading ``batch`` axis is Triton's
batch dimension (``max_batch_size``), every other named axis is ``-1``, fixed sizes stay.

Triton's ONNX Runtime backend runs one forward pass per request: the generation loop
(the KV cache carried from step to step, sampling, stopping) stays with the caller, as
``runtime.generate`` does it in process. Pure Python: reads the manifest, copies files;
imports neither torch nor onnxruntime. config.pbtxt is tritonclient's ModelConfig protobuf
in text format, so writing one needs ``pip install 'transformer-zoo[triton]'``.

``config`` (options, dtypes and dims, the ModelConfig), ``readme`` (README.md) and
``export`` (the repository on disk).
"""

from zoo.app.triton.config import (
    GRAPH_LEVELS,
    KINDS,
    TRITON_TYPES,
    TritonClientMissing,
    TritonModel,
    TritonOptions,
    concrete_shape,
    example_sizes,
    model_config,
    model_config_message,
    triton_dims,
    triton_type,
)
from zoo.app.triton.export import MODEL_FILE, TritonExport, export_triton, plan
from zoo.app.triton.readme import readme

__all__ = [
    "GRAPH_LEVELS",
    "KINDS",
    "MODEL_FILE",
    "TRITON_TYPES",
    "TritonClientMissing",
    "TritonExport",
    "TritonModel",
    "TritonOptions",
    "concrete_shape",
    "example_sizes",
    "export_triton",
    "model_config",
    "model_config_message",
    "plan",
    "readme",
    "triton_dims",
    "triton_type",
]
