"""Chat templates: a checkpoint's Jinja template renders a conversation into the prompt
text, as transformers' ``apply_chat_template(add_generation_prompt=True)`` does.

A template comes with a checkpoint: untrusted input. It is compiled and rendered in
jinja2's ImmutableSandboxedEnvironment (no attribute starting with an underscore, no
mutation of the values passed in, ranges capped), with only the helpers chat templates
use: ``raise_exception``, ``strftime_now``, a ``tojson`` filter that keeps non-ASCII text,
``namespace`` (refusing underscore names) and ``dict``, the ``loopcontrols`` extension,
and the ``{% generation %}`` block (rendered as its body). What reaches the template
is rebuilt from plain JSON values. A refusal is one line naming the template file and line.

jinja2 is an extra (``pip install 'transformer-zoo[chat]'``); the rest of the runtime
does not need it.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, Optional

from zoo.spec.errors import ArtifactError, InputError

MAX_RENDERED_CHARS = 8 << 20  # a rendered prompt longer than this is a runaway template


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:
        raise InputError("chat templates need jinja2: pip install 'transformer-zoo[chat]'") from None
    return jinja2


def _environment():
    jinja2 = _jinja()

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` marks the assistant's part for training
        masks; for a prompt it is its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):  # noqa: N805 - jinja2's own signature trick (a 'self' key stays usable)
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                _plain_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            _plain_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

    def _plain_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with an underscore ({name!r})")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(str(message))

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj, attribute):
            """An unsafe attribute is refused at once (jinja2 would render it as empty text)."""
            raise jinja2.exceptions.SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is unsafe")

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(
        raise_exception=raise_exception,
        strftime_now=lambda fmt: datetime.now().strftime(str(fmt)),
        namespace=Namespace,
        dict=lambda *a, **k: dict(*a, **k),
    )
    return env


def compile_template(source: str, where: str):
    """The compiled template; ArtifactError ``where:LINE: ...`` when jinja2 cannot parse it."""
    jinja2 = _jinja()
    if not isinstance(source, str):
        raise ArtifactError(f"{where}: a chat template is text, not a {type(source).__name__}")
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ArtifactError(f"{where}:{e.lineno}: not a chat template jinja2 can read: {e.message}") from None


def _template_line(tb) -> Optional[int]:
    """The template line a render error came from (jinja2 maps its frames to '<template>')."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def plain(value: Any, where: str = "messages") -> Any:
    """``value`` rebuilt from JSON types only (str, int, float, bool, None, lists, dicts with
    string keys): what a template may see. Anything else is refused, naming where it is."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise InputError(f"{where}: keys must be strings")
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    for kind in (str, int, float):  # subclasses (enums, numpy scalars) down to the base type
        if isinstance(value, kind):
            return kind(value)
    if hasattr(value, "item") and callable(value.item):
        return plain(value.item(), where)
    raise InputError(f"{where}: a {type(value).__name__}; chat messages hold text, numbers, lists and objects")


def check_messages(messages) -> list[dict]:
    """A conversation: a non-empty list of {"role": str, "content": ...} objects (keys whose
    value is None dropped, as transformers does)."""
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, (list, tuple)):
        raise InputError('messages must be a list of {"role": ..., "content": ...} objects')
    if not messages:
        raise InputError("no messages: a chat needs at least one")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InputError(f"message {i} is a {type(m).__name__}, not an object with 'role' and 'content'")
        if not isinstance(m.get("role"), str) or not m["role"]:
            raise InputError(f"message {i} has no 'role' string (system, user, assistant, ...)")
        out.append(plain({k: v for k, v in m.items() if v is not None}, f"message {i}"))
    return out


def render(template, messages: list[dict], where: str, *, add_generation_prompt: bool = True, **variables) -> str:
    """The prompt text of ``messages`` (checked with check_messages) through a compiled
    template; ``variables``: the special tokens (bos_token, eos_token, ...) and any extra
    template variable. InputError naming ``where`` and the template line when the template
    refuses the conversation or reaches outside the sandbox."""
    jinja2 = _jinja()
    context = {"tools": None, "documents": None, **plain(variables, "template variables")}
    pieces, size = [], 0
    try:
        for piece in template.generate(messages=messages, add_generation_prompt=add_generation_prompt, **context):
            size += len(piece)
            if size > MAX_RENDERED_CHARS:
                raise InputError(f"{where}: the chat template rendered more than {MAX_RENDERED_CHARS:,} characters; refusing a runaway template")
            pieces.append(piece)
    except jinja2.exceptions.SecurityError as e:
        line = _template_line(sys.exc_info()[2])
        raise InputError(f"{where}:{line or '?'}: refused: the chat template reaches outside its sandbox ({e})") from None
    except jinja2.exceptions.TemplateError as e:
        line = _template_line(sys.exc_info()[2])
        raise InputError(f"{where}:{line or '?'}: the chat template refused this conversation: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as e:
        line = _template_line(sys.exc_info()[2])
        raise InputError(f"{where}:{line or '?'}: the chat template failed on this conversation: {type(e).__name__}: {e}") from None
    return "".join(pieces)
