"""Real reasoning as segments: the units a long chain of thought is made of, what each one does, and where it ends.

A real teacher's thought (R1, Qwen3, gpt-oss) is prose with LaTeX: paragraphs of sentences, display math, lists.
[`split_segments`] cuts it into short runs of sentences inside a paragraph. A run ends at the paragraph's end, before a
sentence that turns the reasoning ("Wait", "Hmm", "Alternatively", "Let me double-check", "So, to recap"), or when it
grows past [`SEGMENT_MAX_CHARS`]; display math (`\\[...\\]`, `$$...$$`) and inline math are never cut, and a display
block stays with the sentence that introduces it. Segments are spans of the original text, so any subset of them, joined
in order, reads as the teacher wrote it.

[`analyse`] then reads a trace once, in time linear in its length:

- which segments state the gold answer, judged by the project's verifier ([`rewards.correctness.CorrectnessReward`]):
  the *conclusion* is the last one, and the first one marks where the answer was first reached;
- what kind each segment is: a step, a reflection or re-check, an alternative approach, a recap, a retraction of what
  came before (an abandoned attempt);
- how much of it repeats earlier text, or restates the question;
- the segments the conclusion rests on: for each value the conclusion states (that the question does not give), the
  latest earlier segment that states it, traced back a few levels ([`SUPPORT_DEPTH`]).

[`reaches_answer`] is the answer check of general (non-embedded) traces: the reasoning states the gold answer and
states no other final answer after it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

# Longest run of sentences kept as one segment: about 100 tokens, a few sentences of a real trace.
SEGMENT_MAX_CHARS = 400
# How many levels the values of the conclusion are traced back through the segments that state them.
SUPPORT_DEPTH = 3
# Segments whose answers are read per verifier call when looking for the conclusion from the end.
CONCLUSION_CHUNK = 16

# Inline and display math, never cut. Quantifiers are bounded so that a stray `$` or `\[` costs a bounded scan.
_MATH = re.compile(
    r"\$\$[\s\S]{0,20000}?\$\$|\\\[[\s\S]{0,20000}?\\\]|\\\([^\n]{0,2000}?\\\)|\$[^$\n]{1,2000}?\$"
    r"|\\begin\{(align|equation|gather|array|cases)\*?\}[\s\S]{0,20000}?\\end\{\1\*?\}"
)
# Paragraph breaks, line breaks, and sentence ends (punctuation, maybe a closing quote, then space and a new start).
_BOUNDARY = re.compile(
    r"(?P<paragraph>\n[ \t]*\n\s*)|(?P<line>[ \t]*\n\s*)|(?:(?<=[.!?])|(?<=[.!?][\"')*]))[ \t]+(?=[^a-z\s,;:.)\]}])"
)
_DISPLAY_START = re.compile(r"^(?:\$\$|\\\[|\\begin\{)")
_LEAD = r"^[\s*_#>-]*(?:(?:and|but|so|oh|ok|okay|hmm+|well|no|ah|um+|alright|right)\b[\s,.!:;-]*)*"
_TURNS = {
    "reflection": re.compile(
        _LEAD + r"(?:wait\b|hmm+\b|hold on\b|hang on\b|let me (?:double[- ]?check|check|verify|confirm|make sure|"
        r"re-?check|re-?examine|re-?verify|re-?calculate|recompute|recount|redo|go (?:back|over|through)|"
        r"think (?:again|once more)|reconsider|see if|be careful)|let's (?:double[- ]?check|check|verify|confirm|"
        r"make sure)|double[- ]?check|to (?:confirm|verify|double[- ]?check|be (?:sure|safe|thorough))|"
        r"just to (?:be|confirm|check|make|double|verify)|(?:i|we) (?:should|need to|want to|can|will|'ll|must) "
        r"(?:double[- ]?check|check|verify|confirm|make sure)|is (?:that|this|it) (?:right|correct)|did i\b|"
        r"does (?:that|this) make sense|sanity check|cross[- ]?check|yes,? (?:that|this|it)|yep|that (?:seems|makes "
        r"sense|checks out|matches)|is there (?:any|a) (?:chance|possibility|other|mistake))",
        re.IGNORECASE,
    ),
    "alternative": re.compile(
        _LEAD + r"(?:alternatively|another (?:way|approach|method|check|thought)|let me (?:try|use|think of) "
        r"(?:another|a different|an alternative)|maybe (?:a better|another|there's a)|or maybe|perhaps a better)",
        re.IGNORECASE,
    ),
    "recap": re.compile(
        _LEAD + r"(?:to (?:recap|summarize|sum up)|let me (?:recap|summarize)|in summary|recap|summary|so far)",
        re.IGNORECASE,
    ),
}
_RETRACTION = re.compile(
    r"\b(?:that(?:'s| is) (?:not right|wrong|incorrect|not correct|not possible|a mistake)|that can(?:'t|not) be|"
    r"i made a mistake|(?:my|a) mistake|miscalculat\w*|this is getting (?:complicated|messy|too)|scratch that|"
    r"that does(?:n't| not) (?:make sense|work|seem right)|i messed up|that contradicts|no, that)",
    re.IGNORECASE,
)
_INTERJECTION = re.compile(r"^(?:wait|hmm+|oh|ah|okay|ok|hold on|alright|um+)\W*$", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?|\\[a-z]+|[=+*/^<>-]", re.IGNORECASE)
_VALUE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])|(?<=\{)\d+(?=\})")
_MATH_HINT = re.compile(r"\d|\\[a-z]+|[=+*/^<>]")
# A value is worth tracing when a reader would look for where it came from: not a digit that every sentence uses.
_TRIVIAL_VALUES = frozenset(str(n) for n in range(11))


@dataclass(frozen=True)
class Segment:
    """One unit of a reasoning text: the span `text[start:end]`, its paragraph, and the kind of turn it takes."""

    start: int
    end: int
    paragraph: int
    kind: str = "step"


def _math_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _MATH.finditer(text)]


def _sentences(text: str) -> list[tuple[int, int, int]]:
    """`(start, end, paragraph)` of each sentence or line, never cutting math; O(len(text))."""
    math = _math_spans(text)
    out, start, paragraph, m = [], 0, 0, 0
    for match in _BOUNDARY.finditer(text):
        while m < len(math) and math[m][1] <= match.start():
            m += 1
        if m < len(math) and math[m][0] < match.end() and match.start() < math[m][1]:
            continue  # inside math: not a boundary
        end = match.start()
        if text[start:end].strip():
            out.append((start, end, paragraph))
        start = match.end()
        if match.group("paragraph"):
            paragraph += 1
    if text[start:].strip():
        out.append((start, len(text.rstrip()), paragraph))
    return out


def turn_kind(sentence: str) -> str | None:
    """`reflection`, `alternative` or `recap` when a sentence turns the reasoning that way, else None."""
    head = sentence[:160]
    for kind, pattern in _TURNS.items():
        if pattern.match(head):
            return kind
    return None


def split_segments(text: str) -> list[Segment]:
    """The segments of a reasoning text in order (see the module docstring); O(len(text))."""
    segments: list[Segment] = []
    carry: int | None = None  # start of an interjection ("Wait.") that opens the next segment
    for start, end, paragraph in _sentences(text):
        sentence = text[start:end]
        if carry is not None:
            start, carry = carry, None
        last = segments[-1] if segments else None
        same_paragraph = last is not None and last.paragraph == paragraph
        if last is not None and _DISPLAY_START.match(sentence):
            # A display block belongs with the sentence that introduces it, even across a blank line.
            segments[-1] = Segment(last.start, end, last.paragraph, last.kind)
            continue
        if _INTERJECTION.match(sentence) and len(sentence) < 20:
            carry = start
            continue
        kind = turn_kind(text[start:end])
        short = len(sentence.split()) <= 2
        if same_paragraph and (short or (kind is None and end - last.start <= SEGMENT_MAX_CHARS)):
            segments[-1] = Segment(last.start, end, last.paragraph, last.kind)
            continue
        if kind is None:
            # A run cut for length continues the turn it belongs to; a new paragraph starts as a plain step.
            kind = last.kind if same_paragraph else "step"
        segments.append(Segment(start, end, paragraph, kind))
    if carry is not None and segments:  # a trailing interjection closes the last segment
        last = segments[-1]
        segments[-1] = Segment(last.start, len(text.rstrip()), last.paragraph, last.kind)
    elif carry is not None:
        segments.append(Segment(carry, len(text.rstrip()), 0, "reflection"))
    return segments


def join_segments(text: str, segments: Sequence[Segment], kept: Sequence[int]) -> str:
    """The kept segments (indices in order) as one text, with the separators of the original where they still fit.

    Two segments that were neighbours keep what stood between them; across a gap, a new paragraph starts with a blank
    line and a segment of the same paragraph follows after a space (or a line break, if one stood before it).
    """
    out: list[str] = []
    previous = None
    for index in kept:
        segment = segments[index]
        if previous is not None:
            if index == previous + 1:
                out.append(text[segments[previous].end : segment.start])
            elif segment.paragraph != segments[previous].paragraph:
                out.append("\n\n")
            else:
                before = text[segments[index - 1].end : segment.start]
                out.append("\n" if "\n" in before else " ")
        out.append(text[segment.start : segment.end])
        previous = index
    return "".join(out)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _bigrams(words: list[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:])) if len(words) > 1 else {(w, "") for w in words}


# Thousands separators, LaTeX ones included (`1,\\!296`, `10{,}000`), which the value of a number does not depend on.
_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,|\\[!,;: ])+(?=\d{3}(?!\d))")


def _values(text: str) -> set[str]:
    """The numbers a text writes, as strings (`1,\\!296` and `1,296` are `1296`; `2.50` is `2.5`)."""
    text = _THOUSANDS.sub("", text)
    return {v.rstrip("0").rstrip(".") if "." in v else v for v in _VALUE.findall(text)}


# ------------------------------------------------------------------------------------------------ reading answers


@lru_cache(maxsize=1)
def _reward():
    from rewards.correctness import correctness_reward

    return correctness_reward


_FORMAT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname|d?frac|left|right)\b")


def _gold_signature(gold: str) -> tuple[set[str], list[str]]:
    """What a text must write to state `gold`: its numbers, or for a gold without numbers its words (`\\pi` is pi)."""
    values = _values(gold)
    words = [] if values else re.findall(r"[a-z]+", _FORMAT_COMMAND.sub(" ", gold.lower()))
    return values, words


def _could_state(text: str, signature: tuple[set[str], list[str]]) -> bool:
    """A cheap filter before the verifier (whose symbolic comparisons run in a process pool): a text can state a gold
    only if it writes the gold's numbers (`0.25` for `1/4` is missed; the conclusion search does without the filter
    when it finds nothing)."""
    values, words = signature
    if values:
        return values <= _values(text)
    lowered = text.lower()
    return all(word in lowered for word in words)


def states_gold(gold: str, texts: Sequence[str], prefilter: bool = True) -> list[bool]:
    """Whether the verifier reads `gold` as the answer of each text (one batched call; cheap filter first)."""
    signature = _gold_signature(gold)
    candidates = [i for i, t in enumerate(texts) if not prefilter or _could_state(t, signature)]
    result = [False] * len(texts)
    if candidates:
        scores = _reward().score([gold] * len(candidates), [texts[i] for i in candidates])
        for i, score in zip(candidates, scores):
            result[i] = score == 1.0
    return result


_STATED_ANSWER = re.compile(r"\\boxed\s*\{|\bfinal answer\b|\banswer(?:\s+is|\s*[:=])", re.IGNORECASE)


@lru_cache(maxsize=64)
def reaches_answer(reasoning: str, gold: str) -> bool:
    """Whether a general reasoning text reaches the gold answer, judged by the project's verifier.

    True when the verifier reads the gold as the final answer of the whole text, or when some segment states the gold
    and no later segment states a final answer of its own (a box, "the answer is"): a thought that ends in prose
    ("I'm confident in this.") after its answer still reaches it; one that moves on to another answer does not.
    Cached: the stage checks the same trace against several windows.
    """
    if not reasoning or not reasoning.strip():
        return False
    if states_gold(gold, [reasoning], prefilter=False)[0]:
        return True
    texts = [reasoning[s.start : s.end] for s in split_segments(reasoning)]
    last = find_conclusion(gold, texts)
    if last is None:
        return False
    return not any(_STATED_ANSWER.search(t) for t in texts[last + 1 :])


def find_conclusion(gold: str, texts: Sequence[str]) -> int | None:
    """Index of the last text that states `gold`, or None.

    Scans from the end a chunk at a time with the cheap filter of [`states_gold`]; when that finds nothing, the last
    chunk is read again by the verifier alone, for a gold written another way (`0.25` for `\\frac{1}{4}`).
    """
    end = len(texts)
    while end > 0:
        start = max(0, end - CONCLUSION_CHUNK)
        found = states_gold(gold, texts[start:end])
        if any(found):
            return start + max(i for i, f in enumerate(found) if f)
        end = start
    start = max(0, len(texts) - CONCLUSION_CHUNK)
    found = states_gold(gold, texts[start:], prefilter=False)
    return start + max(i for i, f in enumerate(found) if f) if any(found) else None


# ------------------------------------------------------------------------------------------------------- analysis


@dataclass
class Analysis:
    """What [`analyse`] reads in one trace. Lists are per segment."""

    text: str
    segments: list[Segment]
    conclusion: int | None
    first_reach: int | None
    repetition: list[float] = field(default_factory=list)
    restates_question: list[bool] = field(default_factory=list)
    retracted: list[bool] = field(default_factory=list)
    has_math: list[bool] = field(default_factory=list)
    support: set[int] = field(default_factory=set)

    def texts(self) -> list[str]:
        return [self.text[s.start : s.end] for s in self.segments]


def analyse(reasoning: str, gold: str, question: str) -> Analysis:
    """Read a general trace once: its segments, conclusion, first reach of the answer, and per-segment features."""
    segments = split_segments(reasoning)
    texts = [reasoning[s.start : s.end] for s in segments]
    conclusion = find_conclusion(gold, texts)
    first_reach = None
    if conclusion is not None:
        stated = states_gold(gold, texts[:conclusion])
        first_reach = next((i for i, s in enumerate(stated) if s), conclusion)
    question_bigrams = _bigrams(_words(question))
    seen: set = set()
    repetition, restates, has_math = [], [], []
    for text in texts:
        grams = _bigrams(_words(text))
        repetition.append(len(grams & seen) / max(1, len(grams)))
        restates.append(len(grams & question_bigrams) / max(1, len(grams)) > 0.5)
        has_math.append(bool(_MATH_HINT.search(text)))
        seen |= grams
    # An abandoned attempt: the segment that retracts, and the one before it, which it retracts.
    retracted = [False] * len(texts)
    for i, text in enumerate(texts):
        if _RETRACTION.search(text):
            retracted[i] = True
            if i > 0:
                retracted[i - 1] = True
    support = set() if conclusion is None else trace_support(texts, conclusion, question)
    return Analysis(reasoning, segments, conclusion, first_reach, repetition, restates, retracted, has_math, support)


def trace_support(texts: Sequence[str], conclusion: int, question: str) -> set[int]:
    """Segments the conclusion rests on: for each value it states (that the question does not give and that is not a
    small integer every sentence uses), the latest earlier segment stating it, then the same for that segment, up to
    [`SUPPORT_DEPTH`] levels. O(values x log segments) with an index of where each value occurs."""
    given = _values(question)
    where: dict[str, list[int]] = {}
    values = [_values(t) for t in texts[: conclusion + 1]]
    for index, found in enumerate(values):
        for value in found:
            where.setdefault(value, []).append(index)
    support, frontier, traced = set(), [conclusion], set()
    for _ in range(SUPPORT_DEPTH):
        next_frontier = []
        for index in frontier:
            for value in sorted(values[index] - given - _TRIVIAL_VALUES - traced):  # sorted: runs agree
                traced.add(value)
                positions = where[value]
                k = bisect.bisect_left(positions, index) - 1
                if k >= 0 and positions[k] not in support and positions[k] != conclusion:
                    support.add(positions[k])
                    next_frontier.append(positions[k])
        frontier = next_frontier
    return support


# Score weights: what real models write that a shorter thought can do without, and what it cannot.
TURN_PENALTY = {"reflection": 0.45, "alternative": 0.35, "recap": 0.25}
RETRACTED_PENALTY = 0.4
AFTER_ANSWER_PENALTY = 0.35
REPETITION_PENALTY = 0.5
RESTATEMENT_PENALTY = 0.3
NO_MATH_PENALTY = 0.15
SUPPORT_BONUS = 0.6


def segment_scores(analysis: Analysis) -> list[float]:
    """Importance of each segment up to the conclusion (higher is kept longer); `inf` for the conclusion itself.

    Penalised: reflection and re-checking, alternative approaches, recaps, abandoned attempts (a retraction and what it
    retracts), anything after the answer was first reached (re-verification), repetition of earlier text, restating
    the question, prose without any math. Rewarded: the segments the conclusion rests on.
    """
    a = analysis
    if a.conclusion is None:
        return []
    scores = []
    for i, segment in enumerate(a.segments[: a.conclusion + 1]):
        if i == a.conclusion:
            scores.append(float("inf"))
            continue
        score = 1.0 - TURN_PENALTY.get(segment.kind, 0.0)
        score -= RETRACTED_PENALTY * a.retracted[i]
        score -= AFTER_ANSWER_PENALTY * (a.first_reach is not None and i > a.first_reach)
        score -= REPETITION_PENALTY * a.repetition[i]
        score -= RESTATEMENT_PENALTY * a.restates_question[i]
        score -= NO_MATH_PENALTY * (not a.has_math[i])
        score += SUPPORT_BONUS * (i in a.support)
        scores.append(score)
    return scores
