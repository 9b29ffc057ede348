"""Training rows in the jsonl formats people bring, turned into (input_ids, labels) with the model's tokenizer.

Four row formats; a file holds one of them (the first row decides, every row is checked):

    "context"   FinLoRA's {"context": str, "target": str}
    "prompt"    {"prompt": str, "completion": str}
    "messages"  {"messages": [{"role": str, "content": str}, ...]}   the assistant turns are the answers
    "text"      {"text": str}                                          plain language modelling

Prompt format. With a chat template (an instruct model's tokenizer), a prompt is the user turn
rendered with add_generation_prompt=True, and its answer is the assistant turn that follows, up to
and including the template's end-of-turn token (the tokenizer's eos text, SmolLM2's <|im_end|>);
what the template writes after that token (a newline) belongs to no answer. Without one (the byte
tokenizer, base models), context/target rows keep minilora's sentiment format, exactly
batching.encode_example (bos + context + "\\nAnswer:", then " " + target + eos), and
prompt/completion rows are bos + prompt, then completion + eos, as written. A messages row needs a
chat template. A text row is bos + text + eos, every token a target.

Prompt and answer are tokenized separately and concatenated: the same ids a label-choice
evaluation scores and a generation continues from (minilora.inference).

Labels: -100 on the prompt, so the loss covers the answer tokens only; train_on_inputs=True makes
every token after the first a target (labels[0] is never scored: the model shifts inside).
"""
from __future__ import annotations

import os

from minilora.data.batching import IGNORE_INDEX, encode_example
from minilora.data.jsonl import read_json_lines
from minilora.data.sentiment import LABELS, format_prompt
from minilora.errors import MiniLoraError

FORMATS = {"context": ("context", "target"), "prompt": ("prompt", "completion"), "messages": ("messages",),
           "text": ("text",)}
CHOICE_FORMATS = ("context", "prompt")          # rows with one prompt and one answer: label choice works


def row_format(row, where: str = "row") -> str:
    """The format name of one row (see FORMATS); MiniLoraError if it is none of them."""
    if not isinstance(row, dict):
        raise MiniLoraError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name, keys in FORMATS.items():
        if keys[0] in row:
            for k in keys:
                if k not in row:
                    raise MiniLoraError(f"{where}: has {keys[0]!r} but no {k!r}")
            if name == "messages":
                _check_messages(row["messages"], where)
            else:
                for k in keys:
                    if not isinstance(row[k], str):
                        raise MiniLoraError(f"{where}: {k!r} must be a string, got {type(row[k]).__name__}")
            return name
    raise MiniLoraError(f"{where}: not a known row format; expected one of {{context, target}}, "
                        f"{{prompt, completion}}, {{messages}} or {{text}}, got keys {sorted(row)[:6]}")


def _check_messages(messages, where):
    if not isinstance(messages, list) or not messages:
        raise MiniLoraError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise MiniLoraError(f"{where}: message {i} must have a str 'role' and a str 'content'")
    if not any(m["role"] == "assistant" for m in messages):
        raise MiniLoraError(f"{where}: no assistant message to learn")


def load_records(path, formats=None) -> tuple[list[dict], str]:
    """(rows, format name) of a jsonl file in one of FORMATS; every row is checked before returning.

    formats: the format names accepted (default all); another one is a MiniLoraError.
    """
    rows, fmt = [], None
    for lineno, row in read_json_lines(path):
        where = f"{os.fspath(path)}: line {lineno}"
        f = row_format(row, where)
        if fmt is None:
            fmt = f
            if formats is not None and fmt not in formats:
                raise MiniLoraError(f"{os.fspath(path)}: {fmt!r} rows cannot be used here; expected "
                                    f"{' or '.join(repr(x) for x in formats)} rows")
        elif f != fmt:
            raise MiniLoraError(f"{where}: a {f!r} row in a file of {fmt!r} rows")
        rows.append(row)
    return rows, fmt


def prompt_and_answer(row) -> tuple[str, str]:
    """The prompt and answer texts of a context/target or prompt/completion row."""
    if "context" in row:
        return row["context"], row["target"]
    if "prompt" in row:
        return row["prompt"], row["completion"]
    raise MiniLoraError("expected a {context, target} or {prompt, completion} row")


def candidate_labels(rows) -> tuple:
    """The answers a label-choice evaluation chooses among: the sentiment LABELS when every row's
    answer is one of them, else the distinct answers in order of first appearance."""
    answers = [prompt_and_answer(r)[1] for r in rows]
    if all(a in LABELS for a in answers):
        return LABELS
    return tuple(dict.fromkeys(answers))


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def pair_ids(prompt: str, answer: str, tokenizer, style: str = "context") -> tuple[list, list]:
    """(prompt ids, answer ids) of one single-turn example; see the module docstring for the format.

    style: "context" (FinLoRA rows: minilora's sentiment format without a chat template) or
    "prompt" (prompt/completion rows: the texts as written).
    """
    if uses_chat_template(tokenizer):
        user = [{"role": "user", "content": prompt}]
        return _chat_ids(tokenizer, user, [*user, {"role": "assistant", "content": answer}])
    if style == "context":
        ids, labels = encode_example(prompt, answer, tokenizer, max_len=1 << 30)
        n = sum(1 for t in labels if t == IGNORE_INDEX)
        return ids[:n], ids[n:]
    return (tokenizer.encode(prompt, add_bos=True, add_eos=False),
            tokenizer.encode(answer, add_bos=False, add_eos=True))


def prompt_ids(prompt: str, tokenizer, style: str = "context") -> list:
    """The prompt ids alone, as pair_ids makes them: what generation continues from."""
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    text = format_prompt(prompt) if style == "context" else prompt
    return tokenizer.encode(text, add_bos=True, add_eos=False)


def _chat_ids(tokenizer, before, after) -> tuple[list, list]:
    """Ids of the conversation `before` (ending in a generation prompt) and of the assistant turn
    that `after` adds to it, cut after the end-of-turn token."""
    head = tokenizer.apply_chat_template(before, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(after, add_generation_prompt=False, tokenize=False)
    if not full.startswith(head):
        raise MiniLoraError("the chat template does not render the conversation so far as a prefix of the "
                            "next turn; minilora cannot tell the prompt from the answer")
    turn = full[len(head):]
    content = after[-1]["content"]
    eos = getattr(tokenizer, "eos_token", None)
    start = turn.find(content) + len(content) if content in turn else 0
    end = turn.find(eos, start) if eos else -1
    turn = turn[:end + len(eos)] if end >= 0 else turn.rstrip()
    return (tokenizer.encode(head, add_special_tokens=False), tokenizer.encode(turn, add_special_tokens=False))


def _messages_segments(tokenizer, messages):
    """[(ids, is_answer), ...] covering the whole conversation: each assistant turn is an answer."""
    if not uses_chat_template(tokenizer):
        raise MiniLoraError("{messages} rows need a model whose tokenizer has a chat template")
    segments, covered = [], []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise MiniLoraError("a conversation cannot start with an assistant message")
        head, turn = _chat_ids(tokenizer, messages[:i], messages[:i + 1])
        if head[:len(covered)] != covered:
            raise MiniLoraError("the chat template renders earlier turns differently once later ones follow")
        segments += [(head[len(covered):], False), (turn, True)]
        covered = head + turn
    return segments


def _flatten(segments) -> list:
    return [t for ids, _ in segments for t in ids]


def encode_record(row, tokenizer, max_len: int = 128, train_on_inputs: bool = False, fmt=None):
    """(ids, labels) of one row of any format, two lists of equal length <= max_len.

    The byte tokenizer on a context/target row gives exactly batching.encode_example's example.
    A row longer than max_len is a MiniLoraError (never truncated: that could cut the answer).
    """
    fmt = fmt or row_format(row)
    if fmt in CHOICE_FORMATS:
        p, a = pair_ids(*prompt_and_answer(row), tokenizer, style=fmt)
        segments = [(p, False), (a, True)]
    elif fmt == "messages":
        segments = _messages_segments(tokenizer, row["messages"])
    else:
        segments = [(tokenizer.encode(row["text"], add_bos=True, add_eos=True), True)]
    ids = _flatten(segments)
    if len(ids) > max_len:
        raise MiniLoraError(f"example is {len(ids)} tokens, longer than max_len={max_len}; shorten it")
    if train_on_inputs:
        return ids, [IGNORE_INDEX] + ids[1:]
    labels = [t if answer else IGNORE_INDEX for seg, answer in segments for t in seg]
    if fmt == "text":
        labels[0] = IGNORE_INDEX
    return ids, labels


def encode_records(rows, tokenizer, max_len: int = 128, train_on_inputs: bool = False, where: str = "data"):
    """encode_record over rows (one format); an error names the row. Returns [(ids, labels), ...]."""
    out = []
    fmt = row_format(rows[0], f"{where}: row 1") if rows else None
    for i, row in enumerate(rows, start=1):
        try:
            out.append(encode_record(row, tokenizer, max_len, train_on_inputs, fmt))
        except MiniLoraError as e:
            raise MiniLoraError(f"{where}: row {i}: {e}") from None
    if out and not any(t != IGNORE_INDEX for _, labels in out for t in labels[1:]):
        raise MiniLoraError(f"{where}: no token is a training target")
    return out
