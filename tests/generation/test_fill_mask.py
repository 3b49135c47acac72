"""Masked LMs fill their masks: the same predictions as transformers' fill-mask pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import transformers

from generation.generation_helpers import tiny_scratch
from model_foundry.errors import FoundryError
from model_foundry.generation import fill_mask, is_masked_model, load_causal_model, load_model_for_use
from model_foundry.model_folder import load_tokenizer


def pipeline_predictions(folder: Path, text: str, top_k: int) -> list[list[tuple[str, float]]]:
    """transformers' fill-mask pipeline on the same folder, as [[(token, score)] per mask]."""
    fill = transformers.pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cpu")
    out = fill(text, top_k=top_k)
    per_mask = out if isinstance(out[0], list) else [out]
    return [[(p["token_str"].strip(), p["score"]) for p in mask] for mask in per_mask]


def assert_same(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> None:
    assert [[t for t, _ in m] for m in got] == [[t for t, _ in m] for m in expected]
    for g, e in zip(got, expected, strict=True):
        assert [s for _, s in g] == pytest.approx([s for _, s in e], abs=1e-5)


@pytest.fixture(scope="module")
def scratch_bert(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from localhub.repos import BERT

    tok = load_tokenizer(hub_repos[BERT])
    adapter = tiny_scratch("bert", vocab_size=len(tok))
    adapter.tokenizer = tok
    folder = tmp_path_factory.mktemp("bert") / "bert"
    adapter.save_checkpoint(folder, {"model_name": "bert"})
    return folder


@pytest.mark.parametrize("family", ["hf-bert", "hf-roberta"])
def test_hub_masked_lms_fill_masks_as_the_pipeline_does(
    family: str, hub_folder: Callable[[str], Path]
) -> None:
    folder = hub_folder(family)
    adapter = load_model_for_use(folder)
    mask = adapter.tokenizer.mask_token
    text = f"the cat sat on the {mask} and the {mask} ran."
    got = fill_mask(adapter, text, top_k=4)
    assert len(got) == 2 and all(len(m) == 4 for m in got)
    assert all(1 >= m[0][1] >= m[1][1] >= 0 for m in got)
    assert_same(got, pipeline_predictions(folder, text, 4))


def test_scratch_bert_fills_masks(scratch_bert: Path) -> None:
    assert is_masked_model(scratch_bert)
    adapter = load_model_for_use(scratch_bert)
    got = fill_mask(adapter, "hello [MASK] world", top_k=3)
    assert len(got) == 1 and len(got[0]) == 3
    assert_same(got, pipeline_predictions(scratch_bert, "hello [MASK] world", 3))


def test_masked_lms_are_refused_for_generation_and_need_a_mask(scratch_bert: Path) -> None:
    with pytest.raises(FoundryError, match="masked language model"):
        load_causal_model(scratch_bert)
    adapter = load_model_for_use(scratch_bert)
    with pytest.raises(FoundryError, match=r"no \[MASK\]"):
        fill_mask(adapter, "no mask here", 3)
    with pytest.raises(FoundryError, match="top_k = 0"):
        fill_mask(adapter, "a [MASK]", 0)
    with pytest.raises(FoundryError, match="The text is not valid UTF-8 text: character 3"):
        fill_mask(adapter, "a \udcff [MASK]", 3)  # a byte that is not UTF-8, as Python reads it from argv
