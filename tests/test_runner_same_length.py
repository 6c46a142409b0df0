"""`same_length_batches`: only prompts of one token length share a batch (no padding)."""
from __future__ import annotations

from llava.eval.model_vqa_loader import build_parser, settings_from_args
from llava.eval.runner import _batches


def test_same_length_batches_never_mix_lengths():
    ids = [[0] * n for n in (5, 7, 5, 7, 7, 9, 5, 5, 5)]
    items = list(range(len(ids)))
    padded = _batches(items, ids, 4)
    assert padded == [[5, 1, 3, 4], [0, 2, 6, 7], [8]]  # longest first, lengths mixed in the first batch
    same = _batches(items, ids, 4, same_length=True)
    assert same == [[5], [1, 3, 4], [0, 2, 6, 7], [8]]
    assert all(len({len(ids[i]) for i in b}) == 1 for b in same)
    assert sorted(i for b in same for i in b) == items
    assert _batches(items, ids, 1, same_length=True) == [[i] for i in items]  # batch size 1: file order


def test_cli_flag_reaches_the_settings():
    args = build_parser().parse_args(["--question-file", "q", "--image-folder", "i", "--model-path", "m",
                                      "--answers-file", "a", "--batch-size", "8", "--same-length-batches"])
    settings = settings_from_args(args, 16, 0.0)
    assert settings.batch_size == 8 and settings.same_length_batches
    args = build_parser().parse_args(["--question-file", "q", "--image-folder", "i", "--model-path", "m",
                                      "--answers-file", "a"])
    assert not settings_from_args(args, 16, 0.0).same_length_batches
