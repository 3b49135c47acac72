"""A small real project for the registry tests: git + DVC, one imported-style model and two experiments.

- `models/base`: a tiny real GPT (saved by the production adapter), tracked by `dvc add` (models/base.dvc),
  as `foundry import-model` tracks imports;
- a DVC pipeline (dvc.yaml below) whose `derive` stage writes `models/${name}` from models/base (weights
  moved by a seed, metadata naming the parent and its DVC md5, as the train stage writes it) and whose
  `score` stage writes metrics.json from that folder;
- `dvc exp run --name exp-a -S name=child-a`, then `--name exp-b -S name=child-b`: child-b is in the
  workspace, child-a lives on only in exp-a and the DVC cache.
No MLflow store: the registry's MLflow reading is tested with one in test_mlflow_runs.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from conftest import run_cmd

DVC_YAML = {
    "stages": {
        "derive": {
            "cmd": "python derive.py models/base models/${name} ${seed}",
            "deps": ["derive.py", "models/base"],
            "params": ["name", "seed"],
            "outs": [{"models/${name}": {"persist": True}}],
        },
        "score": {
            "cmd": "python score.py models/${name} metrics.json",
            "deps": ["score.py", "models/${name}"],
            "outs": [{"metrics.json": {"cache": False}}],
        },
    }
}

DERIVE = '''"""models/<name> from models/base: weights moved by a seed, metadata naming the parent."""
import sys
from pathlib import Path

import torch

from model_foundry.adapters import get_spec
from model_foundry.model_folder import model_metadata, parent_record

base, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
spec = get_spec("gpt")
adapter = spec.adapter_cls().load_checkpoint(base, spec)
torch.manual_seed(seed)
with torch.no_grad():
    for p in adapter.model.parameters():
        p.add_(0.01 * torch.randn_like(p))
meta = model_metadata(out.name, "gpt", "scratch", base_model=base.name, parent=parent_record(base),
                      training={"method": "full", "objective": "causal_lm", "seed": seed})
adapter.save_checkpoint(out, meta)
'''

SCORE = '''"""metrics.json for a model folder: a number that depends on its weights (a stand-in)."""
import json
import sys
from pathlib import Path

from safetensors.numpy import load_file

weights = load_file(str(Path(sys.argv[1]) / "model.safetensors"))
total = float(sum(abs(v).sum() for v in weights.values()))
Path(sys.argv[2]).write_text(json.dumps({"perplexity": 10 + total % 7, "val_loss": 2.0 + total % 1}))
'''


def build_base(folder: Path, block_size: int = 16) -> None:
    """A tiny real GPT model folder (weights, tokenizer, metadata) saved by the production adapter, with a
    context of `block_size` tokens."""
    import torch

    from model_foundry.adapters import get_spec
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.model_folder import model_metadata

    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(100)]
    tok = train_tokenizer("bpe", texts, 300, "causal_lm")
    spec = get_spec("gpt")
    cls = spec.adapter_cls()
    config = spec.config_cls(n_layer=1, n_head=2, n_embd=16, block_size=block_size, vocab_size=len(tok))
    torch.manual_seed(0)
    adapter = cls.build(config, spec)
    adapter.tokenizer = tok
    adapter.save_checkpoint(folder, model_metadata(folder.name, "gpt", "scratch"))


def make_registry_repo(root: Path) -> Path:
    """The project described in the module docstring, at `root` (about 20 s on 2 cores)."""
    root.mkdir(parents=True)
    run_cmd(["git", "init", "-q"], root)
    run_cmd(["git", "config", "user.email", "tests@example.com"], root)
    run_cmd(["git", "config", "user.name", "tests"], root)
    run_cmd(["dvc", "init", "-q"], root)
    run_cmd(["dvc", "config", "core.autostage", "true"], root)
    build_base(root / "models" / "base")
    run_cmd(["dvc", "add", "-q", "models/base"], root)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "params.yaml").write_text("name: child-0\nseed: 0\n")
    (root / "derive.py").write_text(DERIVE)
    (root / "score.py").write_text(SCORE)
    (root / ".gitignore").write_text("/mlflow.db\n/.foundry-cache\n")
    run_cmd(["git", "add", "-A"], root)
    run_cmd(["git", "commit", "-qm", "base model and pipeline"], root)
    run_cmd(["dvc", "exp", "run", "-q", "--name", "exp-a", "-S", "name=child-a", "-S", "seed=1"], root)
    run_cmd(["dvc", "exp", "run", "-q", "--name", "exp-b", "-S", "name=child-b", "-S", "seed=2"], root)
    return root


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of a built registry repo (git, DVC cache and workspace), for tests that change it."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
