"""Chat templates: a conversation -> the model's prompt text, rendered with jinja2 as transformers does.

A chat template is a jinja2 program shipped with a model (tokenizer_config.json's `chat_template`,
a `chat_template.jinja` file, or a GGUF's `tokenizer.chat_template`). transformers renders it in an
immutable sandbox with `trim_blocks` and `lstrip_blocks` on, the `loopcontrols` extension, a
`tojson` filter that keeps non-ASCII text, and two globals: `raise_exception(msg)` and
`strftime_now(fmt)`. The variables are `messages`, `add_generation_prompt`, `tools` and
`documents` (None: transformers passes them so), and the special tokens as text (`bos_token`,
`eos_token`, ...). The rendered text is then tokenized WITHOUT adding special tokens: the
template writes them itself. Doing the same here makes our prompt ids equal to
transformers' `apply_chat_template` (tests/test_hf_tokenizer.py checks this against its output).

Reference: transformers `utils/chat_template_utils.py` (`_compile_jinja_template`).
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from minilora.errors import MiniLoraError


class _TemplateRaised(Exception):
    """Raised by a template's own raise_exception(...) call."""


def _raise_exception(message):
    raise _TemplateRaised(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str):
    """template text -> compiled jinja2 template (cached: a model renders the same one many times)."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise MiniLoraError("chat templates need the 'jinja2' package (pip install jinja2)") from None
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise MiniLoraError(f"the chat template does not parse: {e}") from None


def check_messages(messages) -> list[dict]:
    """messages: a list of {"role": str, "content": str, ...} dicts -> the same list, or MiniLoraError."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise MiniLoraError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise MiniLoraError(f"message {i} must be a dict with a str 'role' and a 'content', got {m!r:.80}")
    return list(messages)


def render_chat_template(template: str, messages, add_generation_prompt: bool = True, **special_tokens) -> str:
    """Render a conversation with a model's chat template.

    template: the jinja2 source. messages: list of {"role", "content"} dicts (checked).
    add_generation_prompt: end with the header of an assistant turn, so the model answers next.
    special_tokens: the tokens as text, e.g. bos_token="<s>", eos_token="</s>" (None ones are omitted).
    Returns the prompt text. A template that fails (or calls raise_exception) is a MiniLoraError.
    """
    import jinja2

    compiled = _compile(template)
    variables = {k: v for k, v in special_tokens.items() if v is not None}
    try:
        return compiled.render(messages=check_messages(messages), tools=None, documents=None,
                               add_generation_prompt=bool(add_generation_prompt), **variables)
    except _TemplateRaised as e:
        raise MiniLoraError(f"the chat template refused these messages: {e}") from None
    except (jinja2.TemplateError, TypeError, KeyError, AttributeError) as e:
        raise MiniLoraError(f"the chat template failed on these messages ({type(e).__name__}: {e})") from None
