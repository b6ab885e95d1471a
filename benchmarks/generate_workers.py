"""The in-process side of benchmarks/generate.py: one worker per generation method
(the zoo on ONNX Runtime, transformers' generate, the zoo's torch module without a
cache, onnxruntime-genai), each run in its own process and asked for runs over stdin."""

from __future__ import annotations

import json
import time
from pathlib import Path

def _prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(batch, length)).tolist()


class ZooWorker:
    def __init__(self, args, io_binding: bool | None):
        from runtime.generate import Generator

        self.gen = Generator(args.artifact, device=args.device, threads=args.threads, io_binding=io_binding)
        self.vocab = self.gen.vocab

    def run(self, batch: int, prompt: int, new: int) -> dict:
        from runtime.generate import GenerationConfig

        out = self.gen.generate(_prompts(batch, prompt, self.vocab), GenerationConfig(max_new_tokens=new, eos=()))
        return {"ttft": out.time_to_first_token_s, "steps": out.step_seconds, "first": out.tokens[0][:8], "provider": out.provider}


class TransformersWorker:
    def __init__(self, args):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(args.threads)
        self.torch = torch
        self.device = "cuda" if args.device == "cuda" else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32  # torch eager on CUDA at the zoo's fp16
        self.model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=dtype, attn_implementation="eager").to(self.device).eval()
        self.vocab = self.model.config.vocab_size

    def run(self, batch: int, prompt: int, new: int) -> dict:
        from transformers.generation.streamers import BaseStreamer

        torch = self.torch
        times: list[float] = []

        class Clock(BaseStreamer):
            def put(self, value):
                times.append(time.perf_counter())

            def end(self):
                pass

        ids = torch.tensor(_prompts(batch, prompt, self.vocab), device=self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=True,
                streamer=Clock(),
                pad_token_id=0,
            )
        if self.device == "cuda":
            torch.cuda.synchronize()
        ticks = times[1:]  # the first put() is the prompt itself
        steps = [b - a for a, b in zip(ticks, ticks[1:])]
        return {"ttft": ticks[0] - t0, "steps": steps, "first": out[0, prompt : prompt + 8].tolist(), "provider": self.device}


class NoCacheWorker:
    """The zoo's torch module, greedy, a full forward over the whole sequence per token."""

    def __init__(self, args):
        import torch

        from compiler.builder import build
        from compiler.importers import import_folder

        torch.set_num_threads(args.threads)
        self.torch = torch
        imported = import_folder(args.hf)
        self.model = build(imported.spec)
        self.model.load_state_dict(imported.state)
        self.vocab = imported.spec.vocab_size

    def run(self, batch: int, prompt: int, new: int) -> dict:
        torch = self.torch
        ids = torch.tensor(_prompts(batch, prompt, self.vocab))
        marks = [time.perf_counter()]
        with torch.no_grad():
            for _ in range(new):
                logits = self.model(ids, torch.ones_like(ids))
                ids = torch.cat((ids, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
                marks.append(time.perf_counter())
        steps = [b - a for a, b in zip(marks[1:], marks[2:])]
        return {"ttft": marks[1] - marks[0], "steps": steps, "first": ids[0, prompt : prompt + 8].tolist(), "provider": "torch"}


class GenaiWorker:
    """onnxruntime-genai's generator on a model its builder made from the checkpoint."""

    def __init__(self, args):
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(args.genai)
        if args.threads:  # the same thread count as every other method
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads}}}}))
        self.model = og.Model(config)
        self.vocab = json.loads((Path(args.hf) / "config.json").read_text())["vocab_size"]

    def run(self, batch: int, prompt: int, new: int) -> dict:
        import numpy as np

        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=prompt + new, min_length=prompt + new, batch_size=batch)
        t0 = time.perf_counter()
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.array(_prompts(batch, prompt, self.vocab), dtype=np.int32))
        marks = []
        while not gen.is_done():
            gen.generate_next_token()
            marks.append(time.perf_counter())
        steps = [b - a for a, b in zip(marks, marks[1:])]
        first = [int(t) for t in gen.get_sequence(0)[prompt : prompt + 8]]
        return {"ttft": marks[0] - t0, "steps": steps, "first": first, "provider": "genai"}


class GemvWorker:
    """The bandwidth bound as a method (benchmarks/bandwidth.py): each "token" is one fp32
    GEMV over as many weight bytes as the zoo's fp32 step reads, so its tokens/s is the
    fp32 decode bound, timed in the same round-robin as the methods."""

    def __init__(self, args):
        from bandwidth import gemv_session

        self.gemv, self.nbytes = gemv_session(int(args.artifact), threads=args.threads, device=args.device)

    def run(self, batch: int, prompt: int, new: int) -> dict:
        marks = [time.perf_counter()]
        for _ in range(new):
            self.gemv()
            marks.append(time.perf_counter())
        steps = [b - a for a, b in zip(marks[1:], marks[2:])]
        return {"ttft": marks[1] - marks[0], "steps": steps, "first": None, "provider": "gemv", "bytes": self.nbytes}
