"""The vLLM reasoning-parser plugin: its logic without vLLM, its adapter against vLLM's interface.

Four layers are tested:
- `MarkerReasoning` (pure; the tiny model's real tokenizer): whole outputs, streamed deltas
  driven the way vLLM drives a parser (decode the output ids step by step and pass
  previous/current/delta text and ids), token-level marker detection on real prompts;
- the adapter classes, loaded by file path as `--reasoning-parser-plugin` does, against a stub
  of the few vLLM names they use (`ReasoningParser`, `ReasoningParserManager.register_module`
  and `get_reasoning_parser`, `DeltaMessage`, where vLLM 0.33 keeps them), written from vLLM's
  `vllm/reasoning/abs_reasoning_parsers.py`, so the main venv (without vLLM) checks the adapter
  code; a stub that lacks a name shows the one-line failure;
- the same checks against the real vLLM, and the chat template rendered by vLLM's own serving
  path: these need vLLM, which lives in a venv of its own (`make test-vllm`, run by CI); in the
  main venv they skip;
and the chat template that makes `vllm serve` prompt like `tpo serve`.
"""

from __future__ import annotations

import abc
import importlib.util
import sys
import types
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

import tpo.serve.vllm_parser as plugin
from tpo.config import PromptConfig
from tpo.serve.engine import Engine
from tpo.serve.vllm_parser import MarkerReasoning, thought_chat_template
from tpo.thoughts import DIRECT, has_response_marker, thought_format

GENERIC = thought_format("tpo", PromptConfig(thought_prompt="generic"))
SPECIFIC = thought_format("tpo", PromptConfig(thought_prompt="specific"))
CASES = {
    "tpo-generic": (GENERIC, "I will greet them warmly.\nHere's my response:\nHello, friend!"),
    "tpo-specific": (SPECIFIC, "Draft: hi. Evaluation: too short.\n<R>\nHello, friend!"),
}
THOUGHTS = {
    "tpo-generic": "I will greet them warmly.",
    "tpo-specific": "Draft: hi. Evaluation: too short.",
}


def drive(
    parser: Any, tokenizer: Any, output: str, stop: bool = False
) -> tuple[list[str], list[str], list[bool]]:
    """Feed `output` token by token the way vLLM's streaming chat does; return the reasoning
    deltas, the content deltas and, per step, whether the step ended the reasoning. With
    `stop` the output ends on the EOS token, as vLLM passes it: its id in the last step, its
    text dropped."""
    ids = tokenizer(output, add_special_tokens=False)["input_ids"]
    if stop:
        ids = [*ids, tokenizer.eos_token_id]
    reasoning, content, ended = [], [], []
    previous = ""
    for k in range(1, len(ids) + 1):
        current = tokenizer.decode(ids[:k], skip_special_tokens=True)
        delta = parser.extract_reasoning_streaming(
            previous, current, current[len(previous) :], ids[: k - 1], ids[:k], ids[k - 1 : k]
        )
        if isinstance(delta, tuple):  # MarkerReasoning.stream_delta
            r, c = delta
        else:  # a DeltaMessage or None
            r = (
                (getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None))
                if delta
                else None
            )
            c = delta.content if delta else None
        if r:
            reasoning.append(r)
        if c:
            content.append(c)
        ended.append(parser.is_reasoning_end_streaming(ids[:k], ids[k - 1 : k]))
        previous = current
    return reasoning, content, ended


class Pure:
    """MarkerReasoning behind the method names vLLM calls, so `drive` serves both."""

    def __init__(self, tokenizer: Any, fmt: Any):
        self.m = MarkerReasoning(tokenizer, fmt)

    def extract_reasoning_streaming(self, previous, current, _delta, _prev_ids, _ids, delta_ids):
        return self.m.stream_delta(previous, current, delta_ids)

    def is_reasoning_end_streaming(self, ids, delta):
        return self.m.reasoning_ended_in(ids, delta)


def check_parser(parser: Any, tokenizer: Any, name: str) -> None:
    """The behaviour every layer must show, for one parser name."""
    fmt, output = CASES[name]
    reasoning, content, ended = drive(parser, tokenizer, output)
    assert "".join(reasoning) == THOUGHTS[name]
    assert "".join(content) == "Hello, friend!"
    assert not any(fmt.response_marker in c or "<R" in c or "Here" in c for c in content)
    ids = tokenizer(output, add_special_tokens=False)["input_ids"]
    done = next(
        k for k in range(1, len(ids) + 1) if has_response_marker(tokenizer.decode(ids[:k]), fmt)
    )
    assert ended.index(True) == done - 1  # the step whose token completes the marker
    assert parser.count_reasoning_tokens(ids) == done
    assert tokenizer.decode(parser.extract_content_ids(ids)).strip() == "Hello, friend!"
    engine = Engine(None, tokenizer, fmt)  # type: ignore[arg-type]  (render needs no backend)
    prompt_ids = tokenizer(
        engine.render([{"role": "user", "content": "Hi"}]), add_special_tokens=False
    )["input_ids"]
    assert not parser.is_reasoning_end(prompt_ids)  # the thought prompt quotes the marker
    assert parser.is_reasoning_end(prompt_ids + ids)
    assert parser.is_reasoning_end(ids)


def test_marker_reasoning_streams_like_vllm_drives_it(tiny):
    tokenizer = tiny[1]
    for name, (fmt, output) in CASES.items():
        reasoning, content, ended = drive(Pure(tokenizer, fmt), tokenizer, output)
        assert ("".join(reasoning), "".join(content)) == (THOUGHTS[name], "Hello, friend!")
        assert ended[-1] and not ended[0]


def test_held_back_tail_is_flushed_when_the_output_ends_on_a_stop_token(tiny):
    """An output without a marker that ends in what could start one ("... Here is"): the held
    tail comes out on the step that carries the stop token; without that step (an output cut
    by max_tokens) it stays missing, the trade-off the module doc states."""
    tokenizer = tiny[1]
    for fmt, output, streamed_without_stop in (
        (GENERIC, "I think. Here is", "I think."),
        (SPECIFIC, "I think <", "I think"),
    ):
        reasoning, content, _ = drive(Pure(tokenizer, fmt), tokenizer, output, stop=True)
        assert ("".join(reasoning), content) == (output, [])
        reasoning, content, _ = drive(Pure(tokenizer, fmt), tokenizer, output)
        assert ("".join(reasoning), content) == (streamed_without_stop, [])
        assert MarkerReasoning(tokenizer, fmt).split(output) == (output, None)
    m = MarkerReasoning(tokenizer, GENERIC)
    ids = tokenizer("I think. Here is", add_special_tokens=False)["input_ids"]
    assert m.stream_delta("", "I think. Here is", ids) == ("I think.", "")
    eos = [tokenizer.eos_token_id]
    assert m.stream_delta("I think. Here is", "I think. Here is", eos) == (" Here is", "")
    # a marked output streams the same with or without the stop step
    _, output = CASES["tpo-generic"]
    assert (
        drive(Pure(tokenizer, GENERIC), tokenizer, output, stop=True)[:2]
        == (drive(Pure(tokenizer, GENERIC), tokenizer, output)[:2])
    )


def test_marker_reasoning_whole_outputs_and_token_ids(tiny):
    tokenizer = tiny[1]
    m = MarkerReasoning(tokenizer, GENERIC)
    assert m.split("Plan.\nHere is my response: A.\nHere is my response: B.") == (
        "Plan.\nHere is my response: A.",
        "B.",
    )
    assert m.split("Only a thought.") == ("Only a thought.", None)  # vLLM: no marker = reasoning
    assert m.split("Plan.\nHere is my response:") == ("Plan.", None)
    ids = tokenizer("no marker at all", add_special_tokens=False)["input_ids"]
    assert m.content_ids(ids) == [] and m.reasoning_token_count(ids) == len(ids)
    # a call out of order (e.g. a new request) is replayed from the text, not mixed up
    assert m.stream_delta("", "Plan. Here is my response: Hi") == ("Plan.", "Hi")
    # "Plan." belongs to the previous text's deltas, already sent: only the new part comes
    assert m.stream_delta("Plan. Here is my", "Plan. Here is my response: Yo") == ("", "Yo")


def test_chat_template_prompts_like_the_engine(tiny):
    tokenizer = tiny[1]
    turns = [
        {"role": "system", "content": 'Be "brief".\\n'},
        {"role": "user", "content": "First {question}"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]
    # earlier answers sent back raw: thought, marker(s), response
    raw = [
        {
            "role": "assistant",
            "content": "Secret plan.\nHere is my response: A.\nHere's my response: B. ",
        },
        {"role": "assistant", "content": "Secret draft.\n<R>\n C <R> D"},
    ]
    for fmt in (GENERIC, SPECIFIC, DIRECT):
        template = thought_chat_template(tokenizer.chat_template, fmt)
        engine = Engine(None, tokenizer, fmt)  # type: ignore[arg-type]
        for messages in (turns, turns[1:2], turns[3:], [turns[1], *raw, turns[3]]):
            rendered = tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=True
            )
            assert rendered == engine.render(messages)
    assert thought_chat_template(tokenizer.chat_template, DIRECT) == tokenizer.chat_template
    for fmt, message, response in ((GENERIC, raw[0], "B."), (SPECIFIC, raw[1], "D")):
        rendered = tokenizer.apply_chat_template(
            [turns[1], message, turns[3]],
            chat_template=thought_chat_template(tokenizer.chat_template, fmt),
            tokenize=False,
            add_generation_prompt=True,
        )
        assert f"<|im_start|>assistant\n{response}<|im_end|>" in rendered
        assert "Secret" not in rendered


def test_chat_template_command(tiny_path, capsys):
    assert plugin.main([tiny_path, "--thought-prompt", "specific"]) == 0
    out = capsys.readouterr().out
    assert "write a draft response" in out and "{%- set tpo = namespace" in out
    assert plugin.main(["/no/such/model"]) == 2
    assert "error: cannot load tokenizer" in capsys.readouterr().err


def stub_vllm(monkeypatch: pytest.MonkeyPatch, with_delta_message: bool = True) -> type:
    """Install a stub of the vLLM names the plugin imports (where vLLM 0.33 keeps them);
    return the stub manager."""

    class ReasoningParser(abc.ABC):
        """vLLM's base class as far as the plugin relies on it: abstract where vLLM's is, so an
        adapter that misses one of those methods cannot be instantiated, as under vLLM."""

        def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any):
            self.model_tokenizer = tokenizer

        @abc.abstractmethod
        def is_reasoning_end(self, input_ids): ...

        def is_reasoning_end_streaming(self, input_ids, delta_ids):
            return self.is_reasoning_end(input_ids)

        @abc.abstractmethod
        def extract_content_ids(self, input_ids): ...

        @abc.abstractmethod
        def extract_reasoning(self, model_output, request): ...

        @abc.abstractmethod
        def extract_reasoning_streaming(
            self,
            previous_text,
            current_text,
            delta_text,
            previous_token_ids,
            current_token_ids,
            delta_token_ids,
        ): ...

    class ReasoningParserManager:
        reasoning_parsers: ClassVar[dict[str, type]] = {}

        @classmethod
        def register_module(cls, name=None, force=True, module=None):
            assert issubclass(module, ReasoningParser)
            for n in [name] if isinstance(name, str) else name:
                cls.reasoning_parsers[n] = module
            return module

        @classmethod
        def get_reasoning_parser(cls, name: str) -> type:
            return cls.reasoning_parsers[name]

    class DeltaMessage(BaseModel):
        role: str | None = None
        content: str | None = None
        reasoning: str | None = None

    modules = {
        "vllm": {"__version__": "0.33.0"},
        "vllm.reasoning": {
            "ReasoningParser": ReasoningParser,
            "ReasoningParserManager": ReasoningParserManager,
        },
        "vllm.entrypoints": {},
        "vllm.entrypoints.generate": {},
        "vllm.entrypoints.generate.base": {},
        "vllm.entrypoints.generate.base.protocol": {"DeltaMessage": DeltaMessage},
    }
    if not with_delta_message:  # a vLLM that keeps it somewhere the plugin does not know
        modules["vllm.entrypoints.generate.base.protocol"] = {}
        modules["vllm"] = {"__version__": "0.99.0"}
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return ReasoningParserManager


def load_plugin_by_path(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """What `vllm serve --reasoning-parser-plugin FILE` does: import the file as a module."""
    spec = importlib.util.spec_from_file_location("vllm_parser", plugin.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm_parser", module)
    spec.loader.exec_module(module)
    return module


def test_plugin_registers_and_adapts_against_a_vllm_stub(tiny, monkeypatch):
    tokenizer = tiny[1]
    manager = stub_vllm(monkeypatch)
    module = load_plugin_by_path(monkeypatch)
    assert module.HAVE_VLLM and set(manager.reasoning_parsers) == {"tpo-generic", "tpo-specific"}
    for name in CASES:
        parser = manager.get_reasoning_parser(name)(tokenizer)
        check_parser(parser, tokenizer, name)
        _, output = CASES[name]
        assert parser.extract_reasoning(output, request=None) == (THOUGHTS[name], "Hello, friend!")
        assert parser.extract_reasoning_content(output, None) == (THOUGHTS[name], "Hello, friend!")
        assert parser.extract_reasoning_streaming("", "", "", [], [], []) is None
    parser = manager.get_reasoning_parser("tpo-generic")(tokenizer)
    reasoning, content, _ = drive(parser, tokenizer, "I think. Here is", stop=True)
    assert ("".join(reasoning), content) == ("I think. Here is", [])


def test_the_vllm_stub_refuses_an_adapter_missing_an_abstract_method(monkeypatch):
    stub_vllm(monkeypatch)
    from vllm.reasoning import ReasoningParser  # the stub

    assert ReasoningParser.__abstractmethods__ == {
        "is_reasoning_end",
        "extract_content_ids",
        "extract_reasoning",
        "extract_reasoning_streaming",
    }
    module = load_plugin_by_path(monkeypatch)
    methods = {
        name: getattr(module.TpoGenericReasoningParser, name)
        for name in ReasoningParser.__abstractmethods__
    }
    for missing in methods:
        partial = type(
            "Partial", (ReasoningParser,), {k: v for k, v in methods.items() if k != missing}
        )
        with pytest.raises(TypeError, match=missing):
            partial(None)
    complete = type("Complete", (ReasoningParser,), methods)
    assert not complete.__abstractmethods__


def test_a_vllm_without_a_name_the_adapter_needs_fails_in_one_line(monkeypatch):
    """vLLM importable, the adapter not buildable: importing the plugin (as `vllm serve
    --reasoning-parser-plugin` does) raises one line naming the name and the version, instead
    of vLLM reporting "Reasoning parser 'tpo-generic' not found" later."""
    stub_vllm(monkeypatch, with_delta_message=False)
    with pytest.raises(ImportError) as info:
        load_plugin_by_path(monkeypatch)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("tpo's vLLM reasoning parser cannot be built: vLLM 0.99.0 has no ")
    assert "DeltaMessage (looked in vllm.entrypoints.generate.base.protocol, " in message
    assert "tpo supports vllm>=0.33,<0.34: pip install 'tpo[vllm]'" in message


def test_plugin_defines_adapters_exactly_where_vllm_is_importable():
    have = importlib.util.find_spec("vllm") is not None
    assert have == plugin.HAVE_VLLM
    assert hasattr(plugin, "TpoGenericReasoningParser") == have


def real_vllm() -> Any:
    return pytest.importorskip(
        "vllm", reason="vLLM is not installed in this environment (make test-vllm runs this)"
    )


def test_plugin_with_real_vllm(tiny):
    vllm = real_vllm()
    from vllm.entrypoints.generate.base.protocol import DeltaMessage
    from vllm.reasoning import ReasoningParser, ReasoningParserManager

    assert vllm.__version__.startswith("0.33.")  # what tpo[vllm] installs
    ReasoningParserManager.import_reasoning_parser(plugin.__file__)  # the plugin flag's path
    assert plugin.DeltaMessage is DeltaMessage
    abstract = {
        name for name, v in vars(ReasoningParser).items() if getattr(v, "__isabstractmethod__", 0)
    }
    assert abstract  # vLLM marks them, though its base class is no ABC: check them here
    for name in CASES:
        cls = ReasoningParserManager.get_reasoning_parser(name)
        assert issubclass(cls, ReasoningParser)
        assert all(getattr(cls, m) is not getattr(ReasoningParser, m) for m in abstract)
        parser = cls(tiny[1])
        check_parser(parser, tiny[1], name)
        _, output = CASES[name]
        assert parser.extract_reasoning(output, None) == (THOUGHTS[name], "Hello, friend!")
        delta = parser.extract_reasoning_streaming("", "Plan", "Plan", [], [1], [1])
        assert isinstance(delta, DeltaMessage) and delta.reasoning == "Plan"


def test_chat_template_renders_the_same_through_vllms_serving_path(tiny, tiny_path):
    """`vllm serve --chat-template` renders our template through its own chat parsing (content
    format detection, message parsing, the chat template): the same prompt as `tpo serve`."""
    real_vllm()
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.renderers.registry import renderer_from_config

    tokenizer = tiny[1]
    config = VllmConfig(
        model_config=ModelConfig(model=tiny_path), device_config=DeviceConfig("cpu")
    )
    renderer = renderer_from_config(config)
    messages = [
        {"role": "system", "content": 'Be "brief".'},
        {"role": "user", "content": "First {question}"},
        {
            "role": "assistant",
            "content": "Secret plan.\nHere is my response: A.\nHere's my response: B.",
        },
        {"role": "user", "content": "Second question"},
    ]
    for fmt in (GENERIC, SPECIFIC, DIRECT):
        request = ChatCompletionRequest(model="m", messages=messages)
        params = request.build_chat_params(
            thought_chat_template(tokenizer.chat_template, fmt), "auto"
        )
        _, prompt = renderer.render_messages(request.messages, params)
        rendered = tokenizer.decode(prompt["prompt_token_ids"])
        assert rendered == Engine(None, tokenizer, fmt).render(messages)  # type: ignore[arg-type]
        assert ("Secret" in rendered) == (fmt is not GENERIC)  # cut at its generic markers
