"""The Hub families table (adapters/hf/families.py) against transformers itself and against its fixtures.

Each row is data read from a Hub config; here every value that transformers also knows is checked against
the installed transformers (class, tied keys, LoRA target modules, position offset), and every row must have
a tiny fixture repo (`localhub.repos.FAMILY_FIXTURES`) of its own model_type, which the contract tests
(test_contract.py) and the parity tests (tests/hub/test_hub_parity.py) import.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from typer.testing import CliRunner

from localhub.repos import FAMILY_FIXTURES, SPECS
from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.hf.families import BY_MODEL_TYPE, FAMILIES, HFFamily, supported_families

NAMES = [f.name for f in FAMILIES]


def test_every_family_has_a_fixture_repo() -> None:
    missing = sorted(set(NAMES) - set(FAMILY_FIXTURES))
    assert not missing, f"rows of FAMILIES without a fixture repo in tests/localhub/repos.py: {missing}"
    assert set(FAMILY_FIXTURES) == set(NAMES), "FAMILY_FIXTURES names a family that is not a row"
    assert set(FAMILY_FIXTURES.values()) <= set(SPECS)


def test_rows_are_unique_and_registered() -> None:
    assert len(BY_MODEL_TYPE) == len(FAMILIES) and len(set(NAMES)) == len(NAMES)
    for family in FAMILIES:
        spec = ARCHITECTURES[family.name]
        assert spec.family is family and spec.objectives == (family.objective,)
        assert family.source.startswith("https://huggingface.co/") and family.source.endswith("/config.json")
        assert (family.chat_template is None) == (family.chat_template_source is None)


def fixture_config(hub_repos: dict[str, Path], family: HFFamily) -> transformers.PretrainedConfig:
    model_cls = getattr(transformers, family.model_class)
    return model_cls.config_class.from_pretrained(str(hub_repos[FAMILY_FIXTURES[family.name]]))


@pytest.mark.parametrize("family", FAMILIES, ids=NAMES)
def test_fixture_is_of_its_family(family: HFFamily, hub_repos: dict[str, Path]) -> None:
    config = json.loads((hub_repos[FAMILY_FIXTURES[family.name]] / "config.json").read_text())
    assert config["model_type"] == family.model_type
    assert config["architectures"] == [family.model_class]


@pytest.mark.parametrize("family", FAMILIES, ids=NAMES)
def test_row_matches_transformers(family: HFFamily, hub_repos: dict[str, Path]) -> None:
    from transformers.models.auto import modeling_auto

    model_cls = getattr(transformers, family.model_class)
    assert model_cls.config_class.model_type == family.model_type
    auto = {
        "causal_lm": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "masked_lm": modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    }[family.objective]
    assert auto[family.model_type] == family.model_class  # the class transformers' Auto* picks for it
    # transformers 5: {tied name: the tensor it aliases}; a pickle's copies of these are dropped on convert
    assert set(family.tied_keys) == set(model_cls._tied_weights_keys)
    with torch.device("meta"):
        model = model_cls(fixture_config(hub_repos, family))
    kinds = {name.rsplit(".", 1)[-1]: type(module).__name__ for name, module in model.named_modules()}
    for target in family.lora_targets:
        assert kinds.get(target) in {"Linear", "Conv1D"}, f"{family.name}: LoRA target {target!r}"
        assert (kinds[target] == "Conv1D") == family.lora_fan_in_fan_out  # Conv1D stores (in, out)


@pytest.mark.parametrize("family", FAMILIES, ids=NAMES)
def test_max_context_is_what_the_positions_hold(family: HFFamily, hub_repos: dict[str, Path]) -> None:
    """`max_context` tokens run; with learned absolute positions (GPT-2, BERT, RoBERTa) one more does not."""
    spec = ARCHITECTURES[family.name]
    model_cls = getattr(transformers, family.model_class)
    torch.manual_seed(0)
    model = model_cls(fixture_config(hub_repos, family)).eval()
    adapter = spec.adapter_cls()(model, model.config, spec)
    n = adapter.max_context
    assert n is not None and n > 0
    ids = torch.full((1, n), 7)  # no pad token: RoBERTa numbers positions from pad + 1
    with torch.no_grad():
        assert adapter.logits(ids).shape[1] == n
    table = n + family.context_offset  # rows of a learned position table
    if any(isinstance(m, torch.nn.Embedding) and m.num_embeddings == table for m in model.modules()):
        with torch.no_grad(), pytest.raises((IndexError, RuntimeError)):  # past the table (or its buffers)
            adapter.logits(torch.full((1, n + 1), 7))


def test_errors_and_help_list_every_family() -> None:
    from model_foundry.cli import app

    listed = supported_families()
    assert all(f"{f.model_type} ({f.note})" in listed for f in FAMILIES)
    out = CliRunner().invoke(app, ["import-model", "--help"]).output
    assert " ".join(listed.split()) in " ".join(out.split())


@pytest.mark.parametrize("family", FAMILIES, ids=NAMES)
def test_fixture_tokenizer_has_the_family_stop_tokens(family: HFFamily, hub_repos: dict[str, Path]) -> None:
    """Each fixture exercises its family's stop tokens (a causal family's turn/text end is in its vocab)."""
    from model_foundry.model_folder import load_tokenizer

    vocab = load_tokenizer(hub_repos[FAMILY_FIXTURES[family.name]]).get_vocab()
    assert (family.objective == "masked_lm") == (not family.stop_tokens)
    assert not family.stop_tokens or any(t in vocab for t in family.stop_tokens)


def test_qwen3_fallback_template_has_no_default_system_prompt(hub_repos: dict[str, Path]) -> None:
    """Qwen3's own template (unlike Qwen2.5's) adds no system turn the user did not write."""
    from model_foundry.model_folder import load_tokenizer

    family = BY_MODEL_TYPE["qwen3"]
    tok = load_tokenizer(hub_repos[FAMILY_FIXTURES[family.name]])
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], chat_template=family.chat_template, tokenize=False,
        add_generation_prompt=True,
    )  # fmt: skip
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
