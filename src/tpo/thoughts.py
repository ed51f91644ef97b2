"""The thought format of an arm: how a thought is asked for, and how an output is split.

Both halves live here because they are one contract. Generation, evaluation, `tpo chat`,
`tpo serve` and the vLLM chat template all prompt with `render`, and training, evaluation and
serving all split with `split_output`, so a model is always read the way it was asked.

**Asking.** An arm is a way of prompting. `direct` sends the instruction as it is (the paper's
baseline); a thinking arm (`tpo`, `generic`, `specific` or one of `arm_prompts`, see
`RunConfig.arm_prompt`) wraps it in a thought prompt that asks for a hidden thought and then
a response after a fixed marker. The wording is ours; the markers follow PAPER.md (the generic
ones are also what IBM Granite 3.2 and vLLM's Granite reasoning parser use). With
`prefill_thought_marker`, the assistant turn already starts with the thought marker, as
reasoning models prefill `<think>`: the model continues inside its thought, and the marker is
part of the prompt, so DPO does not train on it. In a conversation only the last user message
is wrapped; an earlier assistant message goes back as its response only (a raw output is cut
after its last response marker), as reasoning models' chat templates drop old thoughts.

**Splitting**, chosen so that a thought can never leak into a response:
- The response starts after the *last* response marker (or an accepted variant). Text between
  two markers is thought: a model that drafts "Here is my response: ..." twice has its final
  answer after the last one.
- No marker, or nothing but whitespace after it: a parse failure (`ok` False, the whole output
  is the thought, the response is empty).
- A thought marker that opens the output (the model writing it itself) is dropped from the
  thought; one written later is thought text like any other. A stream can apply this rule too
  (`tpo.serve.stream`), so whole and streamed outputs split alike.
- Direct outputs (no thought format) are all response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tpo.config import PromptConfig, RunConfig
from tpo.records import Response

GENERIC = (
    "Respond to the user's query below. Before you answer, think it over in private: write "
    'your thought process after the line "Here is my thought process:", then write the answer '
    'the user will see after the line "Here is my response:". Only the response is shown to '
    "the user, so it must stand on its own and follow every instruction in the query.\n\n"
    "Query: {instruction}"
)

SPECIFIC = (
    "Respond to the user's query below. First think in private: write a draft response, then "
    "evaluate the draft critically (is it correct, complete, does it follow every instruction "
    "in the query?). After your thoughts, write the final response the user will see after "
    'the line "<R>". Only the final response is shown to the user.\n\n'
    "Query: {instruction}"
)


@dataclass(frozen=True)
class ThoughtFormat:
    """How one arm asks for thoughts; `template` None means the direct arm (no thought)."""

    template: str | None
    thought_marker: str
    response_marker: str
    prefill: bool

    @property
    def thinking(self) -> bool:
        return self.template is not None

    def user_message(self, instruction: str) -> str:
        if self.template is None:
            return instruction
        return self.template.replace("{instruction}", instruction)

    @property
    def response_aliases(self) -> tuple[str, ...]:
        """The response marker and the variants a parser also accepts ("Here's my response:")."""
        markers = [self.response_marker]
        if self.response_marker.startswith("Here is "):
            markers.append("Here's " + self.response_marker[len("Here is ") :])
        return tuple(markers)

    @property
    def prefill_text(self) -> str:
        """What the assistant turn starts with: the thought marker and a line break, or ''."""
        if self.thinking and self.prefill and self.thought_marker:
            return self.thought_marker + "\n"
        return ""


DIRECT = ThoughtFormat(template=None, thought_marker="", response_marker="", prefill=False)


def thought_format(arm: str, cfg: PromptConfig) -> ThoughtFormat:
    if arm == "direct":
        return DIRECT
    if cfg.thought_prompt == "generic":
        template, thought, response = GENERIC, "Here is my thought process:", "Here is my response:"
    elif cfg.thought_prompt == "specific":
        template, thought, response = SPECIFIC, "", "<R>"
    else:
        assert cfg.custom_template is not None  # checked by PromptConfig
        template, thought, response = cfg.custom_template, "", ""
    return ThoughtFormat(
        template=template,
        thought_marker=cfg.thought_marker if cfg.thought_marker is not None else thought,
        response_marker=cfg.response_marker or response,
        prefill=cfg.prefill_thought_marker,
    )


def arm_format(config: RunConfig, arm: str) -> ThoughtFormat:
    """The thought format of one of a run's arms."""
    return thought_format(arm, config.arm_prompt(arm))


# --- asking ------------------------------------------------------------------------------

Message = Mapping[str, str]


def render(tokenizer: Any, fmt: ThoughtFormat, messages: Sequence[Message]) -> str:
    """The model input for a conversation, as text: the last user message wrapped in the
    thought prompt, earlier assistant messages cut to their response, the chat template with
    its generation prompt, then the prefilled thought marker."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    turns = [
        {"role": m["role"], "content": fmt.user_message(m["content"])}
        if i == last_user
        else {"role": m["role"], "content": _earlier_turn(m, fmt)}
        for i, m in enumerate(messages)
    ]
    text: str = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return text + fmt.prefill_text


def build_prompt(tokenizer: Any, fmt: ThoughtFormat, instruction: str) -> str:
    """The model input for one instruction (a one-turn conversation)."""
    return render(tokenizer, fmt, [{"role": "user", "content": instruction}])


def _earlier_turn(message: Message, fmt: ThoughtFormat) -> str:
    """An earlier turn as the model sees it: an assistant message that still holds a raw
    output (thought, response marker, response) keeps only its response, split by the
    last-marker rule, so an old thought never goes back to the model."""
    content = message["content"]
    if message["role"] == "assistant" and fmt.thinking and has_response_marker(content, fmt):
        return str(split_output(content, fmt).response)
    return content


# --- splitting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    thought: str
    response: Response
    ok: bool


def split_output(output: str, fmt: ThoughtFormat) -> Parsed:
    """
    >>> fmt = ThoughtFormat("{q}", "Here is my thought process:", "Here is my response:", True)
    >>> split_output("Plan it.\\nHere is my response:\\nHello!", fmt)
    Parsed(thought='Plan it.', response='Hello!', ok=True)
    >>> split_output("I forgot the marker.", fmt).ok
    False
    """
    if not fmt.thinking:
        return Parsed(thought="", response=Response(output.strip()), ok=bool(output.strip()))
    cut, width = -1, 0
    for marker in fmt.response_aliases:
        pos = output.rfind(marker)
        if pos > cut:
            cut, width = pos, len(marker)
    if cut < 0:
        return Parsed(thought=_clean_thought(output, fmt), response=Response(""), ok=False)
    thought = _clean_thought(output[:cut], fmt)
    response = output[cut + width :].strip()
    return Parsed(thought=thought, response=Response(response), ok=bool(response))


def _clean_thought(text: str, fmt: ThoughtFormat) -> str:
    text = text.lstrip()
    if fmt.thought_marker and text.startswith(fmt.thought_marker):
        text = text[len(fmt.thought_marker) :]
    return text.strip()


def has_response_marker(text: str, fmt: ThoughtFormat) -> bool:
    return any(marker in text for marker in fmt.response_aliases)
