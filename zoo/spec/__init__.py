"""The spec language and the contracts (floor 1): the pydantic spec (model), YAML loading
with line numbers (loader, reader, diagnostics), the catalog, parameter counts, the graph
IO contract, dummy inputs, the errors. No torch, no onnxruntime; pydantic and yaml only
in model, loader and their helpers, so the runtime can import contract, inputs and errors."""
