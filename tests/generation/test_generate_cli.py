"""`foundry generate`: a model by name or path, --json, --prompts-file, --stream, --stop, fill-mask, and the
errors of an unknown name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import VENV_BIN, run_cmd
from generation.generation_helpers import tiny_scratch
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, Engine, Request
from model_foundry.generation.cli_support import read_prompts, resolve_model
from model_foundry.model_folder import load_tokenizer

FOUNDRY = str(VENV_BIN / "foundry")
GREEDY_FLAGS = ["--temperature", "0", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def project(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder (.dvc/, git) with models/gpt-tiny (scratch gpt, byte-level BPE) and models/bert-tiny,
    and models/ghost.dvc: a model recorded but not checked out."""
    from localhub.repos import BERT, GPT2

    root = tmp_path_factory.mktemp("project")
    (root / ".dvc").mkdir()
    run_cmd(["git", "init", "-q"], root)
    for arch, repo, name in (("gpt", GPT2, "gpt-tiny"), ("bert", BERT, "bert-tiny")):
        tok = load_tokenizer(hub_repos[repo])
        adapter = tiny_scratch(arch, vocab_size=len(tok))
        adapter.tokenizer = tok
        adapter.save_checkpoint(root / "models" / name, {"model_name": name})
    (root / "models/ghost.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n"
        "  size: 10\n  nfiles: 2\n  hash: md5\n  path: ghost\n"
    )
    return root


def foundry(args: list[str], cwd: Path) -> tuple[int, str, str]:
    proc = run_cmd([FOUNDRY, "generate", *args], cwd, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def expected_text(project: Path, prompt: str, n: int = 12, stop: tuple[str, ...] = ()) -> str:
    engine = Engine.from_folder(project / "models/gpt-tiny")
    return prompt + engine.complete(Request(engine.encode_prompt(prompt), n, GREEDY, stop)).text


def test_by_name_by_path_and_by_option_print_the_same(project: Path) -> None:
    expected = expected_text(project, "Hello there")
    outputs = [
        foundry(["gpt-tiny", "--prompt", "Hello there", *GREEDY_FLAGS], project),
        foundry(["models/gpt-tiny", "--prompt", "Hello there", *GREEDY_FLAGS], project),
        foundry(["--model", "models/gpt-tiny", "--prompt", "Hello there", *GREEDY_FLAGS], project),
        foundry(["gpt-tiny", "--prompt", "Hello there", "--stream", *GREEDY_FLAGS], project),
    ]
    for rc, out, err in outputs:
        assert rc == 0, err
        assert out == expected + "\n"
        assert "note:" not in err  # within the context: nothing to say


def test_json_lines_for_a_prompts_file_with_stop_strings(project: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\r\n\nOnce upon a time\n", encoding="utf-8")
    free = expected_text(project, "Once upon a time")[len("Once upon a time") :]
    stop = free[3:5]
    rc, out, err = foundry(
        [
            "gpt-tiny",
            "--prompts-file",
            str(prompts),
            "--json",
            "--stop",
            stop,
            "--stop",
            "\u2603",
            *GREEDY_FLAGS,
        ],
        project,
    )
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in records] == ["Hello there", "Once upon a time"]
    last = records[1]
    assert last["text"] == free[: free.index(stop)] and last["finish_reason"] == "stop"
    usage = last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 12


def test_a_masked_lm_prints_its_fill_mask_predictions(project: Path) -> None:
    rc, out, err = foundry(["bert-tiny", "--prompt", "hello [MASK] world", "--top", "3"], project)
    assert rc == 0, err
    assert out.startswith("mask 1: ") and out.count(",") == 2
    rc, out, err = foundry(["bert-tiny", "--prompt", "[MASK] and [MASK]", "--json"], project)
    assert rc == 0, err
    masks = json.loads(out)["masks"]
    assert len(masks) == 2 and len(masks[0]) == 5 and {"token", "score"} == set(masks[0][0])


def test_an_unknown_name_is_refused_with_close_names(project: Path) -> None:
    rc, out, err = foundry(["gpt-tiyn", "--prompt", "x"], project)
    assert rc == 2 and "error: No model called 'gpt-tiyn'" in err and "hint: Did you mean gpt-tiny" in err
    assert "Traceback" not in err and out == ""
    rc, _, err = foundry(["ghost", "--prompt", "x"], project)
    assert rc == 2 and "models/ghost is not checked out here" in err and "dvc remote add" in err  # no cache
    rc, _, err = foundry(["gpt-tiny", "--prompt", "x", "--top-p", "1.5"], project)
    assert rc == 2 and "top_p = 1.5" in err


def test_resolve_model_and_read_prompts(project: Path, tmp_path: Path) -> None:
    assert resolve_model("gpt-tiny", None, project) == project / "models/gpt-tiny"
    assert resolve_model(None, Path("x/y"), project) == Path("x/y")
    with pytest.raises(FoundryError, match="Which model"):
        resolve_model(None, None, project)
    with pytest.raises(FoundryError, match="Two models"):
        resolve_model("a", Path("b"), project)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(FoundryError, match="no prompts"):
        read_prompts("", empty)
    with pytest.raises(FoundryError, match="Both"):
        read_prompts("hi", empty)
    shutil.copy(empty, tmp_path / "bad.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(FoundryError, match="Cannot read"):
        read_prompts("", tmp_path / "bad.txt")
    with pytest.raises(FoundryError, match="nosuch.txt does not exist") as e:
        read_prompts("", tmp_path / "nosuch.txt")
    assert "Check the path" in str(e.value.hint)


def test_several_plain_answers_are_marked_and_stream_json_is_refused(project: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\nThe cat\n")
    rc, out, err = foundry(["gpt-tiny", "--prompts-file", str(prompts), *GREEDY_FLAGS], project)
    assert rc == 0, err
    first, second = expected_text(project, "Hello"), expected_text(project, "The cat")
    assert out == f"=== prompt 1/2 ===\n{first}\n\n=== prompt 2/2 ===\n{second}\n"
    rc, _, err = foundry(["gpt-tiny", "--prompt", "Hi", "--stream", "--json"], project)
    assert rc == 2 and "--stream and --json" in err and "hint:" in err


def test_options_that_do_not_apply_to_the_model_are_refused(project: Path) -> None:
    """--top to a causal LM, sampling/--stop/--stream to a masked LM: exit 2 before loading, not ignored."""
    rc, out, err = foundry(["gpt-tiny", "--prompt", "Hello", "--top", "3"], project)
    assert rc == 2 and out == "", err
    assert "error: --top is a masked-LM option" in err and "models/gpt-tiny is a causal language model" in err
    assert "hint: Drop --top" in err
    rc, out, err = foundry(["gpt-tiny", "--prompt", "Hello", "--top", "5"], project)  # the old default too
    assert rc == 2 and "error: --top" in err
    rc, out, err = foundry(
        ["bert-tiny", "--prompt", "hello [MASK]", "--temperature", "0.5", "--stop", "x", "--stream"], project
    )
    assert rc == 2 and out == "", err
    assert "error: --temperature, --stop and --stream do not apply to a masked language model" in err
    assert "hint: Drop --temperature, --stop and --stream" in err
    rc, out, err = foundry(["bert-tiny", "--prompt", "hello [MASK]", "--top-k", "0"], project)
    assert rc == 2 and "error: --top-k does not apply" in err


def test_past_the_context_is_said_not_silent(project: Path, tmp_path: Path) -> None:
    """Prompts whose new tokens pass the model's context still generate (the model reads a sliding window),
    and stderr says so for each (within the context nothing is said: test_by_name_…)."""
    context = Engine.from_folder(project / "models/gpt-tiny").max_context
    assert context is not None
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n" + "Hello " * context + "\n", encoding="utf-8")
    code, out, err = foundry(["gpt-tiny", "--prompts-file", str(prompts), "--temperature", "0",
                              "--max-new-tokens", str(context + 4)], project)  # fmt: skip
    assert code == 0 and "=== prompt 2/2 ===" in out
    assert re.search(
        rf"note: prompt 1 \(\d+ tokens\) \+ up to {context + 4} new tokens pass the model's context of "
        rf"{context}: past it, the model reads only the last {context}",
        err,
    )
    assert "note: prompt 2 is" in err and f"the model reads only its last {context}" in err


def test_text_that_is_not_utf8_and_an_empty_stop_are_refused(project: Path) -> None:
    """A byte that is not UTF-8 on the command line (Python reads it as a lone surrogate) is an error naming
    the prompt, not a tokenizer traceback; `--stop ''` would end every answer at once."""
    not_utf8 = b"ab\xffcd".decode("utf-8", "surrogateescape")  # as Python reads such a byte from argv
    proc = run_cmd(
        [FOUNDRY, "generate", "gpt-tiny", "--prompt", not_utf8, *GREEDY_FLAGS], project, check=False
    )
    assert proc.returncode == 2 and "error: The prompt is not valid UTF-8 text" in proc.stderr
    assert "Traceback" not in proc.stderr
    code, _, err = foundry(["gpt-tiny", "--prompt", "Hi", "--stop", "", *GREEDY_FLAGS], project)
    assert code == 2 and "--stop '' is an empty string" in err
