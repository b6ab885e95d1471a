"""A decode step before and after: the generation loop of a git ref against this tree's, in one process.

The ref's runtime/generate.py is loaded as a module of its own beside this tree's
(the rest of runtime/ is shared), so both loops run round-robin in one process over
the same ONNX Runtime sessions' options. Per-step ms = decode seconds / decode steps,
medians over ``reps``. Batch throughput: generated tokens per second over the batch.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime.generate import GenerationConfig, Generator


def load_ref_generate(ref: str):
    """runtime/generate.py as of git ``ref``, imported as module ``generate_at_ref``."""
    src = subprocess.run(["git", "show", f"{ref}:runtime/generate.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "generate_at_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("generate_at_ref", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["generate_at_ref"] = mod
    spec.loader.exec_module(mod)
    return mod


def step_ms(gens: dict, *, reps: int, new: int, batch: int = 1) -> dict:
    """name -> (median per-step ms, median tokens/s over the batch); gens run round-robin."""
    cfg = GenerationConfig(max_new_tokens=new, eos=())
    prompt = [[1, 2, 3, 4]] * batch
    for g in gens.values():
        g.generate(prompt, cfg)  # warm-up
    times = {n: [] for n in gens}
    for _ in range(reps):
        for name, g in gens.items():
            out = g.generate(prompt, cfg)
            times[name].append(out.decode_seconds / max(out.steps - 1, 1))
    return {n: (statistics.median(t) * 1e3, batch / statistics.median(t)) for n, t in times.items()}


def before_after(folder: Path, ref_mod, *, threads: int, reps: int, new: int) -> dict:
    """{"before": ms, "after": ms, "ratio": after / before} for the artifact at ``folder``."""
    gens = {"before": ref_mod.Generator(folder, device="cpu", threads=threads), "after": Generator(folder, device="cpu", threads=threads)}
    ms = step_ms(gens, reps=reps, new=new)
    out = {n: round(v[0], 4) for n, v in ms.items()}
    out["ratio"] = round(out["after"] / out["before"], 3)
    return out


def batch_ratio(folder: Path, *, threads: int, reps: int, new: int, batch: int = 8) -> dict:
    """Throughput of batch ``batch`` over batch 1 on one artifact (this tree's loop)."""
    g = Generator(folder, device="cpu", threads=threads)
    one = step_ms({"g": g}, reps=reps, new=new, batch=1)["g"]
    many = step_ms({"g": g}, reps=reps, new=new, batch=batch)["g"]
    return {"batch1_tok_s": round(one[1], 1), f"batch{batch}_tok_s": round(many[1], 1), "ratio": round(many[1] / one[1], 2)}
