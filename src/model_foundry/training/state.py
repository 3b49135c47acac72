"""Everything a training run changes, in one object that can be saved and restored exactly.

`TrainState` holds the model (its adapter), the optimizer, the step count, the random generator that draws the
batch order and the masking, torch's own generators (dropout), Python's and numpy's global generators,
the loss histories, the tokens seen, and the
per-step losses not yet logged. `training.loop.train` advances it; its hooks see it. `state_dict()` /
`load_state_dict()` turn it into tensors and plain values only (dicts, lists, str, int, float, bool, None), so
it saves with `torch.save` and loads with `torch.load(weights_only=True)` (or splits into safetensors + JSON):
no pickled objects. Training k steps, saving, loading into a fresh state (fresh model and optimizer, built
the same way) and training on gives bit-identical losses and weights to an uninterrupted run
(tests/training/test_state.py).

The shape follows torchtitan's checkpointing (`torchtitan/components/checkpointer/`: model, optimizer and a
`train_state` of step and tokens seen, each a `state_dict()`/`load_state_dict()` pair) and nanochat's
`checkpoint_manager.py` (model, optimizer and plain metadata saved side by side).

Under torchrun the batch/masking generator is the same on every rank, torch's global generators (dropout)
are each rank's own (`distributed.dropout_seed`), and a checkpoint holds every rank's ("rank_rng").

One generator serves both the batch order and the masking, as before this object existed: splitting it would
change every masked-LM model trained from a given seed (causal models do not draw from it while collating).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from model_foundry.errors import FoundryError
from model_foundry.training.optim import make_optimizer

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter
    from model_foundry.config import TrainConfig
    from model_foundry.training.device import Runtime

# state_dict()'s layout; bumped when a key changes meaning (issue 10's checkpoints record it).
# 2: "host_rng" (Python's `random` and numpy's global generator) added.
STATE_FORMAT = 2


@dataclass
class LossWindow:
    """Each step's loss (and gradient norm when clipping) since the last log, kept on the training device.

    `losses`, `norms`: (capacity,) float32 buffers, capacity = train.log_interval; `count` steps filled. The
    loop reads them back with the one host sync of a logging step (and checks them for NaN/Infinity then).
    """

    losses: torch.Tensor
    norms: torch.Tensor | None
    count: int = 0

    @classmethod
    def create(cls, capacity: int, clipping: bool, device: torch.device) -> LossWindow:
        norms = torch.zeros(capacity, device=device) if clipping else None
        return cls(torch.zeros(capacity, device=device), norms)

    def reset(self) -> None:
        self.losses.zero_()
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        """The filled part, on the CPU: {"losses": (count,) tensor, "norms": (count,) tensor or None}."""
        n = self.count
        return {
            "losses": self.losses[:n].detach().cpu().clone(),
            "norms": None if self.norms is None else self.norms[:n].detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put saved un-logged steps back; FoundryError when they do not fit this run's log_interval."""
        losses, norms = state["losses"], state["norms"]
        n = len(losses)
        if n >= len(self.losses) or (n and (norms is None) != (self.norms is None)):
            raise FoundryError(
                f"The saved training state has {n} un-logged step(s) "
                f"{'with' if norms is not None else 'without'} gradient norms; this run logs every "
                f"{len(self.losses)} step(s) {'with' if self.norms is not None else 'without'} clipping.",
                "Resume with the train.log_interval and train.grad_clip the state was saved with.",
            )
        self.reset()
        self.losses[:n] = losses.to(self.losses.device)
        if self.norms is not None and norms is not None:
            self.norms.zero_()
            self.norms[:n] = norms.to(self.norms.device)
        self.count = n


def _device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The accelerator's default generator state (dropout on the device), None on the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def _set_device_rng_state(device: torch.device, state: torch.Tensor | None) -> None:
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state.cpu(), device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state.cpu())


def host_rng_state() -> dict[str, Any]:
    """Python's `random` and numpy's global generator as plain data (lists, ints, floats, str, None).

    {"python": [version, [625 ints], gauss_next], "numpy": {"bit_generator", "state": {"key": [624 ints],
    "pos"}, "has_gauss", "gauss"}}: numpy's dict form (`get_state(legacy=False)`), not its legacy tuple with
    an ndarray inside, so `torch.load(weights_only=True)` and JSON both read it.
    """
    import random

    import numpy as np

    version, internal, gauss = random.getstate()
    state = np.random.get_state(legacy=False)
    numpy = {
        "bit_generator": str(state["bit_generator"]),
        "state": {"key": [int(k) for k in state["state"]["key"]], "pos": int(state["state"]["pos"])},
        "has_gauss": int(state["has_gauss"]),
        "gauss": float(state["gauss"]),
    }
    return {"python": [version, list(internal), gauss], "numpy": numpy}


def set_host_rng_state(state: dict[str, Any]) -> None:
    """Restore a `host_rng_state()` (Python's `random` and numpy's global generator)."""
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(i) for i in internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": saved["bit_generator"],
            "state": {"key": np.array(saved["state"]["key"], dtype=np.uint32), "pos": saved["state"]["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )


@dataclass
class TrainState:
    """What a training run changes, step by step (see the module docstring).

    `adapter`: the model being trained (its `model` may be wrapped, e.g. by LoRA or DDP, before `create`).
    `optimizer`: over the trainable parameters. `rng`: draws the batch windows and the masking.
    `step`: optimizer steps taken (the next step's 0-based index). `tokens`: training tokens seen.
    `train_history`: (step, mean loss since the previous log); `val_history`: (step, validation loss).
    `window`: losses of the steps since the last log, on the device. `device`: where the model trains.
    `parallel`: what the training forward calls under torchrun (`distributed.wrap`: a DistributedDataParallel
    around `adapter.model`, or the model itself sharded by FSDP); None in a single process.
    """

    adapter: BaseAdapter
    optimizer: torch.optim.Optimizer
    rng: torch.Generator
    window: LossWindow
    device: torch.device
    step: int = 0
    tokens: int = 0
    train_history: list[tuple[int, float]] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    parallel: Any = None

    @classmethod
    def create(cls, adapter: BaseAdapter, cfg: TrainConfig, runtime: Runtime) -> TrainState:
        """Step 0: the model moved to the runtime's device in train mode, a fresh AdamW
        (`optim.make_optimizer` with cfg's lr, weight decay and betas), the batch/masking generator seeded
        with `cfg.seed`, an empty loss window of `cfg.log_interval` steps. Under torchrun the model is wrapped
        for `cfg.strategy` first (`distributed.wrap`: DDP broadcasts rank 0's weights, FSDP shards them), and
        `batch_size` must divide by the world size (FoundryError otherwise); torch's global generators
        (dropout) are then reseeded per rank with `distributed.dropout_seed(cfg.seed, rank)`."""
        from model_foundry.training.distributed import dropout_seed, local_batch_size, wrap

        model = adapter.model.to(runtime.device)
        model.train()
        parallel = None
        if runtime.dist.enabled:
            local_batch_size(cfg.batch_size, runtime.dist.world_size)
            parallel = wrap(model, cfg.strategy, runtime.device)
            # each rank its own dropout masks; the batch draw (`rng`) stays shared
            torch.manual_seed(dropout_seed(cfg.seed, runtime.dist.rank))
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), runtime.device)
        return cls(
            adapter=adapter,
            optimizer=optimizer,
            rng=torch.Generator().manual_seed(cfg.seed),
            window=LossWindow.create(cfg.log_interval, cfg.grad_clip > 0, runtime.device),
            device=runtime.device,
            parallel=parallel,
        )

    def state_dict(self, rank_rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Tensors and plain values only (see the module docstring).

        {"format", "step", "tokens", "model" (the module's state_dict), "optimizer" (the optimizer's),
         "rng" (the batch/masking generator), "torch_rng" (torch's CPU generator), "device_rng" (the
         accelerator's, None on CPU), "host_rng" (Python's and numpy's global generators, as plain data:
         `host_rng_state`), "train_history"/"val_history" ([[step, loss], ...]), "pending" (the
         un-logged steps' losses and norms), "rank_rng" (`rank_rng`: under torchrun, every rank's
         {"torch_rng", "device_rng"} in rank order, from `rank_rng_states`; None otherwise)}. Model and
        optimizer tensors are the live ones, as with `nn.Module.state_dict`: save or copy them before
        training on.
        """
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "tokens": self.tokens,
            "model": self.adapter.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "device_rng": _device_rng_state(self.device),
            "host_rng": host_rng_state(),
            "train_history": [[step, loss] for step, loss in self.train_history],
            "val_history": [[step, loss] for step, loss in self.val_history],
            "pending": self.window.state_dict(),
            "rank_rng": rank_rng,
        }

    def rank_rng_states(self) -> list[dict[str, Any]] | None:
        """Every rank's dropout generators ({"torch_rng", "device_rng"}, rank order) on every rank: a
        collective under torchrun (every rank calls it); None in a single process."""
        from model_foundry.training.distributed import gather_objects

        return gather_objects(
            {"torch_rng": torch.get_rng_state(), "device_rng": _device_rng_state(self.device)}
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` into this state (a fresh one built the same way: same architecture and
        config, same train settings). Sets torch's global generators too, so dropout continues exactly.

        Under torchrun each rank takes its own dropout generators from "rank_rng" when the state was saved
        by as many ranks; saved by another number (or by one process), rank r reseeds them with
        `dropout_seed(saved seed, r, step)`: deterministic, but not the stream an uninterrupted run of this
        world size would have drawn. `"model": None` leaves the model and optimizer as they are.

        Raises FoundryError when the state is of another format or does not fit (keys, shapes, log window).
        """
        if state.get("format") != STATE_FORMAT:
            raise FoundryError(
                f"The saved training state has format {state.get('format')!r}, this version reads "
                f"{STATE_FORMAT}.",
                "Train from the start, or resume with the Model Foundry version that saved it.",
            )
        try:
            if state["model"] is not None:  # None: restored already (a sharded checkpoint, `checkpoint`)
                self.adapter.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise FoundryError(
                f"The saved training state does not fit this model: {' '.join(str(e).split())[:300]}",
                "Resume with the model folder and params the state was saved with.",
            ) from None
        self.window.load_state_dict(state["pending"])
        self.step = int(state["step"])
        self.tokens = int(state["tokens"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        _set_device_rng_state(self.device, state["device_rng"])
        self._load_rank_rng(state.get("rank_rng"))
        set_host_rng_state(state["host_rng"])
        self.train_history = [(int(s), float(v)) for s, v in state["train_history"]]
        self.val_history = [(int(s), float(v)) for s, v in state["val_history"]]

    def _load_rank_rng(self, saved: list[dict[str, Any]] | None) -> None:
        from model_foundry.training.distributed import current, dropout_seed

        job = current()
        if not job.enabled:
            return  # one process: "torch_rng" (rank 0's) is its stream
        if saved is not None and len(saved) == job.world_size:
            torch.set_rng_state(saved[job.rank]["torch_rng"])
            _set_device_rng_state(self.device, saved[job.rank]["device_rng"])
        else:
            torch.manual_seed(dropout_seed(torch.initial_seed(), job.rank, self.step))
