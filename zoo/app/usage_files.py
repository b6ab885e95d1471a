"""The usage files of a model folder (zoo.spec.usage): what `zoo import` copies beside
spec.yaml and what `zoo build` carries into the artifact.

A Hugging Face folder has them under their own names (tokenizer_config.json,
chat_template.jinja, generation_config.json, a sentence-transformers modules.json with
1_Pooling/config.json); a `zoo import` output has them under the artifact's names. The
chat template is chat_template.jinja when there is one, else tokenizer_config.json's
``chat_template`` (a string, or a list of named templates: the one named "default"),
else chat_template.json's, as transformers loads it. Every file is untrusted: each is
size-checked, JSON files must be objects, text must be UTF-8, and a template must
compile (checked here, at import and build, rather than at the first chat).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from runtime.usage import json_object
from zoo.spec.errors import ArtifactError
from zoo.spec.usage import USAGE_FILES


def _read(path: Path, role: str) -> bytes:
    limit = USAGE_FILES[role].max_bytes
    size = path.stat().st_size
    if size > limit:
        raise ArtifactError(f"{path}: {size:,} bytes, more than a {USAGE_FILES[role].file} may have ({limit:,}); refusing it")
    return path.read_bytes()


def _json_object(path: Path, role: str) -> dict:
    return json_object(_read(path, role), path)


def _text(path: Path, role: str) -> str:
    try:
        return _read(path, role).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not UTF-8 text (byte {e.start}); refusing to carry it") from None


def _template_in_config(config: dict, path: Path) -> Optional[str]:
    """tokenizer_config.json's chat_template: a string, or [{name, template}, ...] (the "default" one)."""
    value = config.get("chat_template")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default")
        if isinstance(chosen, str):
            return chosen
        raise ArtifactError(f"{path}: chat_template: {len(named)} named templates and none is a string named 'default'; "
                            "pass the one to use with --template FILE")
    raise ArtifactError(f"{path}: chat_template is a {type(value).__name__}, not a string or a list of named templates")


def chat_template(folder: Path, config: Optional[dict]) -> Optional[str]:
    """The folder's chat template, in transformers' order of precedence (None: none)."""
    if (folder / "chat_template.jinja").is_file():
        return _text(folder / "chat_template.jinja", "chat_template")
    if config is not None and (found := _template_in_config(config, folder / "tokenizer_config.json")) is not None:
        return found
    if (folder / "chat_template.json").is_file():
        value = _json_object(folder / "chat_template.json", "chat_template").get("chat_template")
        if not isinstance(value, str):
            raise ArtifactError(f"{folder / 'chat_template.json'}: chat_template is not a string")
        return value
    return None


def read_template(path: Path) -> str:
    """A chat template file given by hand (--template FILE): size-checked UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such chat template file")
    return _text(path, "chat_template")


def check_template(source: str, where: str) -> None:
    """Refuse a template jinja2 cannot compile (file:line and jinja2's message); skipped
    when jinja2 is not installed (the runtime refuses it at the first chat then)."""
    try:
        from runtime.chat import compile_template
    except ImportError:  # pragma: no cover - jinja2 is an extra
        return
    compile_template(source, where)


def collect(folder: Path) -> dict[str, bytes]:
    """role -> the bytes to write under USAGE_FILES[role].file, for the usage files
    ``folder`` has (a Hugging Face folder or a `zoo import` output)."""
    folder = Path(folder)
    out: dict[str, bytes] = {}
    config = None
    for role in ("tokenizer_config", "generation_config"):  # each file read once, checked, kept verbatim
        path = folder / USAGE_FILES[role].file
        if path.is_file():
            out[role] = _read(path, role)
            parsed = json_object(out[role], path)
            config = parsed if role == "tokenizer_config" else config
    template = chat_template(folder, config)
    if template is not None:
        check_template(template, str(folder / "chat_template.jinja"))
        out["chat_template"] = template.encode("utf-8")
    pooling = _pooling(folder)
    if pooling is not None:
        out["pooling"] = json.dumps(pooling, indent=2).encode("utf-8")
    return out


def _pooling(folder: Path) -> Optional[dict]:
    """The sentence-transformers pooling: pooling.json in a `zoo import` output, else read
    from modules.json and the Pooling module's folder (compiler.importers.sentence)."""
    if (folder / USAGE_FILES["pooling"].file).is_file():
        return _json_object(folder / USAGE_FILES["pooling"].file, "pooling")
    if not (folder / "modules.json").is_file():
        return None
    from compiler.importers.sentence import read_pooling

    return read_pooling(folder)


def write(usage: dict[str, bytes], folder: Path) -> list[Path]:
    """Write each usage file into ``folder`` under its artifact name; the paths written."""
    written = []
    for role, data in usage.items():
        path = Path(folder) / USAGE_FILES[role].file
        path.write_bytes(data)
        written.append(path)
    return written
