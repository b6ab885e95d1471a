"""Build an artifact folder: export, parity, spec.yaml, manifest.json; atomically.

Everything is written into a hidden sibling folder ``.NAME.partial-PID-TAG``;
manifest.json is written last (as manifest.json.tmp, renamed), then the folder is
swapped into place: an existing artifact is renamed to ``.NAME.old-PID-TAG``, the
partial folder to NAME, the old one deleted. A build that fails or is interrupted
at any point leaves at NAME either nothing, or the previous artifact, or the new
complete one; never a half-written folder that loads. A failed build removes its
partial folder itself; after a killed one the next build of NAME sweeps it, and
puts back a previous artifact left in ``.old`` (killed between the two renames).
Only folders of exactly that naming whose process is gone are ever touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

import yaml

from compiler.builder import build
from zoo.app.build_options import BuildOptions  # noqa: F401  (re-exported: callers build with it)
from zoo.app.export import export_all
from zoo.app.manifest import ArtifactManifest
from compiler.weights import check_finite, load_weights, weights_digest
from runtime.artifact import (
    MANIFEST,
    changed_at,
    load_artifact,
    pid_alive,
    sha256_file,
    staged,
    staging_folders,
)
from zoo.app import usage_files
from zoo.app.parity import parity
from runtime.tokenizer import check_tokenizer
from zoo.spec.contract import FORMAT_VERSION, OPSET
from zoo.spec.families import cache_layout, graphs_for
from zoo.spec.errors import ArtifactError, ParityError, SpecError
from zoo.spec.params import count_parameters
from zoo.spec.model import ModelSpec
from zoo.spec.usage import USAGE_FILES

TOKENIZER = "tokenizer.json"
PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "numpy", "pydantic", "transformer-zoo")


def spec_hash(spec: ModelSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def spec_yaml(spec: ModelSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def default_folder(spec: ModelSpec, artifact_id: str, root: Path = Path("artifacts")) -> Path:
    return root / f"{spec.name}-{artifact_id[:12]}"


def sweep(target: Path) -> None:
    """Clean up after earlier builds of ``target`` whose process is gone (killed).

    Only folders named exactly ``.NAME.partial-PID-TAG`` / ``.NAME.old-PID-TAG`` with a
    dead PID are touched (this process has no build of ``target`` in flight). A partial
    folder is removed. An ``.old`` folder is the previous artifact, moved away by a
    build killed between the two renames of the swap: put back when the target is
    missing, removed when a target is there (the swap finished)."""
    stale = [(p, kind) for p, kind, pid in staging_folders(target) if pid == os.getpid() or not pid_alive(pid)]
    olds = sorted((p for p, kind in stale if kind == "old"), key=changed_at, reverse=True)
    if olds and not target.exists() and not target.is_symlink():
        try:
            os.replace(olds[0], target)  # the newest one: the artifact the user last had
            olds = olds[1:]
        except OSError:
            olds = []  # keep them all: the previous artifact is only there
    for p in [p for p, kind in stale if kind == "partial"] + olds:
        shutil.rmtree(p, ignore_errors=True)


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a folder; refusing to replace it")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise ArtifactError(f"{target}: folder is not empty and holds no zoo artifact; refusing to overwrite it")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(spec: ModelSpec, available: int | None = None) -> None:
    """Refuse, before allocating anything, a spec whose weights alone exceed the
    memory available, naming the field that makes it large (SpecError, exit 2)."""
    count = count_parameters(spec)
    need = count.total * {"float32": 4, "float16": 2, "bfloat16": 2}[spec.dtype]
    available = available if available is not None else available_memory()
    if available is None or need <= available:
        return
    parts = {"vocab_size": spec.vocab_size * spec.d_model * (1 if spec.embedding.tie_output else 2)}
    for stack in count.per_layer:
        parts[f"{stack}.layers"] = count.per_layer[stack] * count.layers[stack]
    field = max(parts, key=parts.get) if max(parts.values()) * 2 >= count.total else "d_model"
    raise SpecError(
        f"{spec.name} has {count.total:,} parameters: {need / 2**30:,.1f} GiB in {spec.dtype} for the weights alone, "
        f"more than the {available / 2**30:,.1f} GiB of memory available here",
        field=field,
    )


def build_artifact(
    spec: ModelSpec,
    out: Optional[Path] = None,
    *,
    seed: int = 0,
    weights: Optional[Path | dict] = None,
    force: bool = False,
    check_parity: bool = True,
    tokenizer: Optional[Path] = None,
    step: Optional[Callable] = None,
    options: Optional[BuildOptions] = None,
    usage: Optional[dict[str, bytes]] = None,
) -> tuple[Path, dict, bool]:
    """Build ``spec`` into ``out`` (default ``artifacts/NAME-ID``). Returns
    (folder, manifest, built); ``built`` is False when an identical artifact was there.
    ``weights``: a safetensors file or a state dict in zoo names; default: seeded init.
    ``tokenizer``: a tokenizer.json (Hugging Face tokenizers format) the artifact carries.
    ``usage``: role -> bytes of the usage files it carries (zoo.app.usage_files.collect).
    ``step(label)`` is a context manager factory for progress (zoo.app.progress.step).
    ``options``: target provider, graph optimization and precision (BuildOptions)."""
    options = options or BuildOptions()
    options.check(spec)
    step = step or (lambda label: nullcontext())
    times: dict[str, float] = {}
    model = _model(spec, seed, weights, step, times)
    s_hash, w_hash = spec_hash(spec), weights_digest(model)
    tokenizer = _checked_tokenizer(tokenizer)
    usage = dict(usage or {})
    artifact_id = _artifact_id(s_hash, w_hash, options, tokenizer, usage)
    target = Path(out) if out is not None else default_folder(spec, artifact_id)
    sweep(target)  # first: it may put back the artifact an interrupted build moved away
    _check_target(target)
    existing = None if force else _up_to_date(target, artifact_id)
    if existing is not None:
        return target, existing, False
    with staged(target) as partial:
        graphs, report, build_info = _graphs(spec, model, partial, options, check_parity, step, times)
        (partial / "spec.yaml").write_text(spec_yaml(spec), encoding="utf-8")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, partial / TOKENIZER)
        usage_files.write(usage, partial)
        manifest = _manifest(spec, partial, graphs, report, (s_hash, w_hash, artifact_id), seed, times, build_info)
        tmp = partial / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, partial / MANIFEST)
    return target, manifest, True


@contextmanager
def _timed(times: dict, key: str, step: Callable, label: str):
    """``step(label)`` around the block; its seconds in ``times[key]`` when it succeeds."""
    t0 = time.perf_counter()
    with step(label):
        yield
    times[key] = time.perf_counter() - t0


def _model(spec: ModelSpec, seed: int, weights, step: Callable, times: dict):
    """The torch module: seeded init, then ``weights`` (a safetensors file or a state
    dict in zoo names) when given."""
    check_memory(spec)
    with _timed(times, "build", step, f"building {spec.name} ({count_parameters(spec).total:,} parameters, seed {seed})"):
        model = build(spec, seed=seed)
        if isinstance(weights, dict):  # a state dict in zoo names (an imported checkpoint)
            check_finite(weights, "weights (a state dict)")
            model.load_state_dict(weights, strict=True)
        elif weights is not None:
            load_weights(model, weights)
    return model


def _checked_tokenizer(tokenizer: Optional[Path]) -> Optional[Path]:
    if tokenizer is None:
        return None
    tokenizer = Path(tokenizer)
    if not tokenizer.is_file():
        raise ArtifactError(f"{tokenizer}: no such tokenizer file")
    check_tokenizer(tokenizer)  # one the runtime cannot load is refused, not carried
    return tokenizer


def _artifact_id(s_hash: str, w_hash: str, options: BuildOptions, tokenizer: Optional[Path], usage: dict[str, bytes]) -> str:
    """What makes two builds the same artifact: spec, weights, format, opset, options, tokenizer, usage files."""
    identity = f"{s_hash}:{w_hash}:{FORMAT_VERSION}:{OPSET}"
    if not options.is_default:
        identity += ":" + options.key
    if tokenizer is not None:
        identity += ":" + sha256_file(tokenizer)
    for role in sorted(usage):
        identity += f":{role}=" + hashlib.sha256(usage[role]).hexdigest()
    return hashlib.sha256(identity.encode()).hexdigest()


def _up_to_date(target: Path, artifact_id: str) -> Optional[dict]:
    """The manifest of an intact artifact with this id already at ``target``, or None."""
    if not (target / MANIFEST).is_file():
        return None
    try:
        existing = load_artifact(target, verify=True)
    except ArtifactError:
        return None  # damaged or older: rebuild it
    return existing.manifest if existing.info.artifact_id == artifact_id else None  # the JSON, as build_artifact returns it


def _graphs(spec: ModelSpec, model, partial: Path, options: BuildOptions, check_parity: bool, step: Callable, times: dict):
    """Export into ``partial``, check parity, then optimize and convert as ``options``
    ask and check the changed graphs again. Returns (graphs, parity report, build info)."""
    with _timed(times, "export", step, "exporting to ONNX (opset %d)" % OPSET):
        graphs = export_all(model, spec, partial)
    report = None
    if check_parity:
        with _timed(times, "parity", step, "checking parity: ONNX Runtime against torch"):
            report = parity(model, spec, {g.name: partial / g.file for g in graphs_for(spec)})
        if not report["passed"]:
            raise parity_failure(spec, report, "the exported graphs")
    build_info = options.to_json()
    if options.optimize:
        from passes.optimize import optimize_graphs

        with _timed(times, "optimize", step, f"optimizing the graphs for {options.target}"):
            build_info["lowering"] = optimize_graphs(spec, partial, graphs, target=options.target)
    if options.kv_cache == "shared":
        from passes.optimize.kv_share import share_graphs
        with _timed(times, "kv_cache", step, "sharing the KV cache buffer (GroupQueryAttention in place)"):
            build_info["kv_cache"].update(share_graphs(spec, partial, graphs, build_info.get("lowering")))
    if options.precision != "fp32":
        from zoo.app.convert import convert_graphs

        with _timed(times, "precision", step, f"converting to {options.precision}"):
            build_info["precision"] = convert_graphs(spec, model, partial, graphs, options)
    if options.optimize:
        from passes.optimize.packing import pack_graphs
        with _timed(times, "packing", step, "packing sibling projections (q/k/v, gate/up) into one matmul"):
            pack_graphs(spec, partial, graphs, build_info.get("lowering"))
    if check_parity and not options.is_default:  # the graphs changed: check them again
        with _timed(times, "parity_variant", step, f"checking parity of the {options.label} graphs"):
            report = parity(model, spec, {g.name: partial / g.file for g in graphs_for(spec)}, **options.parity_args())
        if not report["passed"]:
            raise parity_failure(spec, report, f"the {options.label} graphs")
    return graphs, report, build_info


def parity_failure(spec: ModelSpec, report: dict, what: str) -> ParityError:
    """The error of a failed parity check: a headline naming the rule, then every
    failing check on its own line (``others``: the CLI prints one line each)."""
    err = ParityError(
        f"{spec.name}: {what} fail parity against torch ({spec.dtype}, {report['precision']}; "
        f"rule {report['tolerance']['rule']}); {len(report['failures'])} failing check(s) below; no artifact written"
    )
    err.others = [ParityError(f"{spec.name}: {line}") for line in report["failures"]]
    return err


def _manifest(spec, folder: Path, graphs: dict, report, ids: tuple[str, str, str], seed, times, build_info: dict) -> dict:
    """manifest.json's object, checked field by field by zoo.app.manifest.ArtifactManifest
    (a misspelt or mistyped field is a pydantic ValidationError here, not a bad artifact).
    ``ids``: the spec's sha256, the weights' sha256, the artifact id."""
    params = count_parameters(spec)
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(folder.iterdir()) if p.is_file()}
    s_hash, w_hash, artifact_id = ids
    return ArtifactManifest.model_validate({
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "family": spec.family,
        "description": spec.description,
        "dtype": spec.dtype,
        "artifact_id": artifact_id,
        "spec_sha256": s_hash,
        "weights_sha256": w_hash,
        "seed": seed,
        "parameters": {"total": params.total, "embeddings": params.embeddings, "per_layer": params.per_layer},
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=True)",
        "packages": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "graphs": graphs,
        "model": {
            "vocab_size": spec.vocab_size,
            "max_seq_len": spec.max_seq_len,
            "d_model": spec.d_model,
            "tokens": spec.tokens.model_dump(),
        },
        "kv_cache": cache.to_json() if (cache := cache_layout(spec, shared="kv_cache" in build_info)) is not None else None,
        "tokenizer": TOKENIZER if (folder / TOKENIZER).is_file() else None,
        **({"usage": carried} if (carried := {r: u.file for r, u in USAGE_FILES.items() if (folder / u.file).is_file()}) else {}),
        "parity": report,
        "build_seconds": {k: round(v, 3) for k, v in times.items()},
        "files": files,
        "build": build_info,
    }).to_json()
