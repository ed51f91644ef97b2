"""Thought prompts and chat formatting.

An arm is a way of prompting. `direct` sends the instruction as it is (the paper's baseline);
`tpo` wraps it in a thought prompt that asks for a hidden thought and then a response after a
fixed marker. The wording below is ours; the markers follow PAPER.md (the generic ones are
also what IBM Granite 3.2 and vLLM's Granite reasoning parser use).

With `prefill_thought_marker`, the assistant turn of the prompt already starts with the thought
marker, as reasoning models prefill `<think>`: the model continues inside its thought, and the
marker is part of the prompt, so DPO does not train on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpo.config import PromptConfig

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


def build_prompt(tokenizer: object, fmt: ThoughtFormat, instruction: str) -> str:
    """The full model input as text: chat template, generation prompt, optional prefill."""
    messages = [{"role": "user", "content": fmt.user_message(instruction)}]
    text: str = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        messages, tokenize=False, add_generation_prompt=True
    )
    if fmt.thinking and fmt.prefill and fmt.thought_marker:
        text += fmt.thought_marker + "\n"
    return text
