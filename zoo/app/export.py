"""The build's first stage: every graph of the contract exported from the torch module
(compiler.export) and saved as a checked ONNX file (passes.files)."""

from __future__ import annotations

from pathlib import Path

from compiler.export import export_graph
from compiler.model import graph_modules
from compiler.replicate import export_replicated
from passes.files import graph_record, save_graph
from zoo.spec.families import graphs_for


REPLICATE = True  # a deep decoder of identical layers: export 3 layers and copy (compiler.replicate)


def export_all(model, spec, folder: Path, on_graph=None) -> dict[str, dict]:
    """Export every graph of the contract into ``folder``; returns per graph its
    file(s), node count and weight bytes. ``on_graph(name)`` is called before each.
    A decoder of identical layers is exported from a 3-layer copy (REPLICATE)."""
    modules = graph_modules(model)
    info = {}
    for graph in graphs_for(spec):
        if on_graph:
            on_graph(graph.name)
        proto = export_replicated(model, spec, graph) if REPLICATE else None
        if proto is None:
            proto = export_graph(modules[graph.name], spec, graph)
        info[graph.name] = graph_record(proto, save_graph(proto, Path(folder) / graph.file))
    return info
