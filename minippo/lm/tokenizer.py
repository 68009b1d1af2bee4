"""A character-level tokenizer with distinct PAD, BOS and EOS tokens (chapter 6).

One token per character keeps every step of RLHF inspectable: a response is a string, and the
action at step ``t`` is its ``t``-th character.  Three special tokens come first:

* ``PAD`` (0) fills unused positions.  It is never generated and never attended to.
* ``BOS`` (1) starts every prompt, so the first real character has something to condition on.
* ``EOS`` (2) ends a response.  It is an *action*: the policy chooses to stop, the sequence-level
  score is attached to it, and everything after it is masked.

PAD is deliberately not EOS.  Hugging Face models often reuse EOS as the padding token; then a
mask built from ``tokens != pad_id`` also hides the real EOS, and the policy never learns to stop
(TRL issues on "model never generates EOS").  Keeping them distinct makes that bug impossible.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["CharTokenizer", "DEFAULT_CHARS"]

#: Newline plus printable ASCII (space to tilde): enough for Python one-liners.
DEFAULT_CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
    """Map characters to ids ``3, 4, ...``; ids 0, 1, 2 are PAD, BOS, EOS.

    ``encode("ab")`` gives ``[3 + chars.index("a"), 3 + chars.index("b")]``; ``bos=True`` and
    ``eos=True`` add the special tokens.  ``decode`` drops PAD and BOS and stops at the first EOS.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    specials = ("<pad>", "<bos>", "<eos>")

    def __init__(self, chars: str = DEFAULT_CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat a character")
        self.chars = chars
        self._id = {c: i + len(self.specials) for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        """V: the special tokens plus one id per character."""
        return len(self.specials) + len(self.chars)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text``; raises ``ValueError`` naming the first character it cannot encode."""
        try:
            ids = [self._id[c] for c in text]
        except KeyError as e:
            raise ValueError(f"text contains {e.args[0]!r}, which is not in the tokenizer's chars") from None
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids``: PAD and BOS are skipped, and decoding stops at the first EOS."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids must be token ids in [0, {self.vocab_size}), got {i!r}")
            if i == self.eos_id:
                break
            if i >= len(self.specials):
                out.append(self.chars[i - len(self.specials)])
        return "".join(out)

    def token_str(self, i: int) -> str:
        """A printable name for one id (``<eos>``, ``'\\n'``, ``'a'``), for tables in the book."""
        return self.specials[i] if i < len(self.specials) else repr(self.chars[i - len(self.specials)])

    def pad_left(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad id lists to one length: ``(ids (B, P) long, mask (B, P) bool)``.

        Prompts are padded on the left so that every response starts in the same column, which
        lets a whole batch be generated one column at a time.
        """
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)  # (B, P)
        for b, s in enumerate(seqs):
            if len(s):
                ids[b, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        return ids, ids != self.pad_id

    def pad_right(self, seqs: Sequence[Sequence[int]],
                  width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad id lists to ``width`` (default: the longest): ``(ids (B, R), mask (B, R))``."""
        width = max(len(s) for s in seqs) if width is None else width
        if any(len(s) > width for s in seqs):
            raise ValueError(f"a sequence is longer than width={width}")
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)  # (B, R)
        for b, s in enumerate(seqs):
            if len(s):
                ids[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        return ids, ids != self.pad_id

