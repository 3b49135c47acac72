"""`train.gradient_checkpointing`: the same loss and gradients with less activation memory (gpt, Hub
families); refused with the reason where an architecture has no blocks to checkpoint (the RNNs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.base import BaseAdapter
from model_foundry.errors import FoundryError
from model_foundry.model_folder import load_adapter
from model_foundry.schema import build


def scratch(name: str) -> Callable[[], BaseAdapter]:
    spec = ARCHITECTURES[name]

    def make() -> BaseAdapter:
        config = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": 64}, name)
        torch.manual_seed(0)
        return spec.adapter_cls().build(config, spec)

    return make


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from localhub.repos import FAMILY_FIXTURES, SPECS, build_repo
    from model_foundry.hub import QuietReporter, import_model

    src = tmp_path_factory.mktemp("qwen2-src") / "tiny-qwen2"
    build_repo(SPECS[FAMILY_FIXTURES["hf-qwen2"]], src)
    result = import_model(str(src), tmp_path_factory.mktemp("m"), name="q", accept_license=True,
                          reporter=QuietReporter())  # fmt: skip
    return Path(result.path)


def first_mlp(adapter: BaseAdapter) -> torch.nn.Module:
    """The MLP inside the first block: when the block is checkpointed, backward runs it again."""
    model = adapter.model
    return (model.transformer.h[0] if adapter.spec.name == "gpt" else model.model.layers[0]).mlp


def loss_and_grads(adapter: BaseAdapter) -> tuple[float, dict[str, torch.Tensor], int]:
    """One forward + backward: (loss, gradients, how often the first block's MLP ran)."""
    calls = []
    block = first_mlp(adapter)
    forward = block.forward

    def counted(*args: Any, **kwargs: Any) -> Any:  # (a forward hook would miss the recomputation)
        calls.append(1)
        return forward(*args, **kwargs)

    block.forward = counted
    adapter.model.train()
    x = torch.randint(5, 60, (2, 16), generator=torch.Generator().manual_seed(1))
    loss = adapter(x[:, :-1], x[:, 1:]).loss
    assert loss is not None
    loss.backward()
    grads = {n: p.grad.clone() for n, p in adapter.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, len(calls)


@pytest.mark.parametrize("name", ["gpt", "hf-qwen2"])
def test_same_loss_and_gradients(name: str, request: pytest.FixtureRequest) -> None:
    if name == "gpt":
        make = scratch("gpt")
    else:
        folder = request.getfixturevalue("qwen_folder")

        def make() -> BaseAdapter:
            return load_adapter(folder)

    plain_loss, plain, plain_calls = loss_and_grads(make())
    adapter = make()
    adapter.enable_gradient_checkpointing()
    loss, grads, calls = loss_and_grads(adapter)
    assert (plain_calls, calls) == (1, 2)  # checkpointed: the block runs again in backward
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    assert grads.keys() == plain.keys() and len(grads) > 0
    for key, grad in grads.items():
        torch.testing.assert_close(grad, plain[key], rtol=1e-5, atol=1e-6)


def test_recurrent_models_refuse_it() -> None:
    with pytest.raises(FoundryError, match="gradient_checkpointing is not available for lstm"):
        scratch("lstm")().enable_gradient_checkpointing()
