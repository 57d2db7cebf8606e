"""Prompts and the tokenizers that need no model hub.

A ``Prompt`` is the text the model reads and where its task text lies (what prefix dropout drops):
* PI0 (``pi0_prompt``): the task with a trailing newline;
* π0.5 (``pi05_prompt``), as lerobot 0.6.1 and openpi write it: with the state,
  ``"Task: {task}, State: {b_1 ... b_n};\nAction: "`` where b_i are the 256-bin integers of the state
  normalised to [-1, 1] (``discretize_state``); without it, the task and a newline. The task is
  stripped, ``_`` and newlines become spaces. Its state text may never be cut.

In ``text`` condition mode a labelled prompt carries the label as text, RECAP's way (``ADVANTAGE_TEXT``):
PI0 ``"{task}\nAdvantage: positive"`` (negative for o = 0), i.e. the advantage line after the plain
prompt; π0.5 the same line before ``"Action: "`` (after the state text; without state, after the plain
prompt as PI0). ∅ is the plain prompt itself. The advantage text may never be cut either.

Tokenizers:
* ``ByteTokenizer`` (tiny/mini presets): UTF-8 bytes shifted past PaliGemma's special ids; the project
  builds it and saves it as JSON beside the weights.
* ``SentencePieceTokenizer`` (pi0/pi05 presets): PaliGemma's SentencePiece model, given by path.

Both write BOS and the prompt's text, right-padded (pad id 0) or truncated to ``max_len`` tokens, with a
boolean attention mask and the mask of the task text's tokens.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cfgrl.errors import CfgrlError

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
BYTE_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
TOKENIZER_SCHEMA_VERSION = 1


STATE_BINS = 256


@dataclass(frozen=True)
class Prompt:
    text: str  # what follows BOS
    task: tuple[int, int]  # character span of the task text
    must_keep: str = ""  # what cutting the text would cut (state / advantage text); empty: it may be cut


# The label as text in ``text`` condition mode, keyed by cfgrl.optimality.Label (∅ has none: the plain prompt).
ADVANTAGE_TEXT = {1: "Advantage: positive", 0: "Advantage: negative"}


def _kept(*parts: str) -> str:
    return " and ".join(part for part in parts if part)


def pi0_prompt(task: str, label: int | None = None) -> Prompt:
    """PI0's prompt; ``label`` (1 or 0, text condition mode) appends its advantage line, None or ∅ (-1) nothing."""
    advantage = ADVANTAGE_TEXT.get(label)
    if advantage is None:
        return Prompt(task + "\n", (0, len(task)))
    return Prompt(f"{task}\n{advantage}", (0, len(task)), must_keep="advantage text")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """(B, D) states normalised to [-1, 1] -> 256-bin integers, as openpi's tokenizer (out of range: -1 or 255)."""
    return np.digitize(state, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1


def pi05_prompt(task: str, state_bins: np.ndarray | None, label: int | None = None) -> Prompt:
    """π0.5's prompt of one sample; ``state_bins`` (D,) from ``discretize_state``, or None (no state input);
    ``label`` (1 or 0, text condition mode) adds its advantage line before "Action: ", None or ∅ (-1) nothing."""
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    advantage = ADVANTAGE_TEXT.get(label)
    keep = "advantage text" if advantage is not None else ""
    if state_bins is None:
        return Prompt(f"{cleaned}\n{advantage or ''}", (0, len(cleaned)), must_keep=keep)
    head = "Task: "
    state = " ".join(map(str, state_bins.tolist()))
    line = f"{advantage}\n" if advantage is not None else ""
    return Prompt(f"{head}{cleaned}, State: {state};\n{line}Action: ", (len(head), len(head) + len(cleaned)),
                  must_keep=_kept("state text", keep))


def _byte_span(text: str, span: tuple[int, int]) -> tuple[int, int]:
    return len(text[: span[0]].encode("utf-8")), len(text[: span[1]].encode("utf-8"))


def _pad(rows: list[list[tuple[int, bool]]], prompts: list[Prompt], max_len: int,
         warned: set[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of (token id, is task text) -> ids, attention mask, task mask, each (B, max_len).

    A cut task is warned about once per tokenizer (``warned`` holds the tasks already named): training
    tokenizes the same few prompts in every batch, and Python's own once-per-location filter forgets
    what it showed whenever the warning filters change, which repeated the warning every epoch."""
    ids = torch.full((len(rows), max_len), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), max_len), dtype=torch.bool)
    task = torch.zeros((len(rows), max_len), dtype=torch.bool)
    for i, (row, prompt) in enumerate(zip(rows, prompts)):
        if len(row) > max_len:
            if prompt.must_keep:
                raise CfgrlError(f"a prompt of {len(row)} tokens does not fit the policy's max_token_len {max_len}: cutting it would "
                                 f"cut its {prompt.must_keep}; load the policy with a larger max_token_len or shorten the task ({prompt.text!r})")
            task_text = prompt.text[prompt.task[0]: prompt.task[1]]
            if task_text not in warned:
                warned.add(task_text)
                warnings.warn(f"a prompt of {len(row)} tokens is cut to the policy's max_token_len {max_len}: {task_text!r}", stacklevel=3)
        row = row[:max_len]
        ids[i, : len(row)] = torch.tensor([token for token, _ in row], dtype=torch.long)
        mask[i, : len(row)] = True
        task[i, : len(row)] = torch.tensor([is_task for _, is_task in row], dtype=torch.bool)
    return ids, mask, task


class _PaddedTokenizer:
    """What both tokenizers share: each prompt's ``_row`` padded or cut to ``max_len`` (``_pad``)."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self._cut_tasks: set[str] = set()

    def __call__(self, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _pad([self._row(p) for p in prompts], prompts, self.max_len, self._cut_tasks)

    def _row(self, prompt: Prompt) -> list[tuple[int, bool]]:
        raise NotImplementedError


class ByteTokenizer(_PaddedTokenizer):
    """Token id = byte value + 3; ids 0/1/2 are pad/eos/bos as in PaliGemma."""

    offset = 3
    vocab_size = 256 + offset

    def _row(self, prompt: Prompt) -> list[tuple[int, bool]]:
        start, end = _byte_span(prompt.text, prompt.task)
        return [(BOS_ID, False)] + [(b + self.offset, start <= j < end) for j, b in enumerate(prompt.text.encode("utf-8"))]

    def save(self, directory: Path) -> None:
        data = {"schema_version": TOKENIZER_SCHEMA_VERSION, "type": "byte", "offset": self.offset, "max_len": self.max_len}
        (Path(directory) / BYTE_TOKENIZER_FILE).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> "ByteTokenizer":
        data = json.loads(Path(path).read_text())
        if data.get("schema_version") != TOKENIZER_SCHEMA_VERSION or data.get("type") != "byte":
            raise CfgrlError(f"{path}: not a cfgrl byte tokenizer of schema version {TOKENIZER_SCHEMA_VERSION}")
        if data.get("offset") != cls.offset:
            raise CfgrlError(f"{path}: byte tokenizer offset {data.get('offset')} is not supported (expected {cls.offset})")
        return cls(int(data["max_len"]))


class SentencePieceTokenizer(_PaddedTokenizer):
    def __init__(self, model_path: Path, max_len: int) -> None:
        import sentencepiece

        self.path = Path(model_path)
        if not self.path.is_file():
            raise CfgrlError(f"PaliGemma tokenizer model {self.path} does not exist")
        super().__init__(max_len)
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))

    def _row(self, prompt: Prompt) -> list[tuple[int, bool]]:
        """A piece is task text when its bytes overlap the task's (a piece spanning the boundary counts)."""
        start, end = _byte_span(prompt.text, prompt.task)
        pieces = self._sp.encode(prompt.text, out_type="proto").pieces
        return [(BOS_ID, False)] + [(piece.id, piece.begin < end and piece.end > start) for piece in pieces]

    def save(self, directory: Path) -> None:
        target = Path(directory) / SENTENCEPIECE_FILE
        if target.resolve() != self.path.resolve():
            shutil.copyfile(self.path, target)


Tokenizer = ByteTokenizer | SentencePieceTokenizer


def make_tokenizer(kind: str, max_len: int, directory: Path | None = None, path: str | Path | None = None) -> Tokenizer:
    """The tokenizer of a policy: an explicit ``path`` wins, then one saved in ``directory``."""
    if kind == "byte":
        saved = Path(directory) / BYTE_TOKENIZER_FILE if directory is not None else None
        tokenizer = ByteTokenizer.load(saved) if saved is not None and saved.is_file() else ByteTokenizer(max_len)
        tokenizer.max_len = max_len  # the config's length wins: policy.max_token_len may lengthen a checkpoint's prompts
        return tokenizer
    if path is None and directory is not None and (Path(directory) / SENTENCEPIECE_FILE).is_file():
        path = Path(directory) / SENTENCEPIECE_FILE
    if path is None:
        raise CfgrlError(
            "a pi0 / pi05 preset policy needs the PaliGemma SentencePiece tokenizer: pass --tokenizer PATH "
            "(or set policy.tokenizer), or put tokenizer.model in the checkpoint directory"
        )
    return SentencePieceTokenizer(Path(path), max_len)
