"""Every setting a stage reads is one of its dvc.yaml `params:`, so changing it re-runs the stage, and every
declared param is read (a stale one would re-run the stage for nothing).

The reads are observed, not guessed: each stage's `run` function runs, for real, on a tiny scratch GPT (causal
LM), a tiny scratch BERT (masked LM: its own branches read other settings) and a tiny Qwen2 imported from the
local Hub (the imported-model branches), with a Params whose sections record every field read. How a read
maps to params.yaml keys:
- `params.<section>.<field>` → `<section>.<field>`; for the sections an entry may override (tokenizer, train,
  evaluate) also `models.${model_name}.<section>.<field>`, where the entry's own value wins;
- `params.model` (the selected catalog entry) → `models.${model_name}`; `params.model_name` and the entry's
  `name` → `model_name`.
A declared `<section>` covers all its fields and `models.${model_name}` the whole entry. `params.flat()` is
not a read: it only logs every setting to MLflow, a side channel like the run's tags. The `inputs` stage runs
on every `dvc repro` (always_changed) and declares no params.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, tiny_params
from localhub.repos import QWEN2
from model_foundry.adapters import get_spec
from model_foundry.config import OVERRIDABLE, SECTIONS, Params, parse_params
from model_foundry.stages import convert, evaluate, ingest, tokenize, train

ENTRY = "models.${model_name}"
TOP_LEVEL = {"model_name": "model_name", "model": ENTRY, "catalog": "models", "shadowed": "shadowed"}
MODELS = ("gpt-tiny", "bert-wordpiece-mlm", "tiny-qwen2")  # scratch causal, scratch masked, imported
PAIRS = [{"prompt": f"Add {i} and {i}: ", "completion": f"{2 * i}."} for i in range(40)]  # fine-tuning data
IMPORTED = {"architecture": "hf-qwen2", "source": QWEN2, "license_accepted": True}  # from the local Hub
STAGES = ("import", "convert", "tokenize", "train", "evaluate")


class Recorder:
    """The params.yaml keys read through the Params that `wrap` returns."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self._paused = False

    def add(self, key: str) -> None:
        if not self._paused:
            self.keys.add(key)

    def field(self, section: str, name: str) -> None:
        self.add(f"{section}.{name}")
        if section in OVERRIDABLE:
            self.add(f"{ENTRY}.{section}.{name}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused, before = True, self._paused
        try:
            yield
        finally:
            self._paused = before

    def wrap(self, params: Params) -> Params:
        """A copy of `params` (still a Params, its sections still their dataclasses) that records reads."""
        unmapped = {f.name for f in dataclasses.fields(Params)} - set(TOP_LEVEL) - set(SECTIONS)
        assert not unmapped, f"new Params fields {unmapped}: add the params.yaml key each stands for"
        recorder = self

        class RecordingParams(Params):
            def __getattribute__(self, name: str) -> Any:
                if name in TOP_LEVEL:
                    recorder.add(TOP_LEVEL[name])
                return super().__getattribute__(name)

            def flat(self) -> dict[str, Any]:  # every setting, logged to MLflow: not an input of outputs
                with recorder.paused():
                    return super().flat()

        sections = {
            section: _recording(getattr(params, section), lambda name, s=section: self.field(s, name))
            for section in SECTIONS
        }
        entry = _recording(params.model, lambda name: self.add("model_name" if name == "name" else ENTRY))
        return _copy_as(RecordingParams, {**vars(params), **sections, "model": entry})


def _recording(obj: Any, on_read: Callable[[str], None]) -> Any:
    """A copy of dataclass instance `obj` that calls `on_read(field)` on every read of a field."""
    fields = {f.name for f in dataclasses.fields(obj)}

    class Recording(type(obj)):
        def __getattribute__(self, name: str) -> Any:
            if name in fields:
                on_read(name)
            return super().__getattribute__(name)

    return _copy_as(Recording, vars(obj))


def _copy_as(cls: type, state: dict[str, Any]) -> Any:
    obj = object.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _params(name: str, data_source: Path | None = None) -> Params:
    raw = tiny_params()
    raw["model_name"] = name
    if data_source is not None:
        raw["data"]["source"] = str(data_source)
    raw["models"].setdefault(name, dict(IMPORTED))
    entry = raw["models"][name]
    entry.update(getattr(get_spec(entry["architecture"]).config_cls, "TINY", {}))
    if "evaluate" in entry:
        entry["evaluate"]["pseudo_ppl_sequences"] = 2
    return parse_params(raw)


def _stage_runs(root: Path, name: str) -> dict[str, Callable[[Params], Any]]:
    """dvc.yaml stage → its `run` on the folders dvc.yaml gives it (under `root`), in pipeline order."""
    model, trained = root / "models" / name, root / "models" / f"{name}-trained"
    corpus, source, tokens = root / "data/corpus", root / "data/source", root / "data/tokenized"
    return {
        "import": lambda p: ingest.run(p, corpus, source),
        "convert": lambda p: convert.run(p, source, model),
        "tokenize": lambda p: tokenize.run(p, corpus, model, tokens),
        "train": lambda p: train.run(p, model, tokens, trained, root / "plots", root / "logs", False),
        "evaluate": lambda p: evaluate.run(p, trained, tokens, root / "metrics.json"),
    }


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory, hub_repos: Any) -> dict[str, set[str]]:
    """stage → the params keys its `run` read, over the MODELS pipelines and a scratch gpt fine-tuned on
    prompt/completion records (the packed-data branches of tokenize, train and evaluate)."""
    import json

    pairs = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    found: dict[str, set[str]] = {stage: set() for stage in STAGES}
    for name, data_source in [*((m, None) for m in MODELS), ("gpt-tiny", pairs)]:
        params = _params(name, data_source)
        for stage, run in _stage_runs(tmp_path_factory.mktemp(name), name).items():
            recorder = Recorder()
            run(recorder.wrap(params))
            found[stage] |= recorder.keys
    return found


def declared(stage: str) -> list[str]:
    entries = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("params", [])
    assert all(isinstance(e, str) for e in entries), "params from another file: teach this test about them"
    return entries


def _covers(declared_key: str, key: str) -> bool:
    return key == declared_key or key.startswith(declared_key + ".")


def test_every_stage_that_can_be_skipped_is_checked():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(_stage_runs(Path(), "m")) == list(STAGES)
    assert set(STAGES) == {name for name, stage in stages.items() if not stage.get("always_changed")}


def test_recording_sees_reads_and_keeps_types():
    recorder = Recorder()
    params = recorder.wrap(_params("gpt-tiny"))
    assert isinstance(params, Params) and dataclasses.is_dataclass(params.train)
    assert params.flat()["train.steps"] == 6 and recorder.keys == set()
    assert params.train.steps == 6 and params.model.architecture == "gpt" and params.data.seed
    assert recorder.keys == {"train.steps", f"{ENTRY}.train.steps", ENTRY, "data.seed"}
    assert params.model.name == "gpt-tiny" and "model_name" in recorder.keys


@pytest.mark.parametrize("stage", STAGES)
def test_every_setting_a_stage_reads_is_declared(reads, stage):
    missing = sorted(k for k in reads[stage] if not any(_covers(d, k) for d in declared(stage)))
    assert not missing, f"dvc.yaml stage {stage!r} reads these settings without declaring them: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_declared_param_is_read(reads, stage):
    unread = [d for d in declared(stage) if not any(_covers(d, k) for k in reads[stage])]
    assert not unread, f"dvc.yaml stage {stage!r} declares params it never reads: {unread}"
