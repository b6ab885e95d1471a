"""ONNX Runtime sessions over an artifact: provider choice and forward passes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.artifact import Artifact, check_external_data, load_artifact
from runtime.validate import check_feed, check_outputs
from zoo.spec.errors import InputError
from zoo.spec.families import Role, family

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def empty_past(cache, batch: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """A cache of length 0 for each past.{i}.key/value of ``cache`` (a CacheLayout): prefill."""
    empty = np.zeros((batch, cache.kv_heads, 0, cache.head_dim), dtype=dtype)
    return {n: empty for n in cache.names(Role.PAST)}


def choose_providers(device: str = "auto") -> list[str]:
    """``auto``: CUDA where this onnxruntime has it, else CPU. ``cuda`` insists."""
    available = ort.get_available_providers()
    if device == "auto":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]] if PROVIDERS["cuda"] in available else [PROVIDERS["cpu"]]
    if device not in PROVIDERS:
        raise InputError(f"device must be auto, cpu or cuda, got {device!r}")
    if PROVIDERS[device] not in available:
        raise InputError(f"device {device}: this onnxruntime has no {PROVIDERS[device]} (available: {', '.join(available)})")
    return [PROVIDERS[device]] + ([PROVIDERS["cpu"]] if device != "cpu" else [])


def session_options(threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = threads or int(os.environ.get("ZOO_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class Session:
    """One InferenceSession per graph of an artifact.

    ``run(graph, **inputs)`` returns the graph's outputs by name; ``forward`` runs
    the whole model (encoder then decoder for an encoder-decoder). Both check what
    they are given first (runtime.validate.check_feed: names, dtypes, shapes, token
    ids, masks, lengths; InputError, one line) and refuse outputs with NaN or inf
    (OutputError). ``check=False`` skips both, for loops that feed their own
    well-formed arrays."""

    def __init__(
        self, artifact: Artifact | str | Path, *, device: str = "auto", threads: int | None = None, verify: bool = True, strict: bool = False
    ):
        if isinstance(artifact, Artifact):
            check_external_data(artifact.folder, artifact.info)  # load_artifact does it otherwise
            self.artifact = artifact
        else:
            self.artifact = load_artifact(artifact, verify=verify)
        providers = choose_providers(device)
        opts = session_options(threads)
        if providers[0] != PROVIDERS["cpu"]:
            from runtime.placement import record_options

            record_options(opts)  # where each node runs: checked below (runtime.placement)
        self.graphs = {g.name: g for g in self.artifact.graphs}
        self.sessions = {
            name: ort.InferenceSession(str(self.artifact.path(name)), sess_options=opts, providers=providers)
            for name in self.graphs
        }
        self.output_names = {name: [o.name for o in sess.get_outputs()] for name, sess in self.sessions.items()}
        self.provider = next(iter(self.sessions.values())).get_providers()[0]
        self.placement = self._check_placement(providers, strict) if self.provider != PROVIDERS["cpu"] else None

    def _check_placement(self, providers: list[str], strict: bool) -> dict:
        """Per graph, where ONNX Runtime placed its nodes (runtime.placement); attention or
        matmul nodes left on CPU in this non-CPU session: one warning line per class on
        stderr, or PlacementError (an InputError, one line) under ``strict``."""
        from runtime.placement import check_placement, placement_report, profile_once

        reports = {}
        for name, sess in self.sessions.items():
            try:
                reports[name] = placement_report(sess)
            except ValueError:  # this onnxruntime does not record it: profile one tiny run
                prof = profile_once(self.artifact.path(name), providers, self._tiny_feed(name), session_options())
                reports[name] = placement_report(prof["events"], session_provider=self.provider)
        check_placement(reports.items(), strict=strict)
        return reports

    def _tiny_feed(self, graph: str) -> dict[str, np.ndarray]:
        """Inputs of one token (empty past, one cross-attention slot) for ``graph``."""
        sizes = {"batch": 1, "seq": 1, "src_seq": 1, "total_seq": 1, "past_seq": 0}
        feed = {}
        for t in self.graphs[graph].inputs:
            shape = [a if isinstance(a, int) else sizes.get(a, 1) for a in t.axes]  # fixed sizes are numbers
            dtype = np.dtype(t.dtype)  # the manifest's numpy dtype name
            feed[t.name] = np.ones(shape, dtype=dtype) if dtype.kind in "iu" else np.zeros(shape, dtype=dtype)
        return feed

    @property
    def family(self) -> str:
        return self.artifact.family

    def run(self, graph: str, *, check: bool = True, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run one graph on its inputs by name (ids and masks: any integer dtype or
        nested lists, cast to int64; cache tensors: the artifact's float dtype)."""
        sess = self.sessions.get(graph)
        if sess is None:
            raise InputError(f"{self.artifact.name} has no graph {graph!r} (its graphs: {', '.join(self.sessions)})")
        if check:
            inputs = check_feed(self.graphs[graph], inputs, self.artifact.info.model, float_dtype=self.float_dtype)
        names = self.output_names[graph]
        out = dict(zip(names, sess.run(names, inputs)))
        if check:
            check_outputs(graph, out)
        return out

    def forward(self, inputs: dict[str, dict[str, np.ndarray]], *, check: bool = True) -> dict[str, np.ndarray]:
        """One pass without a cache. Inputs by graph name (the layout of
        zoo.spec.families.Family.token_inputs: ids and masks) -> every output by name.
        The decoder gets an empty past and, in an encoder-decoder, the encoder's
        cross-attention keys/values; its ``encoder_attention_mask`` defaults to the
        encoder's ``attention_mask``."""
        takes = list(self.graphs)
        if check and (not isinstance(inputs, Mapping) or sorted(map(str, inputs)) != sorted(takes) or not all(isinstance(v, Mapping) for v in inputs.values())):
            example = ", ".join(f"{g!r}: {{{', '.join(repr(n) + ': ...' for n in self._token_inputs(g))}}}" for g in takes)
            got = sorted(map(str, inputs)) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise InputError(f"forward takes the inputs of each graph by graph name: {{{example}}}; got {got}")
        fam = family(self)
        if not fam.generates:
            return self.run("model", check=check, **inputs["model"])
        if not fam.crossed:
            feed = inputs[fam.step_graph]
            if check:
                self._no_cache(fam.step_graph, feed)
            return self.run(fam.step_graph, check=check, **feed, **self.empty_past(_batch(feed.get(fam.ids))))
        return self._forward_crossed(fam, inputs, check)

    def _forward_crossed(self, fam, inputs: Mapping, check: bool) -> dict[str, np.ndarray]:
        """An encoder-decoder's forward: the encoder, then the decoder on its cross.* tensors."""
        enc = self.run(fam.encoder_graph, check=check, **inputs[fam.encoder_graph])
        feed = dict(inputs[fam.step_graph])
        src_mask = inputs[fam.encoder_graph]["attention_mask"]
        feed.setdefault("encoder_attention_mask", src_mask)
        if check:
            self._no_cache(fam.step_graph, feed)
            batch, dec_shape, mask_shape = enc["encoder_hidden_states"].shape[0], _shape(feed.get(fam.ids)), _shape(src_mask)
            if dec_shape and dec_shape[0] != batch:
                raise InputError(f"{fam.ids}: batch {dec_shape[0]}, the encoder's input_ids batch {batch}")
            given = _shape(feed["encoder_attention_mask"])
            if given is not None and mask_shape is not None and given != mask_shape:
                raise InputError(f"encoder_attention_mask: shape {given}, the encoder's attention_mask {mask_shape}")
        feed.update(Role.CROSS.pick(enc))
        return {**enc, **self.run(fam.step_graph, check=check, **feed, **self.empty_past(_batch(feed.get(fam.ids))))}

    def _token_inputs(self, graph: str) -> list[str]:
        return [t.name for t in self.graphs[graph].inputs if Role.of(t.name) is None]

    def _no_cache(self, graph: str, feed: Mapping) -> None:
        cached = [k for k in feed if Role.of(str(k)) in (Role.PAST, Role.CROSS)]
        if cached:
            raise InputError(
                f"forward runs without a cache and takes {', '.join(self._token_inputs(graph))}; "
                f"{cached[0]} given: pass cache tensors to run({graph!r}, ...)"
            )

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """A cache of length 0 for each past.{i}.key/value (prefill)."""
        return empty_past(self.artifact.cache, batch, self.float_dtype)

    @property
    def float_dtype(self) -> type:
        """The dtype of the cache tensors (past.*, cross.*), as the manifest declares
        the graphs' inputs: float16 in an fp16 build of a float32 spec (--precision
        fp16), float32 in an int8 one; else the spec's dtype (float16, or float32)."""
        for graph in self.graphs.values():
            for t in graph.inputs:
                if Role.of(t.name) in (Role.PAST, Role.CROSS) and t.dtype in ("float16", "float32", "float64"):
                    return np.dtype(t.dtype).type
        return np.float16 if self.artifact.info.dtype == "float16" else np.float32


def _shape(x) -> tuple | None:
    try:
        return tuple(int(n) for n in np.shape(x)) if x is not None else None
    except ValueError:  # rows of different lengths: check_feed says so
        return None


def _batch(ids) -> int:
    """The batch size of an ids input as given (1 where it cannot tell: check_feed then says why)."""
    shape = _shape(ids)
    return shape[0] if shape else 1
