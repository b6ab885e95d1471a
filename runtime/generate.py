"""Generation with a KV cache on ONNX Runtime alone (onnxruntime + numpy).

The decoder graph (zoo.spec.families.CacheLayout) takes the cache of the earlier tokens
and returns it with the new tokens appended. A prompt batch is padded on the left,
so every row's next token sits in the last column; the attention mask marks the
padding and the graph counts positions per row over the mask (absolute tables,
RoPE, ALiBi and relative bias all see each token at its place in its own row).

Prefill and decode run the same graph (prefill with a past of length 0). A
separate prefill graph was measured and brought nothing: see benchmarks/cache_graphs.py.

Each step picks the next tokens from the last position's logits, after the logits
processors (runtime.processors, runtime.sampling). Rows stop at an EOS id, a stop string
or after ``max_new_tokens``; a finished row is fed the pad id (its outputs are ignored)
until every row is done. ``num_beams > 1`` runs beam search instead (runtime.beam).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import onnxruntime as ort

from runtime import processors
from runtime.sampling import GenerationConfig, next_tokens
from runtime.session import Session, empty_past
from runtime.validate import check_logits, left_pad, prompt_rows  # noqa: F401  (left_pad: re-exported)
from zoo.spec.errors import InputError
from zoo.spec.families import Role, family


@dataclass
class Step:
    """What a stream yields after each step: the new token of every row (B,), and
    which rows are finished (a finished row's token is the pad filler)."""

    index: int
    tokens: np.ndarray
    finished: np.ndarray
    seconds: float


@dataclass
class Generation:
    """The result: per row the new tokens (the EOS included when hit) and why it
    stopped ("eos", "stop" for a stop string, "length" for max_new_tokens, "max_seq_len"),
    with timings; beam search adds each row's sequence_scores (transformers' meaning)."""

    tokens: list[list[int]]
    finish_reasons: list[str]
    provider: str
    prompt_tokens: int
    time_to_first_token_s: float
    step_seconds: list[float] = field(default_factory=list)
    logits: Optional[np.ndarray] = None  # (B, steps, V) with keep_logits: what each token was drawn from
    sequence_scores: Optional[list[float]] = None  # beam search: sum(log p) / new_length ** length_penalty

    @property
    def steps(self) -> int:
        return 1 + len(self.step_seconds)

    @property
    def decode_seconds(self) -> float:
        return float(sum(self.step_seconds))

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second per sequence after the first token."""
        return len(self.step_seconds) / self.decode_seconds if self.step_seconds else float("nan")

    @property
    def throughput(self) -> float:
        """Generated tokens per second over the whole batch, decode phase."""
        return self.decode_tokens_per_s * len(self.tokens)

    def summary(self) -> dict:
        return {
            "provider": self.provider,
            "batch": len(self.tokens),
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": [len(t) for t in self.tokens],
            "finish_reasons": self.finish_reasons,
            "time_to_first_token_s": self.time_to_first_token_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "throughput_tokens_per_s": self.throughput,
            **({"sequence_scores": self.sequence_scores} if self.sequence_scores is not None else {}),
        }


# --------------------------------------------------------------------------- running the graphs


class _Runner:
    """Runs the decoder graph step after step and keeps its cache.

    With IO binding the cache tensors stay where ONNX Runtime put them (device
    memory on CUDA) and go back in as the next step's past without a copy; only the
    logits come to the host. Without it (plain ``run``) the cache goes through numpy,
    which on CPU costs nothing extra; benchmarks/generate.py measures both."""

    def __init__(self, session: Session, graph: str, *, io_binding: bool):
        self.sess = session.sessions[graph]
        self.cache = session.artifact.cache
        self.names_out = [o.name for o in self.sess.get_outputs()]
        self.io_binding = io_binding
        self.device = "cuda" if session.provider == "CUDAExecutionProvider" else "cpu"
        # output index -> the past.* input it feeds next step, worked out once (not per step)
        self.carry = [(i, Role.PAST.counterpart(n)) for i, n in enumerate(self.names_out) if Role.of(n) is Role.PRESENT]
        self.feed: dict = {}  # every input but ids and mask, kept and updated in place step after step
        self.fixed_names: list = []  # inputs that do not change between steps (cross.*, encoder mask)

    @property
    def past(self) -> dict:  # the cache the next step reads, by past.* name (runtime.beam sets it)
        return {name: self.feed[name] for _, name in self.carry}

    @past.setter
    def past(self, tensors: dict) -> None:
        self.feed.update(tensors)

    @property
    def fixed(self) -> dict:
        return {name: self.feed[name] for name in self.fixed_names}

    @fixed.setter
    def fixed(self, tensors: dict) -> None:
        self.fixed_names = list(tensors)
        self.feed.update(tensors)

    def start(self, batch: int, fixed: dict, dtype, capacity: Optional[int] = None) -> None:
        """A fresh cache for ``batch`` rows (``capacity``, the slots a generation fills, is for
        runtime.shared_cache.SharedRunner: this cache grows as it goes)."""
        past = empty_past(self.cache, batch, dtype)
        if self.io_binding:
            fixed = {k: self._value(v) for k, v in fixed.items()}
            past = {k: self._value(v) for k, v in past.items()}
        self.feed = {}
        self.fixed, self.past = fixed, past

    def _value(self, x):
        if isinstance(x, ort.OrtValue):
            return x
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), self.device, 0)

    def step(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """feeds: ids and mask of this step -> logits of the last position (B, V)."""
        if not self.io_binding:
            feed = self.feed
            feed.update(feeds)
            out = self.sess.run(self.names_out, feed)
            for i, name in self.carry:
                feed[name] = out[i]
            return out[0][:, -1]
        binding = self.sess.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in self.feed.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for i, _ in self.carry:
            binding.bind_output(self.names_out[i], self.device)
        self.sess.run_with_iobinding(binding)
        outs = binding.get_outputs()
        for i, name in self.carry:
            self.feed[name] = outs[i]
        return outs[0].numpy()[:, -1]


class Generator:
    """Generation over an artifact: ``generate`` returns every token at the end,
    ``stream`` yields them step by step.

    >>> gen = Generator("artifacts/gpt2-small")
    >>> out = gen.generate([[464, 2068, 7586]], GenerationConfig(max_new_tokens=20))
    """

    def __init__(
        self,
        artifact: Session | str | Path,
        *,
        device: str = "auto",
        threads: Optional[int] = None,
        io_binding: Optional[bool] = None,
    ):
        self.session = artifact if isinstance(artifact, Session) else Session(artifact, device=device, threads=threads)
        self.family = family(self.session)
        if not self.family.generates:
            raise InputError(f"{self.session.artifact.name}: an encoder-only model has no decoder to generate with")
        model = self.session.artifact.info.model
        self.vocab, self.max_len = model.vocab_size, model.max_seq_len
        self.tokens = model.tokens  # runtime.manifest.Tokens: bos, eos, pad, decoder_start
        on_cuda = self.session.provider == "CUDAExecutionProvider"
        self.io_binding = on_cuda if io_binding is None else io_binding
        self.runner = self._runner()
        # LongRoPE (manifest kv_cache.refill_at): when the sequence first grows past the
        # trained context the cache is recomputed from every token, as transformers' Phi-3
        # generate does (-2: never)
        refill = self.session.artifact.cache.refill_at if self.session.artifact.cache is not None else None
        self.refill_at = refill if refill is not None else -2
        self.ids_name, self.mask_name = self.family.ids, self.family.mask
        self._tokenizer = None  # loaded for stop strings (runtime.processors.stop_strings)

    def _runner(self):
        """A _Runner, or over a --kv-cache shared artifact a runtime.shared_cache.SharedRunner
        (IO binding always: the buffer is bound as past and present)."""
        cache = self.session.artifact.cache
        if cache is None or not cache.shared:
            return _Runner(self.session, self.family.step_graph, io_binding=self.io_binding)
        from runtime.shared_cache import SharedRunner

        self.io_binding = True
        device = "cuda" if self.session.provider == "CUDAExecutionProvider" else "cpu"
        return SharedRunner(self.session.sessions[self.family.step_graph], cache, self.max_len, device)

    @property
    def provider(self) -> str:
        return self.session.provider

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig = GenerationConfig(),
        *,
        decoder_prompts: Optional[Sequence[Sequence[int]]] = None,
        on_step: Optional[Callable[[Step], None]] = None,
        keep_logits: bool = False,
    ) -> Generation:
        """Generate for a batch of prompts (lists of token ids, any lengths). For an
        encoder-decoder the prompts feed the encoder and the decoder starts from
        ``decoder_prompts`` (default: the decoder start token). ``on_step`` receives
        each Step as it is produced (streaming); ``keep_logits`` keeps each step's
        logits in the result."""
        stream = self.stream(prompts, config, decoder_prompts=decoder_prompts, keep_logits=keep_logits)
        for step in stream:
            if on_step is not None:
                on_step(step)
        return self.last

    def chat(self, messages, config: GenerationConfig = GenerationConfig(), *, template: Optional[str] = None,
             on_text: Optional[Callable[[str], None]] = None, show_special: bool = False):
        """Answer a conversation (``[{"role": "user", "content": "..."}]``) through the artifact's
        chat template, or ``template`` (a Jinja chat template's text). Returns a
        runtime.conversation.ChatReply (text, tokens, finish_reason); ``on_text`` streams the text."""
        from runtime.conversation import Chat

        return Chat(self, template=template).reply(messages, config, on_text=on_text, show_special=show_special)

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationConfig = GenerationConfig(),
        *,
        decoder_prompts: Optional[Sequence[Sequence[int]]] = None,
        keep_logits: bool = False,
    ) -> Iterator[Step]:
        """Yield a Step as each token is produced; ``self.last`` holds the Generation after.
        The prompts and options are checked here, before the first step (InputError).
        Beam search (``num_beams > 1``) yields the best hypotheses' tokens only at the end:
        the best beam is not known before."""
        if not isinstance(config, GenerationConfig):
            raise InputError(f"config must be a GenerationConfig, got {type(config).__name__}")
        prompts = prompt_rows(prompts, "prompt", self.vocab, self.max_len)
        eos = self.tokens.eos if config.eos is None else tuple(config.eos)
        for e in eos:
            if not 0 <= e < self.vocab:
                raise InputError(f"eos id {e} is outside the vocabulary [0, {self.vocab})")
        pad = self.tokens.pad
        pad = pad if pad is not None else (eos[0] if eos else 0)
        batch = len(prompts)
        if self.family.crossed:
            if decoder_prompts is None:
                start = next((t for t in (self.tokens.decoder_start, self.tokens.pad, self.tokens.bos) if t is not None), 0)
                decoder_prompts = [[start]] * batch
            decoder_prompts = prompt_rows(decoder_prompts, "decoder prompt", self.vocab, self.max_len)
            if len(decoder_prompts) != batch:
                raise InputError(f"{len(decoder_prompts)} decoder prompts for {batch} prompts")
        elif decoder_prompts is not None:
            raise InputError("decoder_prompts are for encoder-decoder models; this one is decoder-only")
        stopper = processors.stop_strings(config, self)
        if config.num_beams > 1:
            from runtime.beam import beam_steps, check_beam_config

            refused = check_beam_config(config, keep_logits)
            if refused:
                raise InputError(refused)
            return beam_steps(self, prompts, decoder_prompts, config, eos, pad, stopper)
        return self._steps(prompts, decoder_prompts, config, eos, pad, keep_logits, stopper)

    def _inputs(self, prompts, decoder_prompts, pad: int) -> tuple:
        """The first step's (ids, mask) padded on the left, the rows the new tokens extend and
        the inputs fixed for the whole generation (an encoder-decoder's encoder outputs)."""
        if not self.family.crossed:
            return (*left_pad(prompts, pad), prompts, {})
        src_ids, src_mask = left_pad(prompts, pad)
        enc = self.session.run(self.family.encoder_graph, check=False, input_ids=src_ids, attention_mask=src_mask)
        return (*left_pad(decoder_prompts, pad), decoder_prompts, {**Role.CROSS.pick(enc), "encoder_attention_mask": src_mask})

    def _steps(self, prompts, decoder_prompts, config, eos: tuple, pad: int, keep_logits: bool, stopper) -> Iterator[Step]:
        rng = np.random.default_rng(config.seed)
        batch = len(prompts)
        t_start = time.perf_counter()
        ids, mask, rows, fixed = self._inputs(prompts, decoder_prompts, pad)
        width, pads = ids.shape[1], ids.shape[1] - np.array([len(r) for r in rows])
        keep_seq = processors.active(config) or self.refill_at >= 0
        room = self.max_len - ids.shape[1]  # cache slots left before max_seq_len
        budget = min(config.max_new_tokens, room + 1)
        self.runner.start(batch, fixed, self.session.float_dtype, capacity=width + budget)  # slots this generation fills
        seq = ids  # every token fed so far, for a cache recomputed at refill_at
        tokens: list[list[int]] = [[] for _ in range(batch)]
        reasons = [""] * batch
        finished = np.zeros(batch, dtype=bool)
        step_seconds: list[float] = []
        kept: list[np.ndarray] = []
        ttft = 0.0
        t_step = t_start
        self.last = None
        for index in range(budget):
            logits = self.runner.step({self.ids_name: ids, self.mask_name: mask})
            check_logits(logits, index)
            if keep_logits:
                kept.append(np.array(logits, dtype=np.float32))
            if processors.active(config):
                logits = processors.process(logits, seq, config, pads=pads, prompt_width=width, eos=eos)
            new = next_tokens(logits, config, rng)
            new = np.where(finished, pad, new)
            now = time.perf_counter()
            if index == 0:
                ttft = now - t_start
            else:
                step_seconds.append(now - t_step)
            _record(new, finished, tokens, reasons, rows, eos, stopper)
            if index == budget - 1:
                cause = "length" if budget == config.max_new_tokens else "max_seq_len"
                reasons = [r or cause for r in reasons]
                finished[:] = True
            yield Step(index, new, finished.copy(), now - t_start)
            if finished.all():
                break
            t_step = time.perf_counter()  # the caller's time between steps is not the model's
            ids = new[:, None]
            seq = np.concatenate((seq, ids), axis=1) if keep_seq else seq  # read by processors, refill
            mask = np.concatenate((mask, np.ones((batch, 1), dtype=np.int64)), axis=1)
            if mask.shape[1] == self.refill_at + 1:  # LongRoPE's switch: every key again, with the long set
                self.runner.start(batch, fixed, self.session.float_dtype, capacity=width + budget)
                ids = seq
        self.last = Generation(
            tokens=tokens,
            finish_reasons=reasons,
            provider=self.provider,
            prompt_tokens=int(sum(len(p) for p in prompts)),
            time_to_first_token_s=ttft,
            step_seconds=step_seconds,
            logits=np.stack(kept, axis=1) if keep_logits else None,
        )


def _record(new, finished, tokens, reasons, rows, eos, stopper) -> None:
    """Append each running row's new token (new (B,)); a row ends on an eos id ("eos")
    or when its text reaches a stop string ("stop"; ``rows`` are the prompts it extends)."""
    for row in np.nonzero(~finished)[0]:
        tokens[row].append(int(new[row]))
        if int(new[row]) in eos:
            finished[row], reasons[row] = True, "eos"
        elif stopper is not None and stopper.hit(list(rows[row]) + tokens[row]):
            finished[row], reasons[row] = True, "stop"
