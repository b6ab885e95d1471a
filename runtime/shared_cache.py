"""Decoding over a shared KV cache buffer (an artifact built with ``--kv-cache shared``).

The graph's ``past.{i}.key/value`` are buffers of ``capacity`` slots (batch, kv_heads,
capacity, head_dim), allocated once per generation; IO binding binds each as the
past input AND as the ``present.{i}.*`` output, so the graph's GroupQueryAttention
writes the new tokens' rows in place (at slots total_seq - seq .. total_seq - 1, with
total_seq the attention mask's width) and reads only the first total_seq slots. No
step copies the cache (passes.optimize.kv_share has the graph's side).

``SharedRunner`` has runtime.generate._Runner's interface (``start``, ``step``, ``past``,
``fixed``, ``_value``), so greedy / sampled generation and beam search (which reorders
``past`` rows) run over it unchanged.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnxruntime as ort

from zoo.spec.errors import InputError
from zoo.spec.families import SHARED_AXIS, Role


def is_shared(sess: ort.InferenceSession) -> bool:
    """Whether a decoder session's past.* inputs are shared buffers (axis ``max_seq``)."""
    return any(Role.of(i.name) is Role.PAST and len(i.shape) == 4 and i.shape[2] == SHARED_AXIS for i in sess.get_inputs())


def shared_buffers(cache, batch: int, capacity: int, dtype=np.float32, device: str = "cpu") -> dict[str, ort.OrtValue]:
    """One zeroed (batch, kv_heads, capacity, head_dim) OrtValue per past.{i}.key/value."""
    shape = (batch, cache.kv_heads, capacity, cache.head_dim)
    return {n: ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype), device, 0) for n in cache.names(Role.PAST)}


class SharedRunner:
    """Runs a shared-buffer decoder graph step after step (always with IO binding).

    ``start`` allocates the buffers (``capacity`` slots, default the model's
    max_seq_len); ``step`` binds this step's ids and mask, runs, and returns the last
    position's logits (B, V). Assigning a new ``past`` (beam search's reorder) or
    ``fixed`` rebinds them at the next step."""

    io_binding = True

    def __init__(self, sess: ort.InferenceSession, cache, max_len: int, device: str = "cpu"):
        self.sess, self.cache, self.max_len, self.device = sess, cache, max_len, device
        self.fixed: dict = {}
        self.past: dict = {}
        self.capacity = 0
        self._binding: Optional[ort.IOBinding] = None
        self._bound: tuple = ()

    def start(self, batch: int, fixed: dict, dtype, capacity: Optional[int] = None) -> None:
        self.capacity = min(capacity or self.max_len, self.max_len)
        self.fixed = {k: self._value(v) for k, v in fixed.items()}
        self.past = shared_buffers(self.cache, batch, self.capacity, dtype, self.device)
        self._binding, self._bound = None, ()

    def _value(self, x):
        if isinstance(x, ort.OrtValue):
            return x
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), self.device, 0)

    def _bind(self) -> ort.IOBinding:
        """A binding with logits first (get_outputs() follows the binding order), then each
        buffer as past input and present output, and the fixed inputs."""
        binding = self.sess.io_binding()
        binding.bind_output("logits", "cpu")
        for name, value in self.past.items():
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(Role.PRESENT.counterpart(name), value)
        for name, value in self.fixed.items():
            binding.bind_ortvalue_input(name, value)
        self._binding, self._bound = binding, (self.past, self.fixed)
        self.capacity = next(iter(self.past.values())).shape()[2] if self.past else self.capacity
        return binding

    def step(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """feeds: ids (B, seq) and mask (B, total_seq) of this step -> logits of the last position (B, V)."""
        return self.run(feeds)[:, -1]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """feeds: ids (B, seq) and mask (B, total_seq) -> the logits of every new position (B, seq, V)."""
        fresh = self._binding is not None and self._bound[0] is self.past and self._bound[1] is self.fixed
        binding = self._binding if fresh else self._bind()
        for name, value in feeds.items():
            if value.ndim == 2 and Role.of(name) is None and value.shape[1] > self.capacity:
                raise InputError(f"{name}: {value.shape[1]} tokens, more than the {self.capacity} slots of the shared KV cache")
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("logits", "cpu")  # again: its shape changes (bound first, it stays output 0)
        self.sess.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()
