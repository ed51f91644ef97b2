"""vLLM reasoning parsers for tpo's markers, so that `vllm serve` splits thoughts at scale.

Two parsers, one per shipped thought prompt: `tpo-generic` (thought after "Here is my thought
process:", response after "Here is my response:" or "Here's my response:") and `tpo-specific`
(response after "<R>"). Use them with vLLM's plugin flag, which imports this file by path:

    PLUGIN=$(python -c 'import tpo.serve.vllm_parser as m; print(m.__file__)')
    vllm serve RUN/tpo/iter_2/model --chat-template tpo-generic.jinja \\
        --reasoning-parser-plugin "$PLUGIN" --reasoning-parser tpo-generic

The parser only splits; the prompt side (wrapping the last user message in the thought prompt
and prefilling the thought marker, as in training) is a chat template that this module writes:
`python -m tpo.serve.vllm_parser MODEL [--thought-prompt generic|specific] > FILE.jinja`.

The rules are those of `tpo.serve.stream`, with differences forced by vLLM's interface,
whose streaming calls get no end-of-stream call. Hence `passthrough` splitting: content is
passed on as it comes, with nothing held back (a second response marker stays in content),
and an output without any response marker is all reasoning, in streaming and, for
consistency, in whole responses too. A whole response otherwise uses the offline parser's
last-marker rule, a stream the first marker.

The thought must still be held back where it could be the start of a response marker (a
trailing "Here is" or "<R"), with its trailing whitespace, or marker text would reach the
reasoning. That tail is released by the next step, or when the output ends:
- ended by a stop token (EOS, the chat template's end of turn; what chat outputs end on):
  vLLM passes that token's id in the last step's `delta_token_ids` though it drops its text,
  so a step whose last id is one of the tokenizer's special tokens flushes the tail;
- ended by `max_tokens` or a stop string: no step says so, and the held tail (at most the
  longest marker's length less one character, plus whitespace) is missing from the streamed
  reasoning; the whole (non-streamed) response has it.

The logic lives in `MarkerReasoning`, which needs no vLLM (and is what the tests cover on a
machine without it); the vLLM classes are thin adapters, defined and registered only when
vLLM is importable, so importing this module without vLLM never fails. With a vLLM that lacks
a name the adapters need (vLLM moves its classes between releases: 0.33 moved DeltaMessage),
importing it raises `VLLMAdapterError`, one line naming the name and the vLLM version, rather
than leaving vLLM to report a parser "not found".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tpo.config import PromptConfig
from tpo.serve.stream import ThoughtSplitter, split_full
from tpo.thoughts import ThoughtFormat, has_response_marker, thought_format

PARSER_FORMATS = {
    "tpo-generic": thought_format("tpo", PromptConfig(thought_prompt="generic")),
    "tpo-specific": thought_format("tpo", PromptConfig(thought_prompt="specific")),
}
_TAIL_TOKENS = 32  # decoded around each new token to spot a marker split across tokens


class MarkerReasoning:
    """Splits one request's output by a thought format's markers, on text and on token ids."""

    def __init__(self, tokenizer: Any, fmt: ThoughtFormat):
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.generation_prompt = _generation_prompt(tokenizer)
        self._splitter = ThoughtSplitter(fmt, passthrough=True)
        self._fed = ""
        self._stop_ids = frozenset(getattr(tokenizer, "all_special_ids", None) or ())

    def split(self, output: str) -> tuple[str | None, str | None]:
        """(reasoning, content) of a whole output; None where empty (vLLM's convention)."""
        reasoning, content = split_full(output, self.fmt, no_marker="reasoning")
        return reasoning or None, content or None

    def stream_delta(
        self, previous_text: str, current_text: str, delta_ids: Sequence[int] = ()
    ) -> tuple[str, str]:
        """(reasoning, content) that `current_text` adds to `previous_text`. The splitter's
        output depends only on the text fed so far, so an unexpected call is replayed. A step
        that ends on a special token (the stop token) ends the output: what was held back is
        flushed (see the module doc)."""
        if previous_text != self._fed or not current_text.startswith(previous_text):
            self._splitter = ThoughtSplitter(self.fmt, passthrough=True)
            self._splitter.feed(previous_text)
        self._fed = current_text
        reasoning, content = self._splitter.feed(current_text[len(previous_text) :])
        ids = list(delta_ids)
        if ids and ids[-1] in self._stop_ids:
            tail_reasoning, tail_content = self._splitter.finish()
            reasoning, content = reasoning + tail_reasoning, content + tail_content
        return reasoning, content

    def reasoning_ended(self, input_ids: Sequence[int]) -> bool:
        """Whether the response marker appears in the current assistant turn. `input_ids` may
        be a whole prompt (whose thought prompt quotes the marker), so only the text after the
        last generation prompt and the last thought marker counts."""
        text = self._decode(input_ids)
        if self.generation_prompt and self.generation_prompt in text:
            text = text.rsplit(self.generation_prompt, 1)[1]
        if self.fmt.thought_marker and self.fmt.thought_marker in text:
            text = text.rsplit(self.fmt.thought_marker, 1)[1]
        return has_response_marker(text, self.fmt)

    def reasoning_ended_in(self, input_ids: Sequence[int], delta_ids: Sequence[int]) -> bool:
        """Whether the tokens just decoded complete a response marker (a decode step)."""
        tail = list(input_ids)[-(len(list(delta_ids)) + _TAIL_TOKENS) :]
        return has_response_marker(self._decode(tail), self.fmt)

    def reasoning_token_count(self, output_ids: Sequence[int]) -> int:
        """Tokens up to and including the one that completes the first response marker; all
        of them when there is no marker."""
        ids = list(output_ids)
        if not has_response_marker(self._decode(ids), self.fmt):
            return len(ids)
        low, high = 1, len(ids)  # the smallest prefix that contains a marker
        while low < high:
            mid = (low + high) // 2
            if has_response_marker(self._decode(ids[:mid]), self.fmt):
                high = mid
            else:
                low = mid + 1
        return low

    def content_ids(self, output_ids: Sequence[int]) -> list[int]:
        ids = list(output_ids)
        if not has_response_marker(self._decode(ids), self.fmt):
            return []
        return ids[self.reasoning_token_count(ids) :]

    def _decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return text


def _generation_prompt(tokenizer: Any) -> str:
    """The text a chat template adds for `add_generation_prompt` ("<|im_start|>assistant\\n")."""
    turn = [{"role": "user", "content": "x"}]
    try:
        bare = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=False)
        full = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    except Exception:  # a tokenizer without a usable template: fall back to whole-text checks
        return ""
    if not isinstance(full, str) or not isinstance(bare, str) or not full.startswith(bare):
        return ""
    return full[len(bare) :].strip()


def thought_chat_template(base: str, fmt: ThoughtFormat) -> str:
    """A Jinja chat template that prompts like `tpo.serve.engine.Engine.render`: the last user
    message wrapped in the thought prompt, an earlier assistant message that holds a raw output
    cut to the text after its last response marker (stripped), then `base`, then the prefilled
    thought marker."""
    if not fmt.thinking or fmt.template is None:
        return base
    # the text after the last marker is the shortest of the texts after each marker's last use
    response = (
        "{%- set tpo.cut = none -%}"
        f"{{%- for a in {_jinja_list(fmt.response_aliases)} -%}}"
        "{%- if a in m['content'] -%}{%- set tail = m['content'].split(a)[-1] -%}"
        "{%- if tpo.cut is none or tail | length < tpo.cut | length -%}"
        "{%- set tpo.cut = tail -%}{%- endif -%}{%- endif -%}{%- endfor -%}"
    )
    wrap = (
        "{%- set tpo = namespace(messages=[], last_user=-1, cut=none) -%}"
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
        "{%- set tpo.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
        "{%- for m in messages -%}{%- if loop.index0 == tpo.last_user -%}"
        "{%- set tpo.messages = tpo.messages + [{'role': 'user', 'content': "
        f"{_jinja_str(fmt.template)} | replace('{{instruction}}', m['content'])}}] -%}}"
        "{%- elif m['role'] == 'assistant' and m['content'] is string -%}"
        f"{response}"
        "{%- if tpo.cut is none -%}{%- set tpo.messages = tpo.messages + [m] -%}"
        "{%- else -%}{%- set tpo.messages = tpo.messages + "
        "[{'role': 'assistant', 'content': tpo.cut | trim}] -%}{%- endif -%}"
        "{%- else -%}{%- set tpo.messages = tpo.messages + [m] -%}{%- endif -%}{%- endfor -%}"
        "{%- set messages = tpo.messages -%}"
    )
    prefill = ""
    if fmt.prefill_text:
        prefill = (
            f"{{% if add_generation_prompt %}}{{{{ {_jinja_str(fmt.prefill_text)} }}}}{{% endif %}}"
        )
    return wrap + base + prefill


def _jinja_str(text: str) -> str:
    """A Jinja string literal (Jinja unescapes backslash escapes like Python, so JSON's work)."""
    return json.dumps(text)


def _jinja_list(items: Sequence[str]) -> str:
    """A Jinja list literal of strings."""
    return "[" + ", ".join(_jinja_str(item) for item in items) + "]"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the chat template `vllm serve --chat-template` needs for a tpo model."""
    from tpo.models import load_tokenizer
    from tpo.serve.engine import THOUGHT_PROMPT_CHOICES, resolve_settings

    p = argparse.ArgumentParser(
        prog="python -m tpo.serve.vllm_parser",
        description="Print a chat template that prompts a tpo model the way it was trained.",
    )
    p.add_argument("model", help="model path (RUN/ARM/iter_T/model reads the run's config)")
    p.add_argument("--thought-prompt", choices=THOUGHT_PROMPT_CHOICES)
    args = p.parse_args(argv)
    try:
        settings = resolve_settings(args.model, args.thought_prompt)
        tokenizer = load_tokenizer(args.model)
    except ValueError as exc:  # ConfigError, ModelLoadError: one line, as the tpo command does
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(thought_chat_template(tokenizer.chat_template, settings.fmt))
    return 0


# Where vLLM keeps DeltaMessage, newest first: vLLM 0.33 moved it to the generate package.
DELTA_MESSAGE_MODULES = (
    "vllm.entrypoints.generate.base.protocol",
    "vllm.entrypoints.openai.engine.protocol",
    "vllm.entrypoints.openai.protocol",
)
SUPPORTED_VLLM = "vllm>=0.33,<0.34"  # what tpo[vllm] installs and the tests run against


class VLLMAdapterError(ImportError):
    """vLLM is importable but lacks a name the adapters need: one line, naming both."""


def _vllm_names() -> tuple[Any, Any, Any]:
    """(ReasoningParser, ReasoningParserManager, DeltaMessage) of the installed vLLM."""
    import importlib

    import vllm

    version = getattr(vllm, "__version__", "of unknown version")

    def missing(name: str) -> VLLMAdapterError:
        return VLLMAdapterError(
            f"tpo's vLLM reasoning parser cannot be built: vLLM {version} has no {name} "
            f"(tpo supports {SUPPORTED_VLLM}: pip install 'tpo[vllm]')"
        )

    try:
        from vllm.reasoning import ReasoningParser, ReasoningParserManager
    except ImportError:
        raise missing("vllm.reasoning.ReasoningParser / ReasoningParserManager") from None
    for module in DELTA_MESSAGE_MODULES:
        try:
            return (
                ReasoningParser,
                ReasoningParserManager,
                importlib.import_module(module).DeltaMessage,
            )
        except (ImportError, AttributeError):
            continue
    raise missing(f"DeltaMessage (looked in {', '.join(DELTA_MESSAGE_MODULES)})")


try:  # vLLM is optional: without it this module still imports, and only the adapters are absent
    import vllm  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

if HAVE_VLLM:  # with vLLM, adapters that cannot be built fail loudly, naming what is missing
    ReasoningParser: Any
    ReasoningParserManager: Any
    DeltaMessage: Any
    ReasoningParser, ReasoningParserManager, DeltaMessage = _vllm_names()

    # vLLM renamed DeltaMessage.reasoning_content to reasoning; fill whichever it has
    _REASONING_FIELD = (
        "reasoning" if "reasoning" in DeltaMessage.model_fields else "reasoning_content"
    )

    class TpoReasoningParser(ReasoningParser):
        """vLLM's ReasoningParser interface over `MarkerReasoning` (one instance per request)."""

        parser_name = "tpo-generic"

        def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any):
            super().__init__(tokenizer, *args, **kwargs)
            self.markers = MarkerReasoning(tokenizer, PARSER_FORMATS[self.parser_name])

        def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
            return self.markers.reasoning_ended(input_ids)

        def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids: Any) -> bool:
            return self.markers.reasoning_ended_in(input_ids, list(delta_ids))

        def extract_content_ids(self, input_ids: list[int]) -> list[int]:
            return self.markers.content_ids(input_ids)

        def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
            return self.markers.reasoning_token_count(token_ids)

        def extract_reasoning(
            self, model_output: str, request: Any
        ) -> tuple[str | None, str | None]:
            return self.markers.split(model_output)

        def extract_reasoning_streaming(
            self,
            previous_text: str,
            current_text: str,
            delta_text: str,
            previous_token_ids: Sequence[int],
            current_token_ids: Sequence[int],
            delta_token_ids: Sequence[int],
            *_: Any,
        ) -> Any:
            reasoning, content = self.markers.stream_delta(
                previous_text, current_text, list(delta_token_ids)
            )
            if not reasoning and not content:
                return None
            fields = {_REASONING_FIELD: reasoning or None, "content": content or None}
            return DeltaMessage(**fields)

        # the names these methods had before vLLM 0.11
        extract_reasoning_content = extract_reasoning
        extract_reasoning_content_streaming = extract_reasoning_streaming

    class TpoGenericReasoningParser(TpoReasoningParser):
        parser_name = "tpo-generic"

    class TpoSpecificReasoningParser(TpoReasoningParser):
        parser_name = "tpo-specific"

    def register() -> None:
        ReasoningParserManager.register_module("tpo-generic", module=TpoGenericReasoningParser)
        ReasoningParserManager.register_module("tpo-specific", module=TpoSpecificReasoningParser)

    register()


if __name__ == "__main__":
    sys.exit(main())
