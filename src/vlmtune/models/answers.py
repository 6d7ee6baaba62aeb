"""Generated token ids as the answer's text, for evaluation, ``predict``, the server and GRPO's rewards.

Decoding with ``skip_special_tokens`` would drop every special token, the ones an answer is made of too (Qwen2-VL
writes its boxes between ``<|box_start|>`` and ``<|box_end|>``, InternVL between ``<box>`` and ``</box>``), and
its boxes could no longer be read. An :class:`AnswerText` drops the special tokens except the family's
:attr:`~vlmtune.models.spec.FamilySpec.answer_tokens`: what ``decode(ids, skip_special_tokens=False)`` gives,
less the end of turn, padding and the template's other control tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class AnswerText:
    """Decodes answers with ``tokenizer``, keeping the special tokens named in ``keep``."""

    def __init__(self, tokenizer: Any, keep: Iterable[str] = ()):
        added = tokenizer.added_tokens_decoder
        special = set(tokenizer.all_special_ids) | {i for i, token in added.items() if token.special}
        keep = set(keep)
        kept = {i for i, token in added.items() if token.content in keep}
        self.tokenizer, self.dropped = tokenizer, frozenset(special - kept)

    def __call__(self, ids: Sequence[int]) -> str:
        """The text of one answer's token ids."""
        return self.tokenizer.decode([i for i in ids if i not in self.dropped], skip_special_tokens=False)
