"""`foundry chat`: an interactive conversation with a model folder, over the generation engine.

    session = ChatSession(Path("models/qwen-chat"), ChatSettings(temperature=0.7))
    session.run()                     # prompt at once; the model loads in a background thread

Threads: the main thread reads the terminal (and gets Ctrl-C); one worker thread imports torch and
transformers, loads the model, then answers the queued messages one at a time, streaming each answer to the
terminal as the engine produces it. A message typed while the model loads waits in the queue and is answered
once it is ready. This module imports nothing heavy: torch comes in with the worker, after the prompt.

The end of the input (Ctrl-D, or the end of piped messages) waits for the model and the queued messages: a
load that fails is then reported (error + hint, exit 2) with the number of messages left unanswered (and of
the queued /save and /reset commands not run) and why, the same as a failure that interrupts the prompt.

A message whose answer fails (an error from the engine) is reported and the chat goes on. When the input is
not a terminal (piped messages), the session still ends in an error (exit 2) once the input is done if any
message failed, so a script sees it; at a terminal, /exit and Ctrl-D leave with exit 0.

The conversation (`Conversation`) holds the answered turns: user, assistant, user, ... after an optional
system message. An answer stopped with Ctrl-C is kept as far as it went (what the user saw).
"""

from __future__ import annotations

import math
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.generation.engine import Engine

PROMPT = "you> "
HELP = """commands:
  /reset       forget the conversation (the system message stays)
  /save FILE   write the conversation to FILE as JSON
  /help        this list
  /exit        leave (or Ctrl-D: the queued messages are answered first)
Ctrl-C stops the answer being written; anything else is a message to the model."""


@dataclass(frozen=True)
class ChatSettings:
    """How answers are generated: at most `max_new_tokens` tokens each, sampled at `temperature` (0: greedy)
    among the `top_k` likeliest tokens (0: all) within `top_p` probability (1: all), from `seed` (every
    answer starts from it, so a conversation replays the same). A sampling setting left None takes the
    model's own (generation_config.json, as transformers reads it). `verify` checks the weights' sha256."""

    max_new_tokens: int = 256
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    system: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        """The checks of SamplingParams, made here so a bad value fails before the prompt (and torch)."""
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise FoundryError(
                f"--temperature {self.temperature} must be a finite number, 0 (greedy) or more.",
                "Use 0 for greedy decoding, or e.g. 0.7-1.0 for sampling.",
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise FoundryError(f"--top-p {self.top_p} must be in (0, 1].", "Use 1 to sample from all tokens.")
        if self.max_new_tokens < 1 or (self.top_k is not None and self.top_k < 0):
            raise FoundryError("--max-new-tokens must be 1 or more and --top-k 0 or more.")


@dataclass
class Conversation:
    """The messages so far: an optional system message, then answered user/assistant turns."""

    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        """[{role, content}] as chat templates read them; `user` appends a new user message."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user}] if user is not None else []
        return head + [dict(t) for t in self.turns] + tail

    def to_json(self, model: str, settings: ChatSettings) -> dict[str, Any]:
        """The `/save` document: {"model", "messages", "settings"}."""
        return {
            "model": model,
            "messages": self.messages(),
            "settings": {
                "max_new_tokens": settings.max_new_tokens,
                "temperature": settings.temperature,
                "top_k": settings.top_k,
                "top_p": settings.top_p,
                "seed": settings.seed,
            },
        }


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"}


def shown(text: str) -> str:
    """Model text as written to the terminal: control characters (an escape sequence a model happens to
    generate) as `\\xNN`, so they cannot move the cursor or recolour the screen. The history keeps them."""
    return text.translate(_CONTROL)


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it (models/x), else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class Job:
    """One queued message (or /reset or /save typed after queued messages: `command`); `done` is set once it
    is answered (or dropped), `reason` says how it ended: "stop", "length", "cancelled", "dropped", "error"
    or "done" (a command)."""

    text: str
    attached: bool  # the main thread waits for it (else the answer is printed above the prompt)
    command: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None


class Console:
    """Writes to the terminal from either thread; output of the worker while the main thread sits at the
    prompt clears the prompt line first and redraws it (with what the user has typed) afterwards."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.lock = threading.RLock()
        self.at_prompt = False  # the main thread is reading a line
        self.streaming = False  # an answer is being written above the prompt: leave the line alone
        self.tty = out.isatty()
        self.prompt = PROMPT  # "" when the input is not a terminal (piped messages)

    def _typed(self) -> str:
        if "readline" not in sys.modules:
            return ""
        import readline

        return str(readline.get_line_buffer())

    def begin(self) -> None:
        """Start writing above the prompt (call with the lock held)."""
        if self.at_prompt and not self.streaming:
            self.out.write("\r\x1b[K" if self.tty else "\n")

    def end(self) -> None:
        """Done writing above the prompt: redraw it (call with the lock held)."""
        if self.at_prompt and not self.streaming:
            self.out.write(self.prompt + self._typed())
        self.out.flush()

    def note(self, text: str, err: bool = True) -> None:
        """A whole line (a status, an error) from either thread."""
        with self.lock:
            self.begin()
            self.out.flush()
            stream = self.err if err else self.out
            stream.write(text + "\n")
            stream.flush()
            self.end()


class ChatSession:
    """A conversation with the model folder `path` (see the module docstring).

    `out`/`err`: where answers and notes go (the terminal). `run` is the REPL; `start`, `submit`, `cancel`,
    `reset` and `save` are its parts (the tests drive them directly).
    """

    def __init__(
        self, path: Path, settings: ChatSettings, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.path = path
        self.label = display_path(path)
        self.settings = settings
        self.console = Console(out or sys.stdout, err or sys.stderr)
        self.conversation = Conversation(settings.system)
        self.history_lock = threading.Lock()  # guards conversation.turns
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.pending: list[Job] = []  # queued messages and commands not yet done (the main thread's view)
        self.ready = threading.Event()
        self.failed = threading.Event()
        self.error: BaseException | None = None
        self.step = "starting"
        self.cancelled = threading.Event()  # stop the answer being written
        self.current: Job | None = None  # the job being answered
        self.go = threading.Event()  # the prompt is on screen: loading may take the CPU
        self.engine: Engine | None = None
        self.loaded_in = 0.0
        self.asked = 0  # messages submitted
        self.failures = 0  # messages whose answer failed (reason "error")
        self._main = threading.get_ident()
        self._repl = False  # run() is reading the terminal in the main thread
        self._worker = threading.Thread(target=self._work, name="chat-model", daemon=True)

    # ------------------------------------------------------------------------------------------ worker

    def start(self) -> None:
        """Print the loading status and start the worker (it loads once `go` is set: the REPL sets it as
        it shows the prompt)."""
        self.console.note(f"loading {self.label} … (type away: messages wait for the model; /help)")
        self._worker.start()

    def _work(self) -> None:
        self.go.wait(timeout=1.0)
        try:
            self._load()
        except BaseException as e:  # reported by the main thread: error + hint, exit 2
            self.error = e
            self.failed.set()
            self._drop_all()
            with self.console.lock:  # the main thread polls `failed` everywhere but at its prompt
                if self._repl and self.console.at_prompt:
                    signal.pthread_kill(self._main, signal.SIGINT)  # wakes it out of the prompt
            return
        self.ready.set()
        while True:
            job = self.jobs.get()
            self.current = job  # from here on, commands typed meanwhile queue behind it
            if job.command:
                self._run_command(job.text)
                job.reason, self.current = "done", None
                job.done.set()
            else:
                self._answer(job)

    def _load(self) -> None:
        started = time.perf_counter()
        self.step = "importing torch and transformers"
        from model_foundry.generation.chat import chat_template
        from model_foundry.generation.engine import Engine

        self.step = "reading the weights"
        engine = Engine.from_folder(self.path, verify=self.settings.verify)
        adapter = engine.adapter
        self.step = "checking the chat template"
        try:
            chat_template(adapter)
        except FoundryError as e:
            raise FoundryError(
                f"{self.label}: {e.message}",
                f"{e.hint} (`foundry generate {self.generate_name()} --prompt TEXT` continues plain text)",
            ) from None
        self.engine = engine
        self.loaded_in = time.perf_counter() - started
        params = sum(p.numel() for p in adapter.model.parameters())
        self.console.note(
            f"ready: {self.label} ({adapter.spec.name}, {params / 1e6:.2f}M parameters, "
            f"loaded in {self.loaded_in:.1f} s)"
        )

    def generate_name(self) -> str:
        """How `foundry generate` names this model: `<name>` for models/<name>, else the folder."""
        return self.path.name if self.label == f"models/{self.path.name}" else self.label

    def failure_reason(self) -> str:
        """Why the model cannot answer, for the "not answered" note (the error itself follows it)."""
        if self.step == "checking the chat template":
            return "the model cannot chat"
        if self.step == "reading the weights":
            return "the model failed to load"
        return f"{self.step} failed"

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation's ids; the oldest turns are left out (never the system message or the new user
        message) while it would not leave `max_new_tokens` within the model's context."""
        assert self.engine is not None
        ids = self.engine.encode_chat(messages)
        limit = self.engine.max_context
        budget = None if limit is None else limit - self.settings.max_new_tokens
        head = 1 if self.conversation.system else 0
        dropped = 0
        while budget is not None and len(ids) > budget and len(messages) - head > 1:
            del messages[head : head + 2]  # the oldest user message and its answer
            dropped += 2
            ids = self.engine.encode_chat(messages)
        if dropped:
            self.console.note(f"(the {dropped} oldest messages are left out: the model reads {limit} tokens)")
        return ids

    def _answer(self, job: Job) -> None:
        """Stream the answer of one message, add the turn to the conversation."""
        from model_foundry.generation.engine import Request

        assert self.engine is not None
        s = self.settings
        self.current, job.reason = job, None
        self.cancelled.clear()
        text = ""
        console = self.console
        try:
            with self.history_lock:
                messages = self.conversation.messages(job.text)
            params = self.engine.resolve({"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p})
            request = Request(self._prompt_ids(messages), s.max_new_tokens, params, seed=s.seed)
            with console.lock:
                if not job.attached:  # the user may be typing: show which message this answers
                    console.begin()
                    console.out.write(f"{console.prompt}{shown(job.text)}\n")
                    console.streaming = True
                console.out.flush()
            for delta in self.engine.stream(request):
                if self.cancelled.is_set():
                    job.reason = "cancelled"
                    break
                if delta.text:
                    console.out.write(shown(delta.text))
                    console.out.flush()
                    text += delta.text
                job.reason = delta.finish_reason or job.reason
            with console.lock:
                console.out.write(" [stopped]\n" if job.reason == "cancelled" else "\n")
                if not job.attached:
                    console.streaming = False
                    console.end()
                console.out.flush()
            with self.history_lock:
                self.conversation.turns += [
                    {"role": "user", "content": job.text},
                    {"role": "assistant", "content": text},
                ]
        except Exception as e:  # e.g. non-finite logits (FoundryError): this answer fails, the REPL goes on
            job.reason = "error"
            self.failures += 1
            with console.lock:
                console.streaming = False
            if isinstance(e, FoundryError):
                console.note(f"\nerror: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""))
            else:
                console.note(f"\nerror: the answer failed: {type(e).__name__}: {e}")
        finally:
            self.current = None
            job.done.set()

    def _drop_all(self) -> None:
        """Forget the queued messages (not the one being answered)."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            job.reason = "dropped"
            job.done.set()

    # ------------------------------------------------------------------------------------------ commands

    def submit(self, text: str, attached: bool = True) -> Job:
        """Queue a message; answered at once when the model is ready, else once it is."""
        job = Job(text, attached and self.ready.is_set())
        self.asked += 1
        self._queue(job)
        if not self.ready.is_set():
            self.console.note(f"(queued: the model is loading — {self.step})")
        return job

    def _queue(self, job: Job) -> None:
        kept = [j for j in self.pending if not j.done.is_set() or j.reason == "dropped"]  # not the answered
        self.pending = kept + [job]
        self.jobs.put(job)

    def unanswered(self) -> int:
        """How many messages were queued but not answered (dropped when loading failed)."""
        return sum(1 for j in self.pending if not j.command and j.reason in (None, "dropped"))

    def not_run(self) -> list[str]:
        """The names of the queued commands (/save, /reset) not run (dropped when loading failed)."""
        return [j.text.split()[0] for j in self.pending if j.command and j.reason in (None, "dropped")]

    def cancel(self) -> bool:
        """Stop the answer being written (it keeps what was written); True when there was one."""
        if self.current is None:
            return False
        self.cancelled.set()
        return True

    def reset(self) -> None:
        """Forget the answered turns; the system message stays."""
        with self.history_lock:
            self.conversation.turns.clear()

    def save(self, file: str) -> tuple[Path, int]:
        """Write the conversation (answered turns) to `file` as JSON, atomically; (path, messages written).
        Raises FoundryError for a missing name, a folder given as the file, a folder that does not exist (it
        is not created) or one that cannot be written."""
        from model_foundry.io import write_json

        if not file:
            raise FoundryError("/save needs a file name.", "E.g. /save chat.json")
        path = Path(file).expanduser()
        if path.is_dir():
            raise FoundryError(
                f"/save needs a file path: {file} is a folder.", f"E.g. /save {path / 'chat.json'}"
            )
        if not path.parent.is_dir():
            what = "is not a folder" if path.parent.exists() else "does not exist"
            raise FoundryError(
                f"/save {file}: the folder {path.parent} {what}.",
                "Save into an existing folder: /save does not create folders.",
            )
        with self.history_lock:
            data = self.conversation.to_json(self.label, self.settings)
        write_json(path, data)
        return path, len(data["messages"])

    # ------------------------------------------------------------------------------------------ the REPL

    def run(self, read: Callable[[str], str] = input) -> None:
        """The REPL: until /exit or end of input. Raises the loading error (FoundryError: exit 2), and, when
        the input is piped, a FoundryError at the end when any message failed."""
        piped = False
        if read is input:
            if hasattr(sys.stdin, "reconfigure"):  # a line that is not UTF-8 fails as a message, not the REPL
                sys.stdin.reconfigure(errors="surrogateescape")
            if sys.stdin.isatty():
                import readline  # noqa: F401  (line editing and history for input())
            else:
                piped = True
                self.console.prompt = ""  # piped messages: no prompts between the answers
        self._main, self._repl = threading.get_ident(), True
        self.start()
        self._loop(read)
        if piped and self.failures:
            n, plural = self.failures, "s" if self.asked > 1 else ""
            raise FoundryError(
                f"{n} of {self.asked} message{plural} failed (the errors above say why).",
                "The chat went on with the others; fix or drop the failing messages and run it again.",
            )

    def _loop(self, read: Callable[[str], str]) -> None:
        """Read and handle lines until /exit or the end of the input (see `run`)."""
        while True:
            try:
                if self._step(read):
                    return
            except KeyboardInterrupt:
                if self.failed.is_set():
                    with self.console.lock:  # leave the prompt's line
                        self.console.out.write("\r\x1b[K" if self.console.tty else "\n")
                    self._fail()
                self._interrupt()
            except EOFError:  # Ctrl-D or the end of piped input: answer what is queued, then leave
                with self.console.lock:
                    self.console.at_prompt = False
                    self.console.out.write("\n")
                    self.console.out.flush()
                try:
                    self._finish_queue()
                except KeyboardInterrupt:  # Ctrl-C while waiting: leave now
                    if not self.failed.is_set():
                        self.cancel()
                        return
                if self.failed.is_set():
                    self._fail()
                return

    def _fail(self) -> NoReturn:
        """Report the loading failure: how many messages it left unanswered, then raise its error."""
        self.console.out.flush()
        self._worker.join(timeout=5.0)  # it has dropped the queued messages
        self._drop_all()  # any queued after it did
        n, commands = self.unanswered(), self.not_run()
        parts = [f"{n} message{'s' if n > 1 else ''} not answered"] if n else []
        if commands:
            parts.append(f"{', '.join(commands)} not run")
        if parts:
            self.console.note(f"({' and '.join(parts)}: {self.failure_reason()})")
        assert self.error is not None
        raise self.error

    def _step(self, read: Callable[[str], str]) -> bool:
        """Read and handle one line; True to leave."""
        with self.console.lock:
            self.console.at_prompt = True
            self.go.set()
        try:
            line = read(self.console.prompt)
        finally:
            with self.console.lock:
                self.console.at_prompt = False
        text = line.strip()
        if self.failed.is_set():
            if text and not text.startswith("/"):  # typed before the failure was shown: count it
                self.pending.append(Job(line, attached=False, reason="dropped"))
            elif text.split()[0:1] in (["/save"], ["/reset"]):
                self.pending.append(Job(text, attached=False, command=True, reason="dropped"))
            raise KeyboardInterrupt  # reported by run()
        if not text:
            return False
        if text.startswith("/"):
            return self._command(text)
        job = self.submit(line.rstrip("\n"))
        if job.attached:
            self._wait(job)
        return False

    def _command(self, text: str) -> bool:
        name, _, arg = text.partition(" ")
        if name in ("/exit", "/quit"):
            self._drop_all()
            self.cancel()
            return True
        if name in ("/reset", "/save") and (not self.jobs.empty() or self.current is not None):
            self._queue(Job(text, attached=False, command=True))  # in order, after the queued messages
            self.console.note(f"({name} runs after the queued messages)")
        elif name in ("/reset", "/save", "/help"):
            self._run_command(text)
        else:
            self.console.note(f"error: unknown command {name}\n  hint: /help lists the commands.")
        return False

    def _run_command(self, text: str) -> None:
        """/reset, /save FILE or /help (in the main thread, or in the worker after queued messages)."""
        name, _, arg = text.partition(" ")
        if name == "/reset":
            self.reset()
            self.console.note("(conversation cleared)")
        elif name == "/save":
            try:
                path, n = self.save(arg.strip())
                self.console.note(f"(saved {n} messages to {path})")
            except FoundryError as e:
                self.console.note(f"error: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""))
            except Exception as e:  # not the end of the chat (nor of the worker running it)
                self.console.note(f"error: /save failed: {type(e).__name__}: {e}")
        elif name == "/help":
            self.console.note(HELP, err=False)

    def _wait(self, job: Job) -> None:
        while not job.done.wait(0.1):
            if self.failed.is_set():
                raise KeyboardInterrupt

    def _interrupt(self) -> None:
        """Ctrl-C: stop the answer being written, else just a fresh prompt."""
        job = self.current
        if self.cancel() and job is not None:
            job.done.wait(5.0)
        else:
            with self.console.lock:
                self.console.out.write("\n")
                self.console.out.flush()

    def _finish_queue(self) -> None:
        """Wait until the model is loaded and every queued message answered, or loading failed."""
        if not self.ready.is_set() and self.console.prompt:  # Ctrl-D at a terminal
            self.console.note(f"(waiting for the model — {self.step}; Ctrl-C leaves now)")
        self.go.set()
        while not self.failed.is_set() and not (
            self.ready.is_set() and all(j.done.is_set() for j in self.pending)
        ):
            time.sleep(0.05)
