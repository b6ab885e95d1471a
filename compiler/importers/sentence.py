"""A sentence-transformers checkpoint folder's pooling: modules.json (Transformer,
Pooling, optionally Normalize), the Pooling module's config.json, sentence_bert_config.json
and config_sentence_transformers.json, read into one plain dict the artifact carries
(the runtime's runtime.embed.Pooling reads it back):

    {"mode": "mean" | [modes...], "normalize": bool, "dimension": int,
     "max_seq_length": int | None, "lowercase": bool}

Several modes are concatenated in their order, as sentence-transformers does. What the
zoo cannot reproduce (a Dense, LayerNorm or second Transformer module, a Transformer
outside the folder's root, a default prompt) is refused in one line naming the file,
the module and the field, before any weight is read (CheckpointError, exit code 2).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Optional

from compiler.importers.common import CheckpointError, read_json
from zoo.spec.pooling import LEGACY_KEYS, MAX_DIMENSION, MAX_SEQ_LENGTH, POOLING_MODES

MODULES = "modules.json"
KINDS = ("Transformer", "Pooling", "Normalize")  # the module classes the zoo reproduces, in this order
MAX_MODULES = 64


def read_pooling(folder: Path, *, d_model: Optional[int] = None) -> Optional[dict]:
    """The pooling of the sentence-transformers checkpoint in ``folder``, or None when
    it has no modules.json (a plain Hugging Face folder). ``d_model``: the model's width,
    which the Pooling module's dimension must equal."""
    folder = Path(folder)
    path = folder / MODULES
    if not path.exists():
        return None
    modules = _modules(path)
    kinds = [kind for kind, _ in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise CheckpointError(
            f"{path}: modules {' -> '.join(kinds)}: the zoo reproduces Transformer -> Pooling [-> Normalize] only"
        )
    if modules[0][1] != "":
        raise CheckpointError(f"{path}: module 0 (Transformer): 'path' is {modules[0][1]!r}; the zoo imports the model at the folder's root ('')")
    transformer = _transformer(folder)
    pooling = _pooling(folder, path, modules[1][1])
    if d_model is not None and pooling["dimension"] != d_model:
        where = folder / modules[1][1] / "config.json"
        raise CheckpointError(f"{where}: Pooling module: 'embedding_dimension' {pooling['dimension']} differs from the model's hidden size {d_model}")
    if len(modules) == 3:
        _normalize(folder, modules[2][1])
    _no_default_prompt(folder)
    return {**pooling, "normalize": len(modules) == 3, **transformer}


def _modules(path: Path) -> list[tuple[str, str]]:
    """(class name, folder) of each module of modules.json, in idx order."""
    raw = read_json(path, list, "a list of modules")
    if not 1 <= len(raw) <= MAX_MODULES:
        raise CheckpointError(f"{path}: {len(raw)} modules (a sentence-transformers model has 1 to {MAX_MODULES})")
    out = []
    for i, entry in enumerate(raw):
        where = f"{path}: module {i}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} is a {type(entry).__name__}, not an object with idx, name, path, type")
        idx, sub, kind = entry.get("idx", i), entry.get("path"), entry.get("type")
        if not _is_int(idx) or idx != i:
            raise CheckpointError(f"{where}: 'idx' is {idx!r}, not {i} (modules are listed in order)")
        if not isinstance(kind, str) or not kind:
            raise CheckpointError(f"{where}: 'type' is {kind!r}, not a class name")
        if not isinstance(sub, str):
            raise CheckpointError(f"{where} ({kind}): 'path' is {sub!r}, not a folder name")
        name = kind.rsplit(".", 1)[-1]
        if not kind.startswith("sentence_transformers.") or name not in KINDS:
            raise CheckpointError(
                f"{where}: 'type' {kind!r} is a module the zoo does not reproduce (it reproduces {', '.join(KINDS)})"
            )
        out.append((name, _subfolder(where, name, sub)))
    return out


def _subfolder(where: str, name: str, sub: str) -> str:
    """A module's folder: "" (the root) or a plain relative name (no '..', not absolute)."""
    p = PurePosixPath(sub)
    if sub and (p.is_absolute() or ".." in p.parts or "\\" in sub or "\0" in sub):
        raise CheckpointError(f"{where} ({name}): 'path' {sub!r} is not a folder inside the checkpoint")
    return sub


def _transformer(folder: Path) -> dict:
    """max_seq_length and do_lower_case of the Transformer module (its config lies at
    the root: sentence_bert_config.json), else the tokenizer's model_max_length."""
    path = folder / "sentence_bert_config.json"
    config = read_json(path) if path.exists() else {}
    length = config.get("max_seq_length")
    lower = config.get("do_lower_case", False)
    if length is not None and not (_is_int(length) and 1 <= length <= MAX_SEQ_LENGTH):
        raise CheckpointError(f"{path}: Transformer module: 'max_seq_length' is {length!r}, not a length in [1, {MAX_SEQ_LENGTH:,}]")
    if not isinstance(lower, bool):
        raise CheckpointError(f"{path}: Transformer module: 'do_lower_case' is {lower!r}, not true or false")
    method = config.get("modality_config", {}).get("text", {}) if isinstance(config.get("modality_config"), dict) else {}
    out_name = method.get("method_output_name", "last_hidden_state") if isinstance(method, dict) else None
    if out_name != "last_hidden_state":
        raise CheckpointError(f"{path}: Transformer module: modality_config.text.method_output_name {out_name!r}; the zoo pools last_hidden_state")
    if length is None:  # sentence-transformers then truncates at the tokenizer's model_max_length
        tok = folder / "tokenizer_config.json"
        given = read_json(tok).get("model_max_length") if tok.exists() else None
        length = given if _is_int(given) and 1 <= given <= MAX_SEQ_LENGTH else None  # unset: transformers writes 1e30
    return {"max_seq_length": length, "lowercase": lower}


def _pooling(folder: Path, modules_path: Path, sub: str) -> dict:
    path = folder / sub / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{modules_path}: module 1 (Pooling): {path} is missing")
    config = read_json(path)
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if not (_is_int(dim) and 1 <= dim <= MAX_DIMENSION):
        raise CheckpointError(f"{path}: Pooling module: 'embedding_dimension' is {dim!r}, not a width in [1, {MAX_DIMENSION:,}]")
    for key in LEGACY_KEYS:
        if key in config and not isinstance(config[key], bool):
            raise CheckpointError(f"{path}: Pooling module: {key!r} is {config[key]!r}, not true or false")
    prompt = config.get("include_prompt", True)
    if not isinstance(prompt, bool):
        raise CheckpointError(f"{path}: Pooling module: 'include_prompt' is {prompt!r}, not true or false")
    modes = _modes(path, config)
    return {"mode": modes[0] if len(modes) == 1 else list(modes), "dimension": dim}


def _modes(path: Path, config: dict) -> tuple[str, ...]:
    mode = config.get("pooling_mode")
    if mode is None:  # the legacy booleans (mean when none is set, as sentence-transformers reads them)
        return tuple(m for key, m in LEGACY_KEYS.items() if config.get(key)) or ("mean",)
    modes = [mode] if isinstance(mode, str) else mode
    if not isinstance(modes, list) or not modes or len(modes) > len(POOLING_MODES):
        raise CheckpointError(f"{path}: Pooling module: 'pooling_mode' is {mode!r}, not a mode or a list of modes")
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad:
        raise CheckpointError(f"{path}: Pooling module: 'pooling_mode' {bad[0]!r} is not one of {', '.join(POOLING_MODES)}")
    return tuple(modes)


def _normalize(folder: Path, sub: str) -> None:
    path = folder / sub / "config.json"
    config = read_json(path) if sub and path.is_file() else {}
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise CheckpointError(f"{path}: Normalize module: {key!r} is {config[key]!r}; the zoo normalises the sentence_embedding only")


def _no_default_prompt(folder: Path) -> None:
    """A default prompt (prepended to every text by encode) is not reproduced: refused."""
    path = folder / "config_sentence_transformers.json"
    if not path.exists():
        return
    config = read_json(path)
    name, prompts = config.get("default_prompt_name"), config.get("prompts") or {}
    if name is not None and (not isinstance(prompts, dict) or prompts.get(name, "") != ""):
        raise CheckpointError(f"{path}: 'default_prompt_name' is {name!r}: a default prompt is not reproduced by the zoo")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
