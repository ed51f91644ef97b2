"""Secrets never reach a file: a real `tpo run` (tiny preset, one iteration, both arms) judges
over HTTP with an API key from the environment, against a local server that refuses any other
key, and generates with `generation.backend: openai` through `tpo serve --verbose` servers it
starts (each requires the planted TPO_API_KEY and logs every request into the run directory's
serve.log), with more planted keys in the variables tools read (OpenAI, Hugging Face, W&B);
then `tpo eval --export` writes its exports. Every file the run and the export wrote (config,
logs, manifests, scores, the judge cache, reports, exports), and what the commands printed, is
searched for every planted key, as bytes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from servers import FakeServer

SECRETS = {
    "TPO_TEST_JUDGE_KEY": "sk-planted-judge-0c4f1e9a7b",
    "OPENAI_API_KEY": "sk-planted-openai-5d2a8c",
    "HF_TOKEN": "hf_plantedtoken93b1",
    "WANDB_API_KEY": "planted-wandb-77e0a2",
    "TPO_API_KEY": "planted-serve-key-41ab",
}


def tpo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpo.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_no_planted_key_is_written_anywhere(tmp_path: Path) -> None:
    key = SECRETS["TPO_TEST_JUDGE_KEY"]
    server = FakeServer(lambda prompt: "Clear enough.\nScore: 7", api_key=key)
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env.update(SECRETS)
    out, export = tmp_path / "run", tmp_path / "export"
    try:
        judge = [
            "judge.type=pointwise",
            "judge.llm.model=judge-model",
            "judge.llm.backend=openai",
            f"judge.llm.openai.base_url={server.url}",
            "judge.llm.openai.api_key_env=TPO_TEST_JUDGE_KEY",
            "judge.llm.openai.max_retries=0",
        ]
        serve = f"{shlex.quote(sys.executable)} -m tpo.cli serve {{model}} --port {{port}}"
        judge += [
            "generation.backend=openai",
            f"generation.openai.serve_command={serve} --verbose",
            "generation.openai.endpoint.api_key_env=TPO_API_KEY",
            "generation.openai.max_n=4",
        ]
        run = tpo(
            "run", "--preset", "tiny", "--set", "iterations=1", *judge, "--out", str(out), env=env
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert server.requests > 0  # the key was used: the server refuses any other
        evaluated = tpo("eval", str(out), "--arm", "tpo", "--export", str(export), env=env)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    finally:
        server.stop()
    written = [p for root in (out, export) for p in root.rglob("*") if p.is_file()]
    assert {"config.yaml", "manifest.json", "judge_cache.sqlite", "report.html"} <= {
        p.name for p in written
    }
    assert any(p.is_relative_to(export) for p in written)
    served = (out / "serve.log").read_text()  # what the verbose servers logged is searched too
    assert "API key required" in served and "POST /v1/completions" in served, served[-2000:]
    printed = (run.stdout + run.stderr + evaluated.stdout + evaluated.stderr).encode()
    for name, secret in SECRETS.items():
        found = [str(p) for p in written if secret.encode() in p.read_bytes()]
        assert not found, f"{name} was written to {found}"
        assert secret.encode() not in printed, f"{name} was printed"
    assert b"TPO_TEST_JUDGE_KEY" in (out / "config.yaml").read_bytes()  # the name, not the key
