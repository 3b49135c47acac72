"""BERT and RoBERTa masked LMs imported from the Hub."""

from __future__ import annotations

from model_foundry.adapters.hf_config import HFFamily
from model_foundry.adapters.hf_masked import HFMaskedAdapter


class HFBertAdapter(HFMaskedAdapter):
    family = HFFamily(
        model_classes={"bert": "BertForMaskedLM"},
        tied_keys=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
    )


class HFRobertaAdapter(HFMaskedAdapter):
    family = HFFamily(
        model_classes={"roberta": "RobertaForMaskedLM"},
        tied_keys=("lm_head.decoder.weight", "lm_head.decoder.bias"),
        context_offset=2,  # positions start after padding_idx (514 embeddings → 512 tokens)
    )
