"""The VQA answer normalisation of EvalAI uploads (``answers_upload.json`` of VQAv2).

Written for MM-MergeBench from the published rules of the VQA evaluation; only the standard
library is used. :func:`normalize_answer` is the one public function.
"""

from __future__ import annotations

import re

__all__ = ["CONTRACTIONS", "NUMBER_WORDS", "ARTICLES", "PUNCTUATION", "normalize_answer"]

#: Punctuation handled by the "remove or replace by a space" rule. Not in the list: the period
#: (own rule), the apostrophe (kept, see the contractions) and the colon (kept: "1:30").
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # "none" -> "0" as in the VQA evaluation's number map

ARTICLES = frozenset({"a", "an", "the"})

#: Contractions written without their apostrophe(s) -> the apostrophe form. Our own list of
#: common English contractions (not/be/have/will/would forms, plus the usual informal ones);
#: every key is lower case because the text is lower-cased first. Spellings that are also
#: ordinary English words ("its", "well", "were", "wed", "shell", "hell", "shed", "ill", "id",
#: "lets", "cause") are left out on purpose so that answers like "its" or "well" stay as they are.
CONTRACTIONS = {
    # not
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hasnt": "hasn't", "havent": "haven't", "isnt": "isn't", "mightnt": "mightn't",
    "mustnt": "mustn't", "neednt": "needn't", "shant": "shan't", "shouldnt": "shouldn't",
    "wasnt": "wasn't", "werent": "weren't", "wont": "won't", "wouldnt": "wouldn't",
    # not + have
    "couldntve": "couldn't've", "shouldntve": "shouldn't've", "wouldntve": "wouldn't've",
    # am / are / is
    "im": "i'm", "youre": "you're", "theyre": "they're", "hes": "he's", "shes": "she's",
    "thats": "that's", "theres": "there's", "heres": "here's", "whats": "what's",
    "whos": "who's", "wheres": "where's", "hows": "how's", "whens": "when's", "whys": "why's",
    "everyones": "everyone's", "somebodys": "somebody's", "someones": "someone's",
    "nobodys": "nobody's", "somethings": "something's",
    # have
    "ive": "i've", "youve": "you've", "weve": "we've", "theyve": "they've",
    "couldve": "could've", "shouldve": "should've", "wouldve": "would've",
    "mightve": "might've", "mustve": "must've", "whove": "who've",
    # will
    "youll": "you'll", "theyll": "they'll", "itll": "it'll",
    "thatll": "that'll", "therell": "there'll", "wholl": "who'll",
    # would / had
    "youd": "you'd", "theyd": "they'd", "hed": "he'd", "itd": "it'd",
    "thatd": "that'd", "thered": "there'd", "whod": "who'd",
    # informal
    "yall": "y'all", "oclock": "o'clock", "maam": "ma'am",
}
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
#: A period not followed by a digit ("10.0" and ".5" keep theirs, "yes." and "5." lose it).
_PERIOD = re.compile(r"\.(?!\d)")
#: The original passes ``re.UNICODE`` (32) where ``re.sub`` takes its count, so at most 32
#: periods are removed; kept for identical output.
_PERIOD_COUNT = 32


def _tokenize(text: str) -> str:
    """Lower-case, drop every comma and question mark, split off a possessive ``'s``, strip."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def _punctuation(text: str) -> str:
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for p in PUNCTUATION:
        # the test looks at the text as it came in, then treats every occurrence of ``p`` alike
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def _words(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Normalise one predicted answer the way VQA answers are uploaded to EvalAI.

    Rules, in order:

    1. Lower-case; remove every ``,`` and ``?``; write a possessive ``'s`` as a separate word
       (``"dog's"`` -> ``"dog 's"``); strip.
    2. Newlines and tabs become spaces; strip again.
    3. Punctuation: for each character of :data:`PUNCTUATION`
       (``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``), if it occurs next to a space anywhere
       in the text (or the text has a comma between two digits) every occurrence is removed,
       otherwise every occurrence becomes a space (``"black-and-white"`` -> ``"black and
       white"``). The colon and the apostrophe are kept (``"1:30"``, ``"don't"``).
    4. Periods are removed unless followed by a digit (``"10.0"`` stays, ``"yes."`` -> ``"yes"``);
       at most 32 per answer, as in the original.
    5. Per word (split on whitespace): number words ``zero`` (and ``none``) .. ``ten`` become digits,
       the articles ``a``/``an``/``the`` are dropped, and a contraction written without its
       apostrophe becomes the apostrophe form (:data:`CONTRACTIONS`, e.g. ``dont`` ->
       ``don't``); words are joined by single spaces.

    Examples: ``"Yes."`` -> ``"yes"``, ``"The Dog"`` -> ``"dog"``, ``"two"`` -> ``"2"``,
    ``"No, there is no dog."`` -> ``"no there is no dog"``.
    """
    text = _tokenize(text)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _words(_punctuation(text))
