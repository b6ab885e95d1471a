"""Graph passes, ONNX to ONNX (floor 2, beside the compiler and the runtime; imports onnx,
onnx_ir, numpy and the spec floor only): the fused lowering per provider
(passes.optimize), fp16 and int8 (passes.precision), and the graph files (passes.files)."""
