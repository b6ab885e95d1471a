"""The table and the target verdicts of benchmarks/generate.py, from its results."""

from __future__ import annotations

TARGETS = {"gpt2-small": 1.8, "gpt2-tiny": 3.5}  # decode tokens/s over transformers
REALISTIC = ("llama-135m", "gpt2-small", "llama-small")  # decoders whose weights dominate a step
CONTEXT_MODELS = ("gpt2-small", "llama-small")  # issue 17: a step at the longest context <= 1.15x the step at 64
INT4_SPEED, SHARE, CONTEXT, BATCH8 = 1.2, 0.9, 1.15, 4.0


def _cell(e: dict, key: str, fmt: str) -> str:
    return format(e[key], fmt) if e.get(key) is not None else ""


def table(results: dict, info: dict) -> str:
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, {info['device']}; "
        f"onnxruntime {info['onnxruntime']}, onnxruntime-genai {info.get('onnxruntime-genai', 'not installed')}, "
        f"torch {info['torch']}, transformers {info['transformers']}",
        "",
        "| model | method | TTFT ms | decode tok/s | x transformers | bound tok/s | share of bound | top-1 vs fp32 | batch 8 tok/s (x batch 1) | peak RSS MB | greedy = HF |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        agree = r.get("top1_vs_fp32", {})
        for m, e in r["methods"].items():
            b8 = f"{e['batch8_tokens_per_s']:.1f} ({e['batch8_over_batch1']:.1f}x)" if "batch8_tokens_per_s" in e else ""
            top1 = f"{agree[m]['top1'] * 100:.1f}%" if m in agree else ("100% (the reference)" if m == "zoo" and agree else "")
            greedy = {True: "yes", False: "no", None: ""}[e["greedy_tokens_agree_with_transformers"]]
            share = f"{e['share_of_bound'] * 100:.0f}%" if "share_of_bound" in e else ""
            lines.append(
                f"| {name} | {m} | {e['ttft_ms']:.1f} | {e['decode_tokens_per_s']:.1f} ± {e['decode_spread'] * 100:.0f}% | "
                f"{_cell(e, 'decode_ratio_to_transformers', '.2f')} | {_cell(e, 'bound_tokens_per_s', '.1f')} | {share} | {top1} | "
                f"{b8} | {e['peak_rss_mb']:.0f} | {greedy} |"
            )
    lines.append("")
    for name, r in results.items():
        lines.append(f"- {name}: " + "; ".join(_notes(r)))
    return "\n".join(lines)


def _notes(r: dict) -> list[str]:
    bits = [f"weights {r['weights']['kind']}" + (f" (logit std {r['weights']['logit_std']:.1f}, residual outliers {r['weights']['residual_outlier_ratio']:.0f}x)" if "logit_std" in r["weights"] else ""),
            f"weight bytes {r['weight_bytes'] / r['parameter_bytes']:.4f} of parameter bytes"]
    if "gemv_bandwidth" in r:
        bw = r["gemv_bandwidth"]
        bits.append(f"an fp32 GEMV over {bw['weight_bytes'] / 1e6:.0f} MB (the gemv-bound row) reads {bw['gb_per_s']:.1f} GB/s")
    if "context_ratio" in r:
        c = r["decode_step_ms_by_context"]
        steps = ", ".join(f"{c[k]:.2f} ms at {k}" for k in sorted(c, key=int))
        bits.append(f"decode step {steps} (longest / 64: x{r['context_ratio']:.2f})")
    if r.get("top1_vs_fp32"):
        n = next(iter(r["top1_vs_fp32"].values()))["positions"]
        bits.append(f"top-1 agreement teacher-forced over {n} positions of the fp32 model's greedy text")
    if r.get("genai_note"):
        bits.append(r["genai_note"])
    return bits


def verdicts(results: dict) -> list[str]:
    out = []
    for name, want in TARGETS.items():
        e = results.get(name, {}).get("methods", {}).get("zoo")
        if e and "decode_ratio_to_transformers" in e:
            got = e["decode_ratio_to_transformers"]
            out.append(f"{name}: zoo decode {got:.2f}x transformers (target {want}x): {_met(got >= want)}")
    for name, r in results.items():
        out += _int4_verdicts(name, r["methods"], r.get("top1_vs_fp32", {}))
        zoo = r["methods"].get("zoo")
        if name in REALISTIC and zoo and "share_of_bound" in zoo:
            out.append(f"{name}: zoo fp32 decode {zoo['share_of_bound'] * 100:.0f}% of the GEMV bandwidth bound (target >= {SHARE:.0%}): {_met(zoo['share_of_bound'] >= SHARE)}")
        if "context_ratio" in r:
            want = CONTEXT if name in CONTEXT_MODELS else None
            verdict = f" (target <= {want}): {_met(r['context_ratio'] <= want)}" if want else ""
            out.append(f"{name}: step at context {r['context_longest']} {r['context_ratio']:.2f}x the step at 64{verdict}")
        if name == "gpt2-small" and zoo and "batch8_over_batch1" in zoo:
            out.append(f"{name}: batch 8 throughput {zoo['batch8_over_batch1']:.1f}x batch 1 (target >= {BATCH8}x): {_met(zoo['batch8_over_batch1'] >= BATCH8)}")
        ratio = r["weight_bytes"] / r["parameter_bytes"]
        out.append(f"{name}: weight bytes {ratio:.4f} of parameter bytes (target within 5%): {_met(abs(ratio - 1) <= 0.05)}")
        genai = r["methods"].get("onnxruntime-genai")
        if genai and zoo:
            rel = zoo["decode_tokens_per_s"] / genai["decode_tokens_per_s"]
            out.append(f"{name}: zoo fp32 decode {rel:.2f}x onnxruntime-genai fp32 (target >= 1): {_met(rel >= 1)}")
    return out


def _int4_verdicts(name: str, methods: dict, agree: dict) -> list[str]:
    """Issue 17's int4 targets against onnxruntime-genai's int4 of the same checkpoint."""
    zoo, genai = methods.get("zoo-int4"), methods.get("onnxruntime-genai-int4")
    if not zoo or not genai:
        return []
    speed = zoo["decode_tokens_per_s"] / genai["decode_tokens_per_s"]
    out = [f"{name}: zoo int4 decode {speed:.2f}x onnxruntime-genai int4 (target >= {INT4_SPEED}x): {_met(speed >= INT4_SPEED)}",
           f"{name}: zoo int4 TTFT {zoo['ttft_ms']:.1f} ms vs onnxruntime-genai int4 {genai['ttft_ms']:.1f} ms (target no slower): {_met(zoo['ttft_ms'] <= genai['ttft_ms'])}"]
    if "zoo-int4" in agree and "onnxruntime-genai-int4" in agree:
        a, b = agree["zoo-int4"]["top1"], agree["onnxruntime-genai-int4"]["top1"]
        out.append(f"{name}: teacher-forced top-1 with fp32: zoo int4 {a:.1%}, onnxruntime-genai int4 {b:.1%} (target at least as high): {_met(a >= b)}")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"
