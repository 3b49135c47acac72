"""`foundry chat`: the REPL driven through a pseudo-terminal (pexpect), and its session in-process.

Models: the local Hub's tiny Qwen2 (a real ChatML chat template) imported into `<project>/models/qwen-chat`
through the production importer; a tiny scratch GPT (no chat template, no family fallback); a tiny scratch
BERT (a masked LM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from conftest import VENV_BIN
from model_foundry.chat_repl import PROMPT, ChatSession, ChatSettings, shown
from model_foundry.errors import FoundryError
from model_foundry.registry.resolve import model_folder as resolve_model
from registry.registry_repo import build_base

FOUNDRY = str(VENV_BIN / "foundry")


def build_bert(folder: Path) -> None:
    """A tiny real BERT model folder (a masked LM) saved by the production adapter."""
    import torch

    from model_foundry.adapters import get_spec
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.model_folder import model_metadata

    tok = train_tokenizer("bpe", [f"the lazy dog {i}" for i in range(50)], 300, "masked_lm")
    spec = get_spec("bert")
    config = spec.config_cls(**{**spec.config_cls.TINY, "vocab_size": len(tok)})
    torch.manual_seed(0)
    adapter = spec.adapter_cls().build(config, spec)
    adapter.tokenizer = tok
    adapter.save_checkpoint(folder, model_metadata(folder.name, "bert", "scratch"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with models/qwen-chat (chat template), models/gpt-plain and models/bert-masked."""
    from localhub.repos import build_qwen2
    from model_foundry.hub import import_model
    from model_foundry.hub.report import QuietReporter

    root = tmp_path_factory.mktemp("chat-project")
    source = root / "qwen2-source"
    source.mkdir()
    build_qwen2(source)
    models = root / "models"
    import_model(str(source), models, name="qwen-chat", accept_license=True, reporter=QuietReporter())
    build_base(models / "gpt-plain")
    build_bert(models / "bert-masked")
    return root


def spawn(project: Path, *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        FOUNDRY, ["chat", *args], cwd=str(project), encoding="utf-8", timeout=60, dimensions=(40, 200)
    )


def test_chat_repl_in_a_terminal(project: Path) -> None:
    started = time.perf_counter()
    child = spawn(project, "qwen-chat", "--max-new-tokens", "12", "--temperature", "0")
    child.expect_exact("loading models/qwen-chat")
    child.expect_exact(PROMPT)
    to_prompt = time.perf_counter() - started
    print(f"spawn → prompt: {to_prompt:.2f} s")
    assert to_prompt < 3.0

    child.sendline("hello before ready")  # torch is not even imported yet: the message is queued
    child.expect_exact("(queued: the model is loading")
    child.expect_exact("ready: models/qwen-chat (hf-qwen2")
    child.expect_exact(f"{PROMPT}hello before ready\r\n")  # answered once ready, above a fresh prompt
    child.expect_exact(PROMPT)

    child.sendline("/save first.json")
    child.expect_exact("(saved 2 messages to first.json)")
    saved = json.loads((project / "first.json").read_text(encoding="utf-8"))
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][0]["content"] == "hello before ready"
    assert saved["model"] == "models/qwen-chat"
    assert saved["settings"]["max_new_tokens"] == 12

    child.sendline("and now?")  # the model is ready: answered in place, streamed
    child.expect_exact("and now?\r\n")
    child.expect_exact(PROMPT)
    written = child.before.replace("\r\n", "\n")  # what the terminal showed of the answer

    child.sendintr()  # Ctrl-C at an idle prompt: a fresh prompt, the REPL goes on
    child.expect_exact(PROMPT)
    child.sendline("/save second.json")
    child.expect_exact("(saved 4 messages to second.json)")
    turns = json.loads((project / "second.json").read_text(encoding="utf-8"))["messages"]
    assert [m["content"] for m in turns if m["role"] == "user"] == ["hello before ready", "and now?"]
    assert written == shown(turns[3]["content"]) + "\n"

    child.sendline("/reset")
    child.expect_exact("(conversation cleared)")
    child.sendline("/save third.json")
    child.expect_exact("(saved 0 messages to third.json)")
    assert json.loads((project / "third.json").read_text(encoding="utf-8"))["messages"] == []

    child.sendline("/nope")
    child.expect_exact("error: unknown command /nope")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_the_answer_and_keeps_the_repl(project: Path) -> None:
    # seed 5 answers this prompt with 399 tokens before its stop token (checked in-process): Ctrl-C comes
    # after the first characters, long before, on any machine
    child = spawn(project, "qwen-chat", "--max-new-tokens", "1000", "--temperature", "1", "--top-k", "0",
                  "--seed", "5")  # fmt: skip
    child.expect_exact("ready")
    child.expect_exact(PROMPT)
    child.sendline("go on and on")
    child.expect_exact("go on and on\r\n")
    child.expect(r"\S")  # the answer has started
    child.sendintr()
    child.expect_exact(" [stopped]")
    child.expect_exact(PROMPT)
    child.sendline("/save stopped.json")
    child.expect_exact("(saved 2 messages to stopped.json)")
    answer = json.loads((project / "stopped.json").read_text(encoding="utf-8"))["messages"][1]["content"]
    assert 0 < len(answer) < 836  # what was written before Ctrl-C; the whole answer is 836 characters
    child.sendeof()  # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("gpt-plain", "has no chat template"), ("bert-masked", "is a masked language model")],
)
def test_chat_refuses_models_that_cannot_chat(project: Path, name: str, expected: str) -> None:
    child = spawn(project, name)
    child.expect_exact(PROMPT)  # the prompt comes first; the refusal when the model is read
    child.expect_exact(f"error: models/{name}" if name == "gpt-plain" else "error:")
    child.expect_exact(expected)
    child.expect_exact("hint:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2


@pytest.mark.parametrize(
    ("script", "unanswered"),
    [
        ("", None),
        ("hi\n/save never.json\nthere\n", "2 messages not answered and /save not run"),
        ("hi\n/save never.json\n", "1 message not answered and /save not run"),
    ],
)
def test_end_of_input_before_a_failed_load_reports_it(
    project: Path, script: str, unanswered: str | None
) -> None:
    """The input ends before the model has failed to load: the failure is still reported (exit 2), with
    the number of messages it left unanswered, the queued /save it did not run, and why."""
    result = subprocess.run(
        [FOUNDRY, "chat", "models/gpt-plain"], input=script, cwd=project, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("error: models/gpt-plain: gpt has no chat template")
    assert lines[-1].startswith("  hint: ")
    assert "`foundry generate gpt-plain --prompt TEXT`" in lines[-1] and "--model" not in result.stderr
    if unanswered is None:
        assert "not answered" not in result.stderr
    else:
        assert lines[-3] == f"({unanswered}: the model cannot chat)"
    assert not (project / "never.json").exists()


def test_ctrl_d_before_a_failed_load_reports_it(project: Path) -> None:
    child = spawn(project, "gpt-plain")
    child.expect_exact(PROMPT)
    child.sendline("hello")  # queued; then Ctrl-D, most likely before the model has failed (either way)
    child.sendeof()
    child.expect_exact("(1 message not answered: the model cannot chat)")
    child.expect_exact("error: models/gpt-plain: gpt has no chat template")
    child.expect_exact("hint:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2


def test_end_of_input_after_a_good_load_exits_0(project: Path) -> None:
    """No message at all: the model is still loaded (a failure would be reported), then exit 0."""
    result = subprocess.run(
        [FOUNDRY, "chat", "models/qwen-chat"], input="", cwd=project, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ready: models/qwen-chat" in result.stderr and "error" not in result.stderr


def test_piped_messages_are_answered_in_order(project: Path) -> None:
    """Without a terminal: no prompts; /save and /reset wait for the messages before them; the end of the
    input answers what is queued, then exits 0."""
    script = "hi\n/save piped.json\n/reset\nbye\n/save piped-2.json\n"
    result = subprocess.run(
        [FOUNDRY, "chat", "models/qwen-chat", "--max-new-tokens", "6", "--system", "Be brief."],
        input=script, cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PROMPT not in result.stdout
    assert "(/save runs after the queued messages)" in result.stderr
    first = json.loads((project / "piped.json").read_text(encoding="utf-8"))["messages"]
    second = json.loads((project / "piped-2.json").read_text(encoding="utf-8"))["messages"]
    assert [(m["role"], m["content"]) for m in first[:2]] == [("system", "Be brief."), ("user", "hi")]
    assert len(first) == 3 and [m["content"] for m in second[:2]] == ["Be brief.", "bye"]
    assert len(second) == 3


def test_save_refuses_folders_and_missing_folders(project: Path, tmp_path: Path) -> None:
    """/save never creates folders, and a folder is not a file name; each refusal is an error line and the
    chat goes on (the next /save writes)."""
    (tmp_path / "a-file").write_text("x")
    missing = tmp_path / "nonexistent" / "dir"
    script = (
        f"hi\n/save {missing}/x.json\n/save {tmp_path}\n/save {tmp_path}/a-file/x.json\n"
        f"/save {tmp_path}/ok.json\n"
    )
    result = subprocess.run(
        [FOUNDRY, "chat", "qwen-chat", "--max-new-tokens", "4"], input=script, cwd=project,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert f"error: /save {missing}/x.json: the folder {missing} does not exist." in err
    assert "hint: Save into an existing folder: /save does not create folders." in err
    assert not (tmp_path / "nonexistent").exists()
    assert f"error: /save needs a file path: {tmp_path} is a folder." in err
    assert f"hint: E.g. /save {tmp_path}/chat.json" in err
    assert f"the folder {tmp_path}/a-file is not a folder." in err
    assert ".foundry-tmp" not in err and "option" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "ok.json"]
    saved = json.loads((tmp_path / "ok.json").read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant"]


def test_failed_messages_end_piped_input_with_exit_2(project: Path) -> None:
    """A message that fails (bytes that are not UTF-8) is an error, the chat goes on with the next; at the
    end of piped input the failures are counted and the exit is 2. Both with a UTF-8 locale
    (surrogateescape) and with strict decoding of standard input (the line still reaches the engine)."""
    script = b"ab\xffcd\nhello\nx\xfey\n/save after-failures.json\n"
    for env in ({}, {"PYTHONIOENCODING": "utf-8:strict"}):
        result = subprocess.run(
            [FOUNDRY, "chat", "qwen-chat", "--max-new-tokens", "4"], input=script, cwd=project,
            capture_output=True, timeout=120, env={**os.environ, **env},
        )  # fmt: skip
        err = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 2, err
        assert "Traceback" not in err
        assert err.count("\nerror: ") >= 2  # one error per failing message, before the summary
        lines = err.splitlines()
        assert lines[-2] == "error: 2 of 3 messages failed (the errors above say why)."
        assert lines[-1].startswith("  hint: ")
        saved = json.loads((project / "after-failures.json").read_text(encoding="utf-8"))["messages"]
        assert [(m["role"], m["content"]) for m in saved][:1] == [("user", "hello")]
        assert len(saved) == 2  # the failed messages are not turns


def test_a_failed_message_at_a_terminal_does_not_end_the_chat(project: Path) -> None:
    child = pexpect.spawn(
        FOUNDRY,
        ["chat", "qwen-chat", "--max-new-tokens", "4"],
        cwd=str(project),
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
        dimensions=(40, 200),
    )  # fmt: skip  (the terminal echoes the byte that is not UTF-8)
    child.expect_exact("ready")
    child.expect_exact(PROMPT)
    os.write(child.child_fd, b"ab\xffcd\r")  # not UTF-8: this message fails
    child.expect_exact("error: ")
    child.expect_exact(PROMPT)
    child.sendline("hello")
    child.expect_exact("hello\r\n")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0  # interactive: a failed message is not the session's failure
    assert "messages failed" not in (child.before or "")


class Recorder:
    """A terminal stand-in: keeps every write; `on_write` runs after each."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.on_write: Any = None

    def write(self, text: str) -> int:
        self.writes.append(text)
        if self.on_write is not None:
            self.on_write(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def loaded_session(project: Path, **settings: Any) -> tuple[ChatSession, Recorder]:
    out, err = Recorder(), Recorder()
    session = ChatSession(project / "models" / "qwen-chat", ChatSettings(**settings), out=out, err=err)
    session.start()
    session.go.set()
    assert session.ready.wait(60), session.error
    return session, out


def test_answers_stream_and_become_turns(project: Path) -> None:
    session, out = loaded_session(project, max_new_tokens=24, temperature=1.0, seed=1, system="Be brief.")
    first = len(out.writes)
    job = session.submit("hi")
    assert job.done.wait(30) and job.reason in ("stop", "length")
    pieces, end = out.writes[first:-1], out.writes[-1]  # the answer's deltas, then its line end
    assert end == "\n"
    turns = session.conversation.turns
    assert turns[0] == {"role": "user", "content": "hi"}
    assert "".join(pieces) == shown(turns[1]["content"])
    assert len(pieces) > 1  # written piece by piece as the tokens come, not all at the end
    assert session.conversation.messages()[0] == {"role": "system", "content": "Be brief."}

    # Ctrl-C's path: cancel after the first piece; what was written is kept as the answer
    out.on_write = lambda text: session.cancel()
    session.settings = ChatSettings(max_new_tokens=200, temperature=1.0, seed=3)
    job = session.submit("tell me more")
    assert job.done.wait(30) and job.reason == "cancelled"
    out.on_write = None
    assert out.writes[-1] == " [stopped]\n"
    assert len(session.conversation.turns) == 4
    assert len(session.conversation.turns[3]["content"]) < 200 * 20

    session.reset()
    assert session.conversation.turns == [] and session.conversation.system == "Be brief."


def test_resolve_model_names_and_paths(project: Path) -> None:
    assert resolve_model("qwen-chat", root=project) == project / "models" / "qwen-chat"
    assert resolve_model(str(project / "models" / "gpt-plain")) == project / "models" / "gpt-plain"
    with pytest.raises(FoundryError) as e:
        resolve_model("qwen-chta", root=project)
    assert "No model called 'qwen-chta'" in e.value.message and "qwen-chat" in (e.value.hint or "")
    with pytest.raises(FoundryError, match="does not exist"):
        resolve_model(str(project / "models" / "nothing-here"), root=project)
    with pytest.raises(FoundryError, match="temperature"):
        ChatSettings(temperature=float("nan"))


def test_prompt_does_not_wait_for_torch() -> None:
    """The modules `foundry chat` imports before its prompt import no torch or transformers."""
    code = (
        "import sys, model_foundry.cli, model_foundry.chat_repl;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
