"""A chat checkpoint built locally (hubs are unreachable): a byte-level BPE tokenizer
trained on a few sentences in several scripts, with the control tokens of four chat
template styles, wrapped in transformers' PreTrainedTokenizerFast and saved with
save_pretrained (tokenizer.json, tokenizer_config.json, chat_template.jinja) beside a
tiny trained-like Llama and its generation_config.json. The templates are written in the
style of the real ones (ChatML, Llama 3, Gemma, Llama 2 with a system block)."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = """{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
SYSTEM = """{%- set ns = namespace(system='') %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.system = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and ns.system %}
            {{- '[INST] <<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- else %}
        {{- ' ' + message['content'] + eos_token }}
    {%- endif %}
{%- endfor %}
"""
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "gemma": GEMMA, "system": SYSTEM}

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<start_of_turn>", "<end_of_turn>"]
CORPUS = [
    "The capital of France is Paris. What is the capital of Italy? Rome.",
    "user assistant system model: hello, how are you today? I am fine, thank you.",
    "Café crème, naïve façade, élève — déjà vu. Ünïcödé ßtraße.",
    "日本語のテキスト、中文文本。한국어 텍스트. Ελληνικά. Русский текст.",
    "Emoji: 😀 🎉 🚀 ❤️ 👍🏽 and more text to learn merges from, over and over.",
]
MESSAGES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how can I help?"},
     {"role": "user", "content": "Café? 日本 😀"}],
]
SYSTEM_MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a city."}]


def byte_level_tokenizer(vocab_size: int = 400):
    """A byte-level BPE (GPT-2 / Llama 3 / Qwen style) trained on CORPUS, with SPECIALS."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok


def hf_tokenizer(template: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=byte_level_tokenizer(), bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>", pad_token="</s>",
        chat_template=template,
    )


def chat_checkpoint(folder: Path, template: str = CHATML, *, max_positions: int = 64):
    """A tiny trained-like Llama with the tokenizer and ``template``, saved into ``folder``;
    returns (model, tokenizer)."""
    import torch
    import transformers

    from tests.hf_trained_like import prepare

    tokenizer = hf_tokenizer(template)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    prepare(model, "trained")
    model.generation_config.eos_token_id = [2, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer
