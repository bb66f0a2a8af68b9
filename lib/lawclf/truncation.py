"""How a text longer than ``max_len`` tokens is cut: one rule for training, evaluation, export and serving.

A forum post usually asks its question last ("……请问我该怎么办？能起诉吗？"), so keeping only the
first ``max_len`` tokens (``head``) throws away the part that says what is being asked. ``head_tail``
keeps the first third and the last two thirds of the room (Sun et al., 2019, "How to Fine-Tune
BERT for Text Classification?": head + tail beat head-only and tail-only on long reviews).

Every tokenisation path applies :func:`truncate_ids` to the *untruncated* token ids (with
``[CLS]`` first and ``[SEP]`` last), so the PyTorch helpers (:mod:`lawclf.inference`,
:mod:`lawclf.export`) and the ONNX :class:`~lawclf.predict.Predictor` cut a text identically;
the strategy is recorded as ``truncation`` in ``lawclf_meta.json`` (absent = ``head``, the
behaviour of models trained before it existed). Torch-free.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

#: ``TrainConfig.truncation`` values.
TRUNCATIONS: tuple[str, ...] = ("head", "head_tail")
#: What a model without a recorded strategy was trained with.
LEGACY_TRUNCATION = "head"

T = TypeVar("T")


def head_room(max_len: int) -> int:
    """Content tokens ``head_tail`` keeps from the start: a third of the room between [CLS] and [SEP]."""
    return max(0, max_len - 2) // 3


def truncate_ids(ids: Sequence[T], max_len: int, strategy: str = LEGACY_TRUNCATION) -> list[T]:
    """``ids`` cut to at most ``max_len`` items, the first and last item (``[CLS]``, ``[SEP]``) always kept.

    ``head``: the first ``max_len - 2`` content tokens (what Hugging Face's ``truncation=True`` does).
    ``head_tail``: the first :func:`head_room` content tokens and the last ones that fill the rest.
    Works on any per-token list (``input_ids``, ``attention_mask``, ``token_type_ids``), so the three
    inputs of one text stay aligned.
    """
    if strategy not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {strategy!r}")
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2 ([CLS] and [SEP]), got {max_len}")
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    room = max_len - 2
    content = ids[1:-1]
    if strategy == "head":
        kept = content[:room]
    else:
        head = head_room(max_len)
        tail = room - head
        kept = content[:head] + (content[-tail:] if tail else [])
    return [ids[0], *kept, ids[-1]]


def check_truncation(value: object, source: str) -> str:
    """``value`` when it names a strategy; ``ValueError`` naming ``source`` otherwise."""
    if value not in TRUNCATIONS:
        raise ValueError(f"{source}: field 'truncation' must be one of {', '.join(TRUNCATIONS)}, got {value!r}")
    return str(value)


__all__ = ["TRUNCATIONS", "LEGACY_TRUNCATION", "head_room", "truncate_ids", "check_truncation"]
