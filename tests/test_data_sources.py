"""Instruction sources in every format the hub serves, read through the real `datasets`: JSONL,
JSON, CSV, Parquet files, a directory of Parquet shards in the hub's layout, `save_to_disk`
output, and `hf:NAME`, resolved by `load_dataset` itself (a local directory of that name, and
a prepared cache under HF_DATASETS_OFFLINE). Also deduplication, length filters, and the
one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from tpo.config import SourceConfig
from tpo.data import DataError
from tpo.data.sources import deduplicate, normalised, read_source
from tpo.records import Instruction

# One table, written in each format: exact and normalised duplicates, an empty prompt, a long
# one, constraints in a struct column (Arrow gives every row the union of the keys), a numeric
# reference and a column tpo does not use.
ROWS = [
    {
        "prompt": "Write a haiku about rain.",
        "prompt_id": "a",
        "category": "poetry",
        "constraints": [{"type": "lowercase"}],
        "reference": None,
        "chosen": "x",
    },
    {
        "prompt": "write a HAIKU about rain",
        "prompt_id": "b",
        "category": "poetry",
        "constraints": [],
        "reference": None,
        "chosen": "x",
    },
    {
        "prompt": "Write a haiku about rain.",
        "prompt_id": "c",
        "category": None,
        "constraints": [],
        "reference": None,
        "chosen": "x",
    },
    {
        "prompt": "How many legs do 3 spiders have?",
        "prompt_id": "d",
        "category": "math",
        "constraints": [{"type": "word_count", "relation": "at most", "n": 30}],
        "reference": "24",
        "chosen": "x",
    },
    {
        "prompt": "  ",
        "prompt_id": "e",
        "category": None,
        "constraints": [],
        "reference": None,
        "chosen": "x",
    },
    {
        "prompt": "Summarise: " + "word " * 60,
        "prompt_id": "f",
        "category": None,
        "constraints": [],
        "reference": None,
        "chosen": "x",
    },
]
TPO_RUN = [sys.executable, "-m", "tpo.cli", "run", "--preset", "tiny"]
MAPPED = {"text_column": "prompt", "id_column": "prompt_id"}
EXPECTED_IDS = ["a", "d"]  # b: normalised duplicate of a, c: exact, e: empty, f: too long
COUNTS = {
    "rows": 6,
    "empty": 1,
    "too_short": 0,
    "too_long": 1,
    "exact_duplicates": 1,
    "normalised_duplicates": 1,
    "kept": 2,
}


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`datasets` caches what it loads; keep that in the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def table() -> datasets.Dataset:
    return datasets.Dataset.from_list(ROWS)


def source(path: str | Path, **settings) -> SourceConfig:
    return SourceConfig(path=str(path), **{**MAPPED, "max_chars": 200, **settings})


def check(instructions: list[Instruction], counts: dict) -> None:
    assert [i.id for i in instructions] == EXPECTED_IDS
    first, math = instructions
    assert (first.text, first.category, first.constraints) == (
        "Write a haiku about rain.",
        "poetry",
        [{"type": "lowercase"}],
    )
    assert math.constraints == [{"type": "word_count", "relation": "at most", "n": 30}]
    assert (math.reference, math.category) == ("24", "math")
    assert counts == COUNTS


def write_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet"])
def test_every_file_format_gives_the_same_instructions(tmp_path, kind):
    path = tmp_path / f"set.{kind}"
    if kind == "jsonl":
        write_jsonl(path)
    elif kind == "json":
        path.write_text(json.dumps(ROWS))
    elif kind == "csv":  # a CSV cell holds the constraints as JSON text
        rows = [{**r, "constraints": json.dumps(r["constraints"])} for r in ROWS]
        datasets.Dataset.from_list(rows).to_csv(str(path))
    else:
        table().to_parquet(str(path))
    check(*read_source(source(path), "data.train"))


def test_parquet_shards_in_the_hubs_layout(tmp_path):
    """data/SPLIT-0000N-of-0000M.parquet, as the hub stores (and converts) datasets."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    table().select(range(3)).to_parquet(str(repo / "data" / "train-00000-of-00002.parquet"))
    table().select(range(3, 6)).to_parquet(str(repo / "data" / "train-00001-of-00002.parquet"))
    table().select([3]).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    check(*read_source(source(repo), "data.train"))
    test_split, counts = read_source(source(repo, split="test"), "data.heldout")
    assert [i.id for i in test_split] == ["d"] and counts["rows"] == 1


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    table().save_to_disk(str(tmp_path / "one"))
    check(*read_source(source(tmp_path / "one"), "data.train"))
    datasets.DatasetDict({"train_prefs": table(), "test_prefs": table().select([3])}).save_to_disk(
        str(tmp_path / "dict")
    )
    check(*read_source(source(tmp_path / "dict", split="train_prefs"), "data.train"))
    with pytest.raises(DataError) as info:
        read_source(source(tmp_path / "dict", split="test"), "data.heldout")
    assert "no split 'test'" in str(info.value) and "train_prefs, test_prefs" in str(info.value)


def test_hub_name_resolves_to_a_local_dataset_repo(tmp_path, monkeypatch):
    """`load_dataset("org/name")` looks for a directory of that name first (then the Hub):
    `hf:org/name` goes through that resolution with the split asked for."""
    repo = tmp_path / "org" / "ultra"
    (repo / "data").mkdir(parents=True)
    table().to_parquet(str(repo / "data" / "train_prefs-00000-of-00001.parquet"))
    monkeypatch.chdir(tmp_path)
    check(*read_source(source("hf:org/ultra", split="train_prefs"), "data.train"))


def test_hub_name_offline_from_a_prepared_cache(tmp_path, monkeypatch):
    """Offline, `load_dataset("someone/cached_set")` cannot ask the Hub and falls back to the
    cache, HF_DATASETS_CACHE/someone___cached_set/CONFIG/VERSION/HASH: the layout a download
    leaves, prepared here by datasets' own Parquet builder."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    shard = tmp_path / "shard.parquet"
    table().to_parquet(str(shard))
    cache = tmp_path / "prepared"
    builder = Parquet(
        cache_dir=str(cache),
        dataset_name="cached_set",
        config_id="default",
        hash="0123abcd",
        data_files={"train": [str(shard)]},
    )
    builder.download_and_prepare()
    (cache / "cached_set").rename(cache / "someone___cached_set")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    check(*read_source(source("hf:someone/cached_set"), "data.train"))
    with pytest.raises(DataError) as info:  # a name that is not cached
        read_source(source("hf:someone/elsewhere"), "data.train")
    message = str(info.value)
    assert message.startswith("data.train: cannot load hf:someone/elsewhere (split train)")
    assert "Couldn't reach" in message and "\n" not in message


def test_unreachable_dataset_offline_is_one_cli_line(tmp_path):
    """The real CLI with HF_DATASETS_OFFLINE=1 and an empty cache: one line, exit 2."""
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [*TPO_RUN, "--out", str(tmp_path / "r"), "--set", "data.train=hf:nobody/nothing"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tpo: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "data.train: cannot load hf:nobody/nothing" in errors[0]
    assert "offline: only datasets in the local cache load" in errors[0]


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"text_column": "query"}, "no column 'query' (columns: question, prompt_id,"),
        ({"text_column": None}, "has no text, instruction or prompt column; set data.train."),
        ({"category_column": "topic"}, "no column 'topic'"),
    ],
)
def test_missing_columns_are_one_line(tmp_path, settings, needle):
    table().rename_column("prompt", "question").to_parquet(str(tmp_path / "t.parquet"))
    settings = {"text_column": "question", **settings}
    with pytest.raises(DataError) as info:
        read_source(source(tmp_path / "t.parquet", **settings), "data.train")
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("data.train: ")


def test_empty_split_and_bad_cells_are_one_line(tmp_path):
    table().select([]).to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(DataError, match=r"empty.parquet is empty$"):
        read_source(source(tmp_path / "empty.parquet"), "data.train")
    bad = [{"prompt": "Fine.", "prompt_id": "1", "constraints": '[{"type": "rhymes"}]'}]
    datasets.Dataset.from_list(bad).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match=r"row 1: unknown constraint type 'rhymes'"):
        read_source(source(tmp_path / "bad.parquet"), "data.train")
    same_id = [{"prompt": "One.", "prompt_id": "x"}, {"prompt": "Two.", "prompt_id": "x"}]
    datasets.Dataset.from_list(same_id).to_parquet(str(tmp_path / "ids.parquet"))
    with pytest.raises(DataError, match=r"gives id 'x' to two different instructions"):
        read_source(source(tmp_path / "ids.parquet"), "data.train")
    with pytest.raises(DataError, match=r"no such file or directory"):
        read_source(source(tmp_path / "nowhere.parquet"), "data.train")


def test_instruction_files_stay_strict_and_tables_ignore_other_columns(tmp_path):
    """Without a column named, a .jsonl file is an instruction file (unknown fields are
    errors, catching typos); naming columns reads it as a table."""
    path = write_jsonl(tmp_path / "dump.jsonl")
    with pytest.raises(DataError, match=r"dump.jsonl:1: unknown field"):
        read_source(SourceConfig(path=str(path)), "data.train")
    instructions, _ = read_source(source(path), "data.train")
    assert [i.id for i in instructions] == EXPECTED_IDS


def test_default_ids_and_length_filters(tmp_path):
    rows = [{"instruction": "Hi."}, {"instruction": "Tell me a story about a fox."}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "s.parquet"))
    got, counts = read_source(
        SourceConfig(path=str(tmp_path / "s.parquet"), min_chars=5), "data.train"
    )
    assert [i.id for i in got] == ["s-2"]  # file stem and row number; "Hi." is too short
    assert counts["too_short"] == 1 and counts["kept"] == 1


def test_normalisation_and_deduplication_by_hand():
    assert normalised("Write  a POEM, please!") == "write a poem please"
    assert normalised("ﬁne") == "fine"  # NFKC folds the ligature
    items = [Instruction(str(n), t) for n, t in enumerate(["A b.", "A b.", " a B ", "c"])]
    kept, exact, loose = deduplicate(items)
    assert [i.id for i in kept] == ["0", "3"] and (exact, loose) == (1, 1)
