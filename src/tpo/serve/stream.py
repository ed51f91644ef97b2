"""Split a model's output into reasoning (the hidden thought) and content (the response).

Two rules, because a finished output and a stream know different things:

- `split_full` (a finished output) is the offline parser, `tpo.thoughts.split_output`: the
  response starts after the *last* response marker, so a model that drafts "Here is my
  response: ..." twice shows only its final answer. Training and evaluation use this rule.
- `ThoughtSplitter` (a stream) cannot wait for the end, so it switches to content at the
  *first* response marker. Both rules agree on any output with at most one marker. With two or
  more, the stream's content also holds the text between the first and the last marker (with
  the later markers themselves removed), where `split_full` would have called it thought.

No thought text reaches content while streaming, even when a marker is split across tokens:
the splitter holds back any suffix of the text that could still become a response marker
(e.g. a trailing "Here is my resp"), and trailing whitespace, until the next delta decides
it. A leading thought marker written by the model itself ("Here is my thought process:") is
dropped, like the offline parser drops it.

An output that never writes the response marker is handled by `no_marker`:
- "content": the whole output is the response. While streaming, thought text must then be
  held back until the marker arrives (it is reasoning) or the output ends (it is content), so
  a client sees no reasoning deltas live, only the finished thought at the marker.
- "reasoning": the whole output is thought and the content is empty; reasoning streams live.

`passthrough=True` is for callers that may never get an end-of-stream signal (vLLM's reasoning
parser interface): content is emitted as it comes, with no hold-back that a final flush would
have to release (so a later marker stays in content), and a missing marker means reasoning.
The thought's possible-marker tail is still held back (it must not reach the reasoning if the
marker completes); `finish()` releases it when the caller does learn of the end.
"""

from __future__ import annotations

from tpo.thoughts import ThoughtFormat, has_response_marker, split_output

NO_MARKER_CHOICES = ("content", "reasoning")


def split_full(output: str, fmt: ThoughtFormat, no_marker: str = "content") -> tuple[str, str]:
    """(reasoning, content) of a finished output, by the offline parser's last-marker rule.

    >>> from tpo.thoughts import ThoughtFormat
    >>> fmt = ThoughtFormat("{q}", "Here is my thought process:", "Here is my response:", True)
    >>> split_full("Plan.\\nHere is my response: Draft.\\nHere is my response: Hi!", fmt)
    ('Plan.\\nHere is my response: Draft.', 'Hi!')
    >>> split_full("No marker here.", fmt, no_marker="reasoning")
    ('No marker here.', '')
    """
    _check_no_marker(no_marker)
    parsed = split_output(output, fmt)
    if not fmt.thinking:
        return "", str(parsed.response)
    if not has_response_marker(output, fmt) and no_marker == "content":
        return "", parsed.thought
    return parsed.thought, str(parsed.response)


class ThoughtSplitter:
    """Feed the text deltas of one output; get back (reasoning_delta, content_delta) pairs.

    >>> from tpo.thoughts import ThoughtFormat
    >>> fmt = ThoughtFormat("{q}", "Here is my thought process:", "Here is my response:", True)
    >>> s = ThoughtSplitter(fmt, no_marker="reasoning")
    >>> [s.feed(d) for d in ["Plan it.\\nHere is my ", "resp", "onse:\\nHi", "!"]] + [s.finish()]
    [('Plan it.', ''), ('', ''), ('', 'Hi'), ('', '!'), ('', '')]
    """

    def __init__(self, fmt: ThoughtFormat, no_marker: str = "content", passthrough: bool = False):
        _check_no_marker(no_marker)
        if fmt.thinking and not fmt.response_marker:
            raise ValueError("a thinking format needs a response marker to split on")
        self.fmt = fmt
        self.markers = fmt.response_aliases if fmt.thinking else ()
        self.passthrough = passthrough
        self.no_marker = "reasoning" if passthrough else no_marker
        self.hold_thought = fmt.thinking and self.no_marker == "content"
        self.saw_marker = False
        self._phase = "start" if fmt.thinking else "content"
        self._pending = ""  # received, not yet emitted
        self._reasoning_started = False
        self._content_started = False

    @property
    def thinking(self) -> bool:
        """True until the response marker has been seen (always False for direct formats)."""
        return self._phase != "content"

    def feed(self, text: str) -> tuple[str, str]:
        self._pending += text
        reasoning = content = ""
        if self._phase == "start":
            self._drop_leading_thought_marker(final=False)
        if self._phase == "thought":
            reasoning = self._thought()
        if self._phase == "content":
            content = self._content(final=False)
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """Flush what was held back; call once, at the end of the output."""
        if self._phase == "start":
            self._drop_leading_thought_marker(final=True)
        if self._phase == "thought":  # the output ended without a response marker
            text, self._pending = self._pending, ""
            if self.no_marker == "content":
                return "", self._emit_content(text.strip())
            return self._emit_reasoning(text.rstrip()), ""
        return "", self._content(final=True)

    def _drop_leading_thought_marker(self, final: bool) -> None:
        marker = self.fmt.thought_marker
        head = self._pending.lstrip()
        if marker and not final and len(head) < len(marker) and marker.startswith(head):
            return  # could still become the thought marker
        if marker and head.startswith(marker):
            self._pending = head[len(marker) :]
        self._phase = "thought"

    def _thought(self) -> str:
        pos, width = _first_marker(self._pending, self.markers)
        if pos >= 0:
            before = self._pending[:pos]
            self._pending = self._pending[pos + width :]
            self._phase = "content"
            self.saw_marker = True
            return self._emit_reasoning(before.rstrip())
        if self.hold_thought:
            return ""
        safe = len(self._pending) - _partial_marker_len(self._pending, self.markers)
        cut = len(self._pending[:safe].rstrip())
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return self._emit_reasoning(out)

    def _content(self, final: bool) -> str:
        text = self._pending
        if self.passthrough:
            self._pending = ""
            return self._emit_content(text)
        while any(m in text for m in self.markers):  # a later marker is never shown
            for m in self.markers:
                text = text.replace(m, "")
        if final:
            self._pending = ""
            return self._emit_content(text.rstrip())
        safe = len(text) - _partial_marker_len(text, self.markers)
        cut = len(text[:safe].rstrip())
        out, self._pending = text[:cut], text[cut:]
        return self._emit_content(out)

    def _emit_reasoning(self, text: str) -> str:
        if not self._reasoning_started:
            text = text.lstrip()
            self._reasoning_started = bool(text)
        return text

    def _emit_content(self, text: str) -> str:
        if not self._content_started:
            text = text.lstrip()
            self._content_started = bool(text)
        return text


def _check_no_marker(no_marker: str) -> None:
    if no_marker not in NO_MARKER_CHOICES:
        raise ValueError(f"no_marker must be one of {', '.join(NO_MARKER_CHOICES)}")


def _first_marker(text: str, markers: tuple[str, ...]) -> tuple[int, int]:
    """(position, width) of the earliest marker in text, (-1, 0) if none."""
    best, width = -1, 0
    for m in markers:
        pos = text.find(m)
        if pos >= 0 and (best < 0 or pos < best):
            best, width = pos, len(m)
    return best, width


def _partial_marker_len(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that is a proper prefix of some marker."""
    longest = 0
    for m in markers:
        for k in range(min(len(text), len(m) - 1), longest, -1):
            if text.endswith(m[:k]):
                longest = k
                break
    return longest
