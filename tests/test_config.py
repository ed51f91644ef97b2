"""Config: every preset loads; bad keys and values give one-line errors naming the key."""

from pathlib import Path

import pytest

from tpo.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    expand_shorthands,
    load_config,
    parse_override,
    preset_names,
    read_preset,
    reference,
)


def leaves(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_loads_with_every_value_it_sets(name):
    """Each key the preset file sets reaches the config with its value (no key is dropped or
    coerced into something else), and every other key keeps its documented default."""
    cfg = load_config(preset=name).to_dict()
    written = leaves(expand_shorthands(RunConfig, read_preset(name)))  # data.train: x -> .path
    loaded, default = leaves(cfg), leaves(RunConfig().to_dict())
    assert written, name
    for key, value in written.items():
        assert loaded[key] == value, key
    for key, value in default.items():
        if key not in written:
            assert loaded[key] == value, key


def test_the_settings_study_never_reads_the_held_out_split():
    """benchmarks/study/validation.yaml (README's study) over the shipped embedded preset: its
    evaluation prompts are cut from the training source, so settings are chosen without the
    held-out split, and it is the embedded model, judge and training method."""
    study = Path(__file__).parents[1] / "benchmarks" / "study" / "validation.yaml"
    cfg, shipped = load_config(study, preset="embedded"), load_config()
    assert cfg.data.heldout.path == "same" and cfg.data.train.path == "builtin:train"
    assert (cfg.model, cfg.judge, cfg.train.method) == (
        shipped.model,
        shipped.judge,
        shipped.train.method,
    )


def test_presets_include_embedded_and_tiny():
    assert {"embedded", "tiny"} <= set(preset_names())
    assert load_config().model.name_or_path == "embedded"  # the default preset


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        preset="tiny",
        overrides=[
            "generation.num_samples=3",
            "pairs.length_rho=0.25",
            "arms=tpo",
            "generation.thought_budget=null",
        ],
    )
    assert cfg.generation.num_samples == 3
    assert cfg.pairs.length_rho == 0.25
    assert cfg.arms == ["tpo"]
    assert cfg.generation.thought_budget is None
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    # braces without a colon are text (a {model} template), with one a YAML mapping
    templated = load_config(preset="tiny", overrides=["model.name_or_path={model}"])
    assert templated.model.name_or_path == "{model}"
    assert parse_override("a={b: 1}") == {"a": {"b": 1}}
    assert parse_override("a={}") == {"a": {}}
    # YAML 1.1 reads 2e-4 as a string; float fields accept it
    assert (
        load_config(preset="tiny", overrides=["train.learning_rate=2e-4"]).train.learning_rate
        == 2e-4
    )


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("generation.num_samples=1", "generation.num_samples"),
        ("pairs.length_rho=-0.1", "pairs.length_rho"),
        ("generation.temperature=0", "generation.temperature"),
        ("generation.num_sample=4", "did you mean 'generation.num_samples'"),
        ("generation.num_samples=four", "generation.num_samples: expected an integer"),
        ("arms=tpo,thinking", "unknown arm 'thinking'"),
        ("train.method=qlora", "train.method"),
        ("bogus=1", "unknown config key 'bogus'"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(preset="tiny", overrides=[override])
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert message.startswith("preset tiny:")


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generation:\n  num_samples: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("judge:\n  tipe: verifier\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown config key 'judge.tipe'"):
        load_config(typo)


def test_custom_prompt_needs_instruction_placeholder():
    with pytest.raises(ConfigError, match=r"prompt\.custom_template"):
        config_from_dict({"prompt": {"thought_prompt": "custom", "custom_template": "no slot"}})
    cfg = config_from_dict(
        {
            "prompt": {
                "thought_prompt": "custom",
                "response_marker": "ANSWER:",
                "custom_template": "Think, then ANSWER: {instruction}",
            }
        }
    )
    assert cfg.prompt.response_marker == "ANSWER:"


def test_reference_documents_every_key():
    text = reference()
    for key in ("generation.num_samples", "pairs.length_rho", "train.nll_weight", "arms"):
        assert f"`{key}`" in text


def test_paper_preset_is_the_papers_setup():
    """PAPER.md: Llama-3-8B-Instruct, UltraFeedback prompts, K=8 at T=0.8 / top-p 0.95, 5000
    fresh prompts per iteration, ArmoRM with length control, DPO, 4 iterations, both arms,
    1500 validation prompts; training under accelerate (ZeRO-3, bf16, checkpointing)."""
    cfg = load_config(preset="paper")
    assert cfg.model.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (cfg.iterations, cfg.arms) == (4, ["tpo", "direct"])
    train, heldout = cfg.data.train, cfg.data.heldout
    assert train.path == heldout.path == "hf:HuggingFaceH4/ultrafeedback_binarized"
    assert (train.split, heldout.split, train.text_column) == (
        "train_prefs",
        "test_prefs",
        "prompt",
    )
    assert (cfg.data.instructions_per_iteration, cfg.data.validation_size) == (5000, 1500)
    g = cfg.generation
    assert (g.num_samples, g.temperature, g.top_p, g.thought_budget) == (8, 0.8, 0.95, None)
    assert cfg.judge.type == "reward_model"
    assert cfg.judge.reward_model.model == "RLHFlow/ArmoRM-Llama3-8B-v0.1"
    assert 0 < cfg.pairs.length_rho <= 0.5
    t = cfg.train
    assert (t.method, t.launcher, t.accelerate_config) == ("full", "accelerate", "deepspeed_zero3")
    assert t.bf16 and t.gradient_checkpointing and t.num_processes == 8 and t.epochs == 10


def test_generation_dtype_auto_is_bf16_only_where_the_cpu_computes_it(
    tmp_path, capsys, monkeypatch
):
    """`generation.dtype: auto` (the embedded preset's) is bfloat16 on a CPU whose flags name
    avx512_bf16 or amx_bf16, float32 on one without (bf16 is emulated there) or when the flags
    cannot be read; the pool a run loads its policy with gets the resolved dtype and says it."""
    from tpo.generate.pool import Generators
    from tpo.models import native_bf16, resolve_dtype

    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma {}\n"
    cases = {"avx512f avx512bw": False, "avx512f avx512_bf16": True, "amx_tile amx_bf16": True}
    for extra, expected in cases.items():
        (tmp_path / "cpuinfo").write_text(flags.format(extra))
        assert native_bf16("cpu", tmp_path / "cpuinfo") is expected, extra
    assert native_bf16("cpu", tmp_path / "missing") is False
    assert resolve_dtype("float32", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    here = "bfloat16" if native_bf16("cpu") else "float32"
    assert resolve_dtype("auto", "cpu") == here
    config = load_config(preset="embedded")
    assert config.generation.dtype == "auto"
    assert Generators.for_run(config).settings.dtype == here
    assert Generators.for_run(config).dtype == here  # what the manifest records
    int8 = load_config(preset="embedded", overrides=["generation.native.int8=true"])
    assert Generators.for_run(int8).dtype == "int8"
    vllm = load_config(preset="embedded", overrides=["generation.backend=vllm"])
    assert Generators.for_run(vllm).dtype is None  # vLLM resolves its own auto
    assert f"generation.dtype auto: {here}" in capsys.readouterr().err
    # a GPU counts only with bf16 units: torch's emulated bf16 (pre-Ampere) does not
    import torch

    seen: list[bool] = []

    def units(including_emulation: bool = True) -> bool:
        seen.append(including_emulation)
        return including_emulation  # what an emulating GPU (a T4) answers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", units)
    assert native_bf16("cuda") is False and seen == [False]
    assert resolve_dtype("auto", "cuda") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", "auto") == "bfloat16"  # device auto: the GPU
    with pytest.raises(ConfigError, match=r"generation\.dtype: .*float32 \| bfloat16 \| auto"):
        load_config(preset="tiny", overrides=["generation.dtype=bf16"])
