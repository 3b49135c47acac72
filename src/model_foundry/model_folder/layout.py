"""The file names of the canonical model folder `models/<name>/` (README: "The model folder").

Hugging Face families keep Hugging Face's own layout, so `AutoModel*.from_pretrained(models/<name>)` works;
the scratch `gpt` and `bert` save in the GPT-2 / BERT layouts for the same reason.
"""

from __future__ import annotations

CONFIG_NAME = (
    "config.json"  # rebuilds the model: `architecture` + its parameters (HF keys where a class exists)
)
WEIGHTS_NAME = "model.safetensors"  # or shards listed in SAFE_INDEX
SAFE_INDEX = "model.safetensors.index.json"
METADATA_NAME = "metadata.json"  # where the model came from (format, source, parent, sha256 per weight file)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")
# Licence texts copied unchanged into every model derived from a folder (licence terms travel with weights).
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "NOTICE", "USE_POLICY.md")
# metadata.json keys a trained or fine-tuned copy inherits from the model it was loaded from.
INHERITED_METADATA = ("license", "license_file", "license_acknowledgment", "model_id", "revision", "load")
# metadata.json `format`: bumped when its meaning changes (1: format and parent added, Model Foundry issue 9).
METADATA_FORMAT = 1
