"""REC / grounding: IoU > 0.5 with the ground-truth box (the box family: :mod:`llava.eval.scorers.grounding`).

``parse`` is the strict box parser (the official one is ``parse_box_official``); ``judge(box,
question)`` checks the IoU against the question's ``answer_bbox``.
"""

from llava.eval.scorers.grounding import is_hit as judge, parse_box_strict as parse, score_task as score  # noqa: F401
