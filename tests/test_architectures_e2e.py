"""End to end per architecture × objective: `dvc exp run -S model_name=<example>` in a temp copy of the repo.

Data-driven: one run per architecture, the first entry of params.yaml's catalog that uses it (by name, so gpt
runs gpt-bpe, lstm its bidirectional masked-LM example, and gru/rnn cover causal recurrent models), shrunk to
the architecture's `TINY` size and a few training steps. The runs share one repo copy (and MLflow store) so
that `dvc exp show` can compare them at the end, as the docs describe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, make_repo_copy, run_cmd, tiny_params
from model_foundry.adapters import get_spec

pytestmark = pytest.mark.slow

METRIC_KEYS = {
    "causal_lm": {"val_loss", "perplexity", "bits_per_byte", "tokens_scored", "unigram"},
    "masked_lm": {
        "mlm_loss",
        "mlm_accuracy",
        "masked_tokens",
        "pseudo_perplexity",
        "pseudo_ppl_tokens",
        "unigram",
    },
}
HF_CLASS = {
    "gpt": ("AutoModelForCausalLM", "GPT2LMHeadModel"),
    "bert": ("AutoModelForMaskedLM", "BertForMaskedLM"),
}


def _examples() -> list[tuple[str, str, str]]:
    """(entry, architecture, objective) of the first catalog entry (by name) of each scratch architecture (no
    download)."""
    import yaml

    catalog = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    first: dict[str, tuple[str, str, str]] = {}
    for name, entry in sorted(catalog.items()):
        if get_spec(entry["architecture"]).pretrained:
            continue
        objective = (entry.get("train") or {}).get("objective", "causal_lm")
        first.setdefault(entry["architecture"], (name, entry["architecture"], objective))
    return list(first.values())


EXAMPLES = _examples()


def _shrunk_params() -> dict[str, Any]:
    raw = tiny_params()
    for name, arch, _ in EXAMPLES:
        entry = raw["models"][name]
        entry.update(getattr(get_spec(arch).config_cls, "TINY", {}))
        entry.setdefault("evaluate", {})["pseudo_ppl_sequences"] = 2
    return raw


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    repo = make_repo_copy(tmp_path_factory.mktemp("e2e") / "repo", _shrunk_params())
    return {"repo": repo, "env": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}, "ran": []}


@pytest.mark.parametrize(("name", "arch", "objective"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_exp_run_trains_and_evaluates(shared_repo, name, arch, objective):
    repo: Path = shared_repo["repo"]
    exp_run = ["dvc", "exp", "run", "--name", f"e2e-{name}", "-S", f"model_name={name}"]
    run_cmd(exp_run, repo, env=shared_repo["env"], timeout=300)
    shared_repo["ran"].append(f"e2e-{name}")

    metrics = json.loads((repo / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS[objective], sorted(metrics)
    others = set().union(*METRIC_KEYS.values()) - METRIC_KEYS[objective]
    assert not set(metrics) & others, f"{objective} metrics mixed with another objective's: {sorted(metrics)}"
    trained = repo / "models" / f"{name}-trained"
    assert json.loads((trained / "config.json").read_text())["architecture"] == arch
    assert json.loads((trained / "metadata.json").read_text())["training"]["objective"] == objective
    if arch in HF_CLASS:  # the folder is a plain transformers checkpoint
        import transformers

        auto, expected = HF_CLASS[arch]
        assert type(getattr(transformers, auto).from_pretrained(trained)).__name__ == expected


def test_exp_show_compares_the_runs(shared_repo):
    if not shared_repo["ran"]:
        pytest.skip("no experiment ran in this session")
    repo = shared_repo["repo"]
    rows = json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo).stdout)
    names = {e["name"] for row in rows for e in (row.get("experiments") or [])}
    assert set(shared_repo["ran"]) <= names
    table = run_cmd(["dvc", "exp", "show", "--md", "--only-changed"], repo).stdout
    assert "model_name" in table
    # Each run's effective settings (the catalog entry's overrides applied), beside the top-level params.
    bert = next(
        e["revs"][0]["data"]
        for row in rows
        for e in (row.get("experiments") or [])
        if e["name"] == "e2e-bert-wordpiece-mlm"
    )
    used = bert["metrics"]["plots/effective_params.json"]["data"]
    assert (used["objective"], used["tokenizer"]) == ("masked_lm", "wordpiece")
    assert bert["params"]["params.yaml"]["data"]["train"]["objective"] == "causal_lm"
