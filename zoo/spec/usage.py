"""How a model is meant to be used: the files an artifact carries beside its graphs
(floor 1, no third-party imports: the build writes them, the runtime reads them).

One entry per kind of file: the role (the manifest's ``usage`` key and the name the
runtime exposes it under), the file name inside the artifact, what it holds, and the
largest size accepted (every one comes from a checkpoint folder: untrusted input).
The tokenizer itself (tokenizer.json) has its own manifest field, as before.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UsageFile:
    role: str
    file: str
    kind: str  # "json" (an object) or "text"
    summary: str
    max_bytes: int


USAGE_FILES: dict[str, UsageFile] = {
    u.role: u
    for u in (
        UsageFile("tokenizer_config", "tokenizer_config.json", "json",
                  "special and added tokens (bos, eos, pad, mask, added_tokens_decoder), as the checkpoint's tokenizer_config.json",
                  64 << 20),
        UsageFile("chat_template", "chat_template.jinja", "text",
                  "the chat template (from chat_template.jinja, or tokenizer_config.json's chat_template)", 1 << 20),
        UsageFile("generation_config", "generation_config.json", "json",
                  "default generation settings and eos ids, as the checkpoint's generation_config.json", 1 << 20),
        UsageFile("pooling", "pooling.json", "json",
                  "sentence-transformers pooling and normalisation (modules.json, 1_Pooling), as the zoo reads them", 1 << 16),
    )
}
