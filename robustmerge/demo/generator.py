"""A procedurally generated miniature of MM-MergeBench (deterministic by seed, drawn with PIL).

Every image is a small square scene (``image_size`` px, default 32) on a light background:
coloured shapes (6 colours x 4 shapes) or a three-letter word drawn in a built-in 3x5 pixel
font (no system font, so the pixels are the same on every machine). The tasks ask about these
scenes in the benchmark's formats (see :mod:`robustmerge.demo.tasks` for the scorer of each):

    seen    Colors      short-answer VQA, "red"                      exact match (VQAv2 rule)
            Shapes      classification with an option list           contains match (ImageNet rule)
            Count       counting, "3"                                exact match (IconQA / TabMWP rule)
            Locate      grounding, "[0.1, 0.2, 0.5, 0.6]"            IoU > 0.5 (Grounding rule)
            Read        reading a rendered word, "cat"               exact match (OCR-VQA rule)
            Choice      where is the object, option letter "B"       letter match (AOKVQA rule)
            Caption     "a red circle and a blue square"             CIDEr (caption metrics)
    unseen  ColorShape  "red circle": colour + shape in one answer   exact match
            CountColor  "how many red objects", "2": count + colour  exact match
            ReadChoice  which word is written, option letter         letter match

Each task gets ``train`` (LLaVA conversation format), ``val`` and ``test`` (MM-MergeBench
question format) splits; ``General`` is the base model's pre-training mixture: detailed
descriptions of every kind of scene and yes/no questions, in formats none of the tasks use.

Layout under ``root`` (the MM-MergeBench release's)::

    instructions/<Task>/train.json             [{id, image, conversations: [human, gpt]}]
    instructions/<Task>/{val,test}.json        [{question_id, image, text, answer, ...}]
    instructions/Caption/{val,test}_coco_type.json   caption ground truth (image ids 1..N)
    instructions/General/train.json            the pre-training mixture
    instructions/MultiTask/train.json          the union of the seen tasks' training sets
    datasets/<Task>/<split>_<i>.png            images (paths in the files are relative to datasets/)
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw

COLORS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 70, 215), "yellow": (225, 200, 35),
          "purple": (135, 55, 170), "orange": (235, 135, 25)}
SHAPES = ("circle", "square", "triangle", "diamond")
WORDS = ("cat", "dog", "sun", "box", "cup", "hat", "pen", "map")
#: the Shapes task names objects by class (as ImageNet does), not by the geometric words of the
#: general mixture: a ball is a circle, a tile a square, a tent a triangle, a kite a diamond
CLASS_NAMES = {"circle": "ball", "square": "tile", "triangle": "tent", "diamond": "kite"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
PHRASE = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
CAPTION = "What is happening in the image? Generate a brief caption for the image."
LETTERS = "ABCDEFGH"

# 3x5 glyphs (rows top to bottom, '#' = ink) of the letters in WORDS.
GLYPHS = {
    "a": (".#.", "#.#", "###", "#.#", "#.#"), "b": ("##.", "#.#", "##.", "#.#", "##."),
    "c": (".##", "#..", "#..", "#..", ".##"), "d": ("##.", "#.#", "#.#", "#.#", "##."),
    "e": ("###", "#..", "##.", "#..", "###"), "g": (".##", "#..", "#.#", "#.#", ".##"),
    "h": ("#.#", "#.#", "###", "#.#", "#.#"), "m": ("#.#", "###", "###", "#.#", "#.#"),
    "n": ("##.", "#.#", "#.#", "#.#", "#.#"), "o": ("###", "#.#", "#.#", "#.#", "###"),
    "p": ("##.", "#.#", "##.", "#..", "#.."), "s": (".##", "#..", ".#.", "..#", "##."),
    "t": ("###", ".#.", ".#.", ".#.", ".#."), "u": ("#.#", "#.#", "#.#", "#.#", "###"),
    "x": ("#.#", "#.#", ".#.", "#.#", "#.#"),
}


@dataclass(frozen=True)
class DataConfig:
    """What the generator makes; every field goes into the data's cache key.

    Attributes:
        seed: the generator's seed (each task and split draws from its own stream).
        image_size: side of the square images in pixels (a multiple of 16).
        n_train: training conversations per seen task.
        n_val: validation questions per task (used to choose the merge hyper-parameters).
        n_test: test questions per task.
        n_general: conversations in the base model's pre-training mixture.
    """

    seed: int = 0
    image_size: int = 32
    n_train: int = 600
    n_val: int = 32
    n_test: int = 64
    n_general: int = 3000

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Thing:
    """One object: colour, shape and its box in normalised [x1, y1, x2, y2] (multiples of 0.1)."""

    color: str
    shape: str
    box: tuple[float, float, float, float]


def _background(rng: random.Random, size: int) -> Image.Image:
    level = rng.randint(185, 240)
    return Image.new("RGB", (size, size), (level, level + rng.randint(-8, 8), level + rng.randint(-8, 8)))


def _jitter(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, ...]:
    return tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in rgb)


def draw_thing(img: Image.Image, thing: Thing, rng: random.Random) -> None:
    """Draw ``thing`` filling its box (in pixels of ``img``)."""
    s = img.size[0]
    x1, y1, x2, y2 = (round(v * s) for v in thing.box)
    x2, y2 = x2 - 1, y2 - 1
    fill = _jitter(COLORS[thing.color], rng)
    d = ImageDraw.Draw(img)
    if thing.shape == "circle":
        d.ellipse((x1, y1, x2, y2), fill=fill)
    elif thing.shape == "square":
        d.rectangle((x1, y1, x2, y2), fill=fill)
    elif thing.shape == "triangle":
        d.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
    else:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        d.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)


def draw_word(img: Image.Image, word: str, rng: random.Random) -> None:
    """``word`` in the 3x5 font, each font pixel a 2x2 block, dark ink, at a random place."""
    s, scale, gap = img.size[0], 2, 2
    width, height = len(word) * 3 * scale + (len(word) - 1) * gap, 5 * scale
    x0, y0 = rng.randint(1, s - width - 1), rng.randint(1, s - height - 1)
    ink = tuple(rng.randint(0, 60) for _ in range(3))
    d = ImageDraw.Draw(img)
    for k, ch in enumerate(word):
        left = x0 + k * (3 * scale + gap)
        for r, row in enumerate(GLYPHS[ch]):
            for c, cell in enumerate(row):
                if cell == "#":
                    d.rectangle((left + c * scale, y0 + r * scale, left + c * scale + scale - 1,
                                 y0 + r * scale + scale - 1), fill=ink)


def one_thing(rng: random.Random, color: str | None = None, shape: str | None = None) -> Thing:
    """A single object of side 0.4 or 0.5 at a random place on the 0.1 grid."""
    side = rng.choice((4, 5))
    x, y = rng.randint(0, 10 - side), rng.randint(0, 10 - side)
    return Thing(color or rng.choice(list(COLORS)), shape or rng.choice(SHAPES),
                 (x / 10, y / 10, (x + side) / 10, (y + side) / 10))


def small_things(rng: random.Random, n: int, colors: list[str], shapes: list[str] | None = None) -> list[Thing]:
    """``n`` small objects (side 0.2) in distinct cells of a 4x4 grid, left-to-right order."""
    cells = rng.sample(range(16), n)
    out = []
    for k, cell in enumerate(sorted(cells, key=lambda c: (c % 4, c // 4))):
        col, row = cell % 4, cell // 4
        x, y = col * 0.25 + rng.choice((0.0, 0.05)), row * 0.25 + rng.choice((0.0, 0.05))
        shape = shapes[k] if shapes else rng.choice(SHAPES)
        out.append(Thing(colors[k], shape, (round(x, 2), round(y, 2), round(x + 0.2, 2), round(y + 0.2, 2))))
    return out


def render(rng: random.Random, size: int, things: list[Thing] = (), word: str | None = None) -> Image.Image:
    img = _background(rng, size)
    for thing in things:
        draw_thing(img, thing, rng)
    if word is not None:
        draw_word(img, word, rng)
    return img


def quadrant(thing: Thing) -> str:
    cx, cy = (thing.box[0] + thing.box[2]) / 2, (thing.box[1] + thing.box[3]) / 2
    return QUADRANTS[(2 if cy >= 0.5 else 0) + (1 if cx >= 0.5 else 0)]


def box_text(box) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in box) + "]"


def _options(right: str, pool) -> tuple[list[str], str]:
    """Every option of ``pool`` in its fixed order; returns (options, the right letter).

    The order never changes: a two-layer model of this size does not learn to match a
    shuffled option list against the image in the demo's budget (tried: it stays at chance),
    so the letter is a fixed code for the answer, as in a form with printed choices.
    """
    options = list(pool)
    return options, LETTERS[options.index(right)]


def _option_text(question: str, options: list[str]) -> str:
    return question + "\n" + "".join(f"{LETTERS[k]}. {o}\n" for k, o in enumerate(options)) + LETTER


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(things: list[Thing]) -> str:
    parts = [f"{_article(t.color)} {t.color} {t.shape}" for t in things]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ----------------------------------------------------------------------------- task samples
# Each maker draws one sample: (image, question text, answer, extra ground-truth fields).

Sample = tuple[Image.Image, str, str, dict]


def make_colors(rng: random.Random, size: int) -> Sample:
    t = one_thing(rng)
    return render(rng, size, [t]), f"What color is the object in the image?\n{PHRASE}", t.color, {}


def make_shapes(rng: random.Random, size: int) -> Sample:
    t = one_thing(rng)
    text = ("What is the object in the image? Choose an answer from the choices below: "
            + ", ".join(sorted(CLASS_NAMES.values())) + ".")
    return render(rng, size, [t]), text, CLASS_NAMES[t.shape], {}


def make_count(rng: random.Random, size: int) -> Sample:
    n = rng.randint(1, 4)
    color = rng.choice(list(COLORS))
    things = small_things(rng, n, [color] * n)
    return render(rng, size, things), f"How many objects are there in the image?\n{PHRASE}", str(n), {}


def make_locate(rng: random.Random, size: int) -> Sample:
    t = one_thing(rng)
    text = f"Please provide the bounding box coordinate of the region this sentence describes: the {t.color} {t.shape}."
    return render(rng, size, [t]), text, box_text(t.box), {"answer_bbox": box_text(t.box), "size": [size, size]}


def make_read(rng: random.Random, size: int) -> Sample:
    word = rng.choice(WORDS)
    return render(rng, size, word=word), f"What word is written in the image?\n{PHRASE}", word, {}


def make_choice(rng: random.Random, size: int) -> Sample:
    t = one_thing(rng)
    options, letter = _options(quadrant(t), QUADRANTS)
    return render(rng, size, [t]), _option_text("Where is the object in the image?", options), letter, {}


def make_caption(rng: random.Random, size: int) -> Sample:
    n = rng.randint(1, 2)
    things = small_things(rng, n, rng.sample(list(COLORS), n))
    caption = _describe(things)
    refs = [caption, "one " + caption.split(" ", 1)[1]]
    if n == 2:
        refs.append(_describe(things[::-1]))
    return render(rng, size, things), CAPTION, caption, {"references": refs}


def make_colorshape(rng: random.Random, size: int) -> Sample:
    t = one_thing(rng)
    return (render(rng, size, [t]), f"What is the object in the image? Answer with its color and shape.\n{PHRASE}",
            f"{t.color} {t.shape}", {})


def make_countcolor(rng: random.Random, size: int) -> Sample:
    n = rng.randint(2, 4)
    target, other = rng.sample(list(COLORS), 2)
    k = rng.randint(1, n - 1)
    colors = [target] * k + [other] * (n - k)
    rng.shuffle(colors)
    things = small_things(rng, n, colors)
    return (render(rng, size, things), f"How many {target} objects are there in the image?\n{PHRASE}", str(k), {})


def make_readchoice(rng: random.Random, size: int) -> Sample:
    word = rng.choice(WORDS)
    options, letter = _options(word, sorted(WORDS))
    return render(rng, size, word=word), _option_text("Which word is written in the image?", options), letter, {}


MAKERS: dict[str, Callable[[random.Random, int], Sample]] = {
    "Colors": make_colors, "Shapes": make_shapes, "Count": make_count, "Locate": make_locate,
    "Read": make_read, "Choice": make_choice, "Caption": make_caption,
    "ColorShape": make_colorshape, "CountColor": make_countcolor, "ReadChoice": make_readchoice,
}


# ----------------------------------------------------------------------------- pre-training mixture


def make_general(rng: random.Random, size: int) -> tuple[Image.Image, str, str]:
    """One conversation of the general mixture (the base model's pre-training data).

    Detailed descriptions of every kind of scene (colours, shapes, numbers as words, rough
    positions, words), exact positions in words, yes/no questions and short questions in
    their own wording and answer style (numbers as words, words in capitals, shapes by their
    geometric name, positions in words): the base learns to see everything the tasks ask
    about and to answer briefly, but not the tasks' own formats (digits, class names, boxes,
    option letters, captions), which is what each task's adapter adds.
    """
    kind = rng.random()
    if kind < 0.2:
        t = one_thing(rng)
        img = render(rng, size, [t])
        desc = f"The image shows {_describe([t])} in the {quadrant(t)} part of a light background."
    elif kind < 0.3:
        n = rng.randint(1, 4)
        colors = [rng.choice(list(COLORS)) for _ in range(n)]
        things = small_things(rng, n, colors)
        img = render(rng, size, things)
        desc = (f"The image shows {NUMBER_WORDS[n]} small object{'s' if n > 1 else ''}: "
                f"{_describe(things)}, from left to right.")
    elif kind < 0.4:
        word = rng.choice(WORDS)
        img = render(rng, size, word=word)
        desc = f"The image shows the word {word.upper()} written in dark letters."
    elif kind < 0.5:
        t = one_thing(rng)
        x1, y1, x2, y2 = t.box
        return (render(rng, size, [t]), f"Where exactly is the {t.shape}?",
                f"It spans from x {x1:.1f} to x {x2:.1f} and from y {y1:.1f} to y {y2:.1f}.")
    elif kind < 0.65:
        return _general_yes_no(rng, size)
    else:
        return _general_short(rng, size)
    return img, "Describe the image in detail.", desc


def _general_short(rng: random.Random, size: int) -> tuple[Image.Image, str, str]:
    """A short question in the general mixture's own wording and answer style."""
    kind = rng.randrange(5)
    if kind == 2:
        n = rng.randint(1, 4)
        things = small_things(rng, n, [rng.choice(list(COLORS)) for _ in range(n)])
        return render(rng, size, things), f"How many objects can you see?\n{PHRASE}", NUMBER_WORDS[n]
    if kind == 3:
        word = rng.choice(WORDS)
        return render(rng, size, word=word), f"What does the text say?\n{PHRASE}", word.upper()
    t = one_thing(rng)
    img = render(rng, size, [t])
    if kind == 0:
        return img, f"What is the color of the {t.shape}?\n{PHRASE}", t.color
    if kind == 1:
        return img, f"What geometric shape is this?\n{PHRASE}", t.shape
    return img, f"In which part of the image is the {t.shape}?\n{PHRASE}", quadrant(t)


def _general_yes_no(rng: random.Random, size: int) -> tuple[Image.Image, str, str]:
    t = one_thing(rng)
    if rng.random() < 0.5:
        word = rng.choice(WORDS)
        img = render(rng, size, word=word)
        asked = rng.choice(WORDS)
        question, yes = f"Is the word {asked.upper()} written in the image?", asked == word
    else:
        img = render(rng, size, [t])
        if rng.random() < 0.5:
            asked = t.color if rng.random() < 0.5 else rng.choice(list(COLORS))
            question, yes = f"Is there a {asked} object in the image?", asked == t.color
        else:
            asked = t.shape if rng.random() < 0.5 else rng.choice(SHAPES)
            question, yes = f"Is there a {asked} in the image?", asked == t.shape
    return img, f"{question}\n{PHRASE}", "Yes" if yes else "No"


# ----------------------------------------------------------------------------- tower pre-training labels

#: the label space of the vision tower's pre-training (stand-in for CLIP's): what is in a scene
VISION_LABELS = (
    *(f"color:{c}" for c in COLORS), *(f"shape:{s}" for s in SHAPES), *(f"word:{w}" for w in WORDS),
    *(f"count:{n}" for n in range(1, 5)), *(f"quadrant:{q}" for q in QUADRANTS),
    *(f"{edge}:{v}" for edge in ("x1", "y1", "x2", "y2") for v in range(11)),
)
#: labels from here on say where things are (the rest: what is there)
VISION_WHERE_START = VISION_LABELS.index(f"quadrant:{QUADRANTS[0]}")


def VISION_LABELS_ORDER(group: str) -> int:
    """Sort key of a label group: its first label's position."""
    return next(i for i, name in enumerate(VISION_LABELS) if name.startswith(group + ":"))


def make_vision_sample(rng: random.Random, size: int) -> tuple[Image.Image, list[int]]:
    """A scene of any kind and the indices of its true labels in :data:`VISION_LABELS`."""
    kind = rng.random()
    if kind < 0.4:
        t = one_thing(rng)
        img = render(rng, size, [t])
        labels = [f"color:{t.color}", f"shape:{t.shape}", f"quadrant:{quadrant(t)}", "count:1"]
        labels += [f"{edge}:{round(v * 10)}" for edge, v in zip(("x1", "y1", "x2", "y2"), t.box)]
    elif kind < 0.7:
        word = rng.choice(WORDS)
        img, labels = render(rng, size, word=word), [f"word:{word}"]
    else:
        n = rng.randint(1, 4)
        things = small_things(rng, n, [rng.choice(list(COLORS)) for _ in range(n)])
        img = render(rng, size, things)
        labels = [f"count:{n}"] + sorted({f"color:{t.color}" for t in things} | {f"shape:{t.shape}" for t in things})
    return img, [VISION_LABELS.index(x) for x in labels]


# ----------------------------------------------------------------------------- writing


def _stream(seed: int, *names) -> random.Random:
    """An independent random stream per (seed, task, split)."""
    return random.Random("/".join(map(str, (seed, *names))))


def _conversation(sample_id: str, image: str, text: str, answer: str) -> dict:
    return {"id": sample_id, "image": image,
            "conversations": [{"from": "human", "value": "<image>\n" + text}, {"from": "gpt", "value": answer}]}


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def write_train(root: Path, task: str, cfg: DataConfig) -> list[dict]:
    rng = _stream(cfg.seed, task, "train")
    rows = []
    for i in range(cfg.n_train):
        img, text, answer, _ = MAKERS[task](rng, cfg.image_size)
        image = f"{task}/train_{i:05d}.png"
        img.save(root / "datasets" / image)
        rows.append(_conversation(f"{task}-train-{i}", image, text, answer))
    _dump(rows, root / "instructions" / task / "train.json")
    return rows


def write_questions(root: Path, task: str, split: str, n: int, cfg: DataConfig) -> list[dict]:
    """``split`` questions of ``task`` (+ COCO caption ground truth for the caption task)."""
    rng = _stream(cfg.seed, task, split)
    questions, refs = [], []
    for i in range(n):
        img, text, answer, extra = MAKERS[task](rng, cfg.image_size)
        image = f"{task}/{split}_{i:05d}.png"
        img.save(root / "datasets" / image)
        record = {"question_id": f"{task.lower()}-{split}-{i}", "image": image, "text": text, "answer": answer}
        refs.append(extra.pop("references", [answer]))
        record.update(extra)
        questions.append(record)
    _dump(questions, root / "instructions" / task / f"{split}.json")
    if task == "Caption":
        images = [{"id": k, "file_name": q["image"]} for k, q in enumerate(questions, start=1)]
        anns = [{"image_id": k, "caption": c, "id": 0} for k, r in enumerate(refs, start=1) for c in r]
        for j, ann in enumerate(anns, start=1):
            ann["id"] = j
        _dump({"images": images, "annotations": anns}, root / "instructions" / task / f"{split}_coco_type.json")
    return questions


def write_general(root: Path, cfg: DataConfig) -> None:
    rng = _stream(cfg.seed, "General", "train")
    rows = []
    for i in range(cfg.n_general):
        img, text, answer = make_general(rng, cfg.image_size)
        image = f"General/train_{i:05d}.png"
        img.save(root / "datasets" / image)
        rows.append(_conversation(f"general-{i}", image, text, answer))
    _dump(rows, root / "instructions" / "General" / "train.json")


def generate(root: str | Path, cfg: DataConfig, seen: tuple[str, ...], unseen: tuple[str, ...],
             progress: Callable[[str], None] | None = None) -> Path:
    """Write the whole miniature benchmark under ``root`` (which must be empty or absent)."""
    root = Path(root)
    tasks = (*seen, *unseen)
    for task in (*tasks, "General"):
        (root / "datasets" / task).mkdir(parents=True, exist_ok=True)
    write_general(root, cfg)
    if progress:
        progress("General")
    union = []
    for task in tasks:
        if task in seen:
            union += write_train(root, task, cfg)
        write_questions(root, task, "val", cfg.n_val, cfg)
        write_questions(root, task, "test", cfg.n_test, cfg)
        if progress:
            progress(task)
    random.Random(f"{cfg.seed}/MultiTask").shuffle(union)
    _dump(union, root / "instructions" / "MultiTask" / "train.json")
    _dump({"config": cfg.to_dict(), "seen": list(seen), "unseen": list(unseen)}, root / "generator.json")
    return root
