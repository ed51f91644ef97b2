"""Split an output into thought and response by the response marker (a plain string match).

Rules, chosen so that a thought can never leak into a response:
- The response starts after the *last* response marker (or an accepted variant). Text between
  two markers is treated as thought: a model that drafts "Here is my response: ..." twice has
  its final answer after the last one.
- No marker, or nothing but whitespace after it: a parse failure (`ok` False, the whole output
  is the thought, the response is empty).
- A thought marker that opens the output (the model writing it itself) is dropped from the
  thought; one written later is thought text like any other. This is the one rule a stream
  can apply too (`tpo.serving.stream`), so whole and streamed outputs split alike.
- Direct outputs (no thought format) are all response.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpo.prompts import ThoughtFormat
from tpo.records import Response


@dataclass(frozen=True)
class Parsed:
    thought: str
    response: Response
    ok: bool


def split_output(output: str, fmt: ThoughtFormat) -> Parsed:
    """
    >>> from tpo.prompts import ThoughtFormat
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
