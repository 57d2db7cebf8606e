"""Prompt tokenizers that need no model hub.

* ``ByteTokenizer`` (tiny/mini presets): UTF-8 bytes shifted past PaliGemma's special ids; the project
  builds it and saves it as JSON beside the weights.
* ``SentencePieceTokenizer`` (pi0 preset): PaliGemma's SentencePiece model, given by path.

Both follow PI0's convention: BOS, the prompt with a trailing newline, right-padded (pad id 0) or
truncated to ``max_len`` tokens, plus a boolean attention mask.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

from cfgrl.errors import CfgrlError

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
BYTE_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
TOKENIZER_SCHEMA_VERSION = 1


def _pad(rows: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), max_len), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), max_len), dtype=torch.bool)
    for i, row in enumerate(rows):
        if len(row) > max_len:
            warnings.warn(f"a prompt of {len(row)} tokens is cut to the policy's max_token_len {max_len}", stacklevel=3)
        row = row[:max_len]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


class ByteTokenizer:
    """Token id = byte value + 3; ids 0/1/2 are pad/eos/bos as in PaliGemma."""

    offset = 3
    vocab_size = 256 + offset

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [[BOS_ID] + [b + self.offset for b in (p + "\n").encode("utf-8")] for p in prompts]
        return _pad(rows, self.max_len)

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


class SentencePieceTokenizer:
    def __init__(self, model_path: Path, max_len: int) -> None:
        import sentencepiece

        self.path = Path(model_path)
        if not self.path.is_file():
            raise CfgrlError(f"PaliGemma tokenizer model {self.path} does not exist")
        self.max_len = max_len
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [[BOS_ID] + self._sp.encode(p + "\n") for p in prompts]
        return _pad(rows, self.max_len)

    def save(self, directory: Path) -> None:
        target = Path(directory) / SENTENCEPIECE_FILE
        if target.resolve() != self.path.resolve():
            shutil.copyfile(self.path, target)


Tokenizer = ByteTokenizer | SentencePieceTokenizer


def make_tokenizer(kind: str, max_len: int, directory: Path | None = None, path: str | Path | None = None) -> Tokenizer:
    """The tokenizer of a policy: an explicit ``path`` wins, then one saved in ``directory``."""
    if kind == "byte":
        saved = Path(directory) / BYTE_TOKENIZER_FILE if directory is not None else None
        return ByteTokenizer.load(saved) if saved is not None and saved.is_file() else ByteTokenizer(max_len)
    if path is None and directory is not None and (Path(directory) / SENTENCEPIECE_FILE).is_file():
        path = Path(directory) / SENTENCEPIECE_FILE
    if path is None:
        raise CfgrlError(
            "the pi0 policy needs the PaliGemma SentencePiece tokenizer: pass --tokenizer PATH "
            "(or set policy.tokenizer), or put tokenizer.model in the checkpoint directory"
        )
    return SentencePieceTokenizer(Path(path), max_len)
