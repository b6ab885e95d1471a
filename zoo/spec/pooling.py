"""Sentence-embedding pooling as sentence-transformers defines it: the mode names both
the importer (compiler.importers.sentence, reading a checkpoint's Pooling module) and
the runtime (runtime.embed, pooling a graph's last_hidden_state) accept. No pydantic:
the runtime imports this module."""

from __future__ import annotations

# sentence-transformers' pooling_mode names, in the order its legacy boolean keys
# concatenate several modes (cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken)
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
MAX_DIMENSION = 262_144  # the largest d_model a spec may have (zoo.spec.fields.MAX_SIZE)
MAX_SEQ_LENGTH = 4_194_304  # the largest max_seq_len (zoo.spec.fields.MAX_SIZE)
