"""Final-answer extraction and the comparisons that need no computer algebra.

Everything here is plain string work (regular expressions and `fractions.Fraction`) and runs in the caller's process:
it never imports sympy and never evaluates anything. Regular expressions are written so that their cost stays linear
in the length of the text, because completions are untrusted and may be very long.

Answers that these fast paths cannot decide are handed to `rewards._math_equal`, which runs in worker processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Longest answer (in characters) that the string-level fast paths look at; longer ones go to the workers.
_FAST_PATH_MAX_CHARS = 200
# Numbers are equal within this relative difference (never by rescaling: 5 is not 500 or 0.05).
RELATIVE_TOLERANCE = Fraction(1, 10**6)
# A text this short, with no reasoning-like prose, is taken as the answer itself.
_SHORT_ANSWER_MAX_CHARS = 300
# How far back from the end of a text `\boxed` commands are considered, and how much of one box is read.
_MAX_BOXES = 64
_MAX_BOX_CHARS = 200_000
# A run of adjacent boxes longer than this is not read as a list of answers (see `_last_boxed`).
_MAX_JOINED_BOXES = 8
# How many "answer" phrases, from the last one back, are examined.
_MAX_MARKERS = 32

# Control characters that only appear when a LaTeX command lost its backslash letter to a non-raw string literal
# (`"\frac"` is a form feed followed by "rac"); they never occur in real text, so restoring them is safe.
_LOST_ESCAPES = {"\x07": "\\a", "\x08": "\\b", "\x0b": "\\v", "\x0c": "\\f"}
_LOST_ESCAPES_RE = re.compile("[\x07\x08\x0b\x0c]")
_DOUBLED_BACKSLASH_RE = re.compile(r"\\\\(?=[a-zA-Z])")

_BOX_START_RE = re.compile(r"\\(?:boxed|fbox|beginboxed)\s*\{")
_BOX_SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
_SENTENCE_BREAK_RE = re.compile(r"[.!?]\s+[A-Z]|\n\s*\n")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
# "The final answer is", "answer:", "Answer =", or a bare "Answer" directly followed by math or a number.
_MARKER_RE = re.compile(
    r"(?i)\b(?P<final>final\s+)?answer\b(?:\s*\*\*)?"
    r"(?:\s*(?P<verb>is|was|would\s+be|should\s+be|will\s+be)\b)?(?:\s*\*\*)?\s*(?P<colon>[:=])?"
)
_MARKER_FOLLOWER_RE = re.compile(r"\s*(?:\$|\\\(|\\\[|[-+]?\d)")
_I_HOPE_RE = re.compile(r"(?i)\bI hope\b")
_CODE_SHAPED_RE = re.compile(
    r"__|\b(?:breakpoint|compile|eval|exec|getattr|setattr|globals|locals|open|lambda|import)\b\s*[(:]"
    r"|\b(?:builtins|os|pathlib|subprocess|sys|shutil)\s*\."
)
_NUMBER_IN_TEXT_RE = re.compile(
    r"(?<![\w.])[-+]?(?:\d+[ \t]+\d+/\d+|\d+/\d+|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s*(?:\\?%|(?i:percent(?:age)?|pct)\b))?"
)
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_TEXT_COMMAND_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{[^{}]*\}"
)
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_ENVIRONMENT_RE = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}")
_NOT_PROSE_WORDS = frozenset({"and", "or", "percent", "percentage", "pct"})
_EDGE_SPACING_RE = re.compile(r"^(?:\s*(?:\\[,;:! ]|\\q?quad\b))+|(?:(?:\\[,;:! ]|\\q?quad\b)\s*)+$")


def repair_text(text: str) -> str:
    """Undo the damage that non-raw string literals do to LaTeX (lost `\\f`, `\\b`, doubled backslashes).

    Doubled backslashes are left alone in matrices, where `\\\\` separates rows.
    """
    if _LOST_ESCAPES_RE.search(text):
        text = _LOST_ESCAPES_RE.sub(lambda m: _LOST_ESCAPES[m.group(0)], text)
    if "\\\\" in text and "matrix" not in text and "array" not in text:
        text = _DOUBLED_BACKSLASH_RE.sub(r"\\", text)
    return text


def extract_final_answer(text: str) -> str | None:
    """The final answer written in a completion, as a string, or None when there is none.

    Looks, in order, for: the last `\\boxed{...}` (nested braces; also `\\fbox`; adjacent boxes such as
    `\\boxed{1}, \\boxed{2}` are read together as `1,2`; a "final answer is" statement after the box wins), the last
    `#### <answer>` line, the last "the (final) answer is ..." or "Answer: ..." phrase; then, when the text states no
    answer explicitly, a short answer written on its own, or whichever ends last of the last math environment
    (`$...$`, `\\(...\\)`, `\\[...\\]`) and the last number; and finally a short text taken whole. Text that looks
    like program code yields no answer unless it states one explicitly. When the text has a `</think>` tag, the part
    after it is searched first, and the whole text only if nothing is found there.

    Args:
        text (`str`): The completion text.

    Returns:
        `str | None`: The answer (still LaTeX, without the surrounding box or math delimiters), or None.
    """
    if not text:
        return None
    text = repair_text(text)
    parts = [text.rsplit("</think>", 1)[1], text] if "</think>" in text else [text]
    for part in parts:
        for finders in (_STATED, _UNSTATED):
            answer = _first_answer(part, finders)
            if answer is not None:
                return answer
    return _short_text(parts[0])


def extract_gold_answer(gold: str) -> str | None:
    """The answer in a gold string: a bare answer (`"72"`, `"$\\frac{1}{2}$"`) or a full solution with a box.

    Returns None when the gold is missing, empty, or holds no recognisable answer.
    """
    if not isinstance(gold, str) or not gold.strip():
        return None
    return extract_final_answer(gold)


def _first_answer(text: str, finders) -> str | None:
    for finder in finders:
        answer = finder(text)
        if answer:
            return answer
    return None


def _boxed_or_final_answer(text: str) -> str | None:
    """The last box, unless "The final answer is ..." comes after it: then that statement wins."""
    found = _last_boxed(text)
    if found is None:
        return None
    boxed, box_end = found
    return _after_marker(text, start=box_end, final_only=True) or boxed


def _last_math_or_number(text: str) -> str | None:
    """Whichever ends last of the last math environment and the last number (as Math-Verify does without anchors)."""
    env = _last_math_env_span(text)
    number = _last_number_match(text)
    if number is not None and (env is None or number.end() > env[1]):
        return _clean(number.group(0))
    return _clean(env[2]) if env is not None else None


def _clean(candidate: str | None) -> str | None:
    if candidate is None:
        return None
    candidate = candidate.strip()
    while len(candidate) >= 4 and candidate.startswith("**") and candidate.endswith("**"):
        candidate = candidate[2:-2].strip()
    for opening, closing in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if (
            len(candidate) >= len(opening) + len(closing)
            and candidate.startswith(opening)
            and candidate.endswith(closing)
        ):
            inner = candidate[len(opening) : -len(closing)]
            if opening != "$" or "$" not in inner:
                candidate = inner.strip()
    candidate = _EDGE_SPACING_RE.sub("", candidate).strip()
    if not candidate.endswith(("...", "\\ldots", "\\dots", "\\cdots")):  # "1, 2, 3, ..." is not "1, 2, 3"
        candidate = candidate.rstrip(" \t\r\n.,;:")
        candidate = _EDGE_SPACING_RE.sub("", candidate).strip()
    return candidate or None


# ---------------------------------------------------------------------------------------------------------------- boxes


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the outermost boxes among the last `_MAX_BOXES` box commands."""
    starts = [m for m in _BOX_START_RE.finditer(text)][-_MAX_BOXES:]
    spans: list[tuple[int, int, str]] = []
    for match in starts:
        if spans and match.start() < spans[-1][1]:
            continue  # a box inside the previous box
        open_brace = match.end() - 1
        close = _matching_brace(text, open_brace)
        if close is None:
            # An unclosed box (a truncated completion) runs to the end of the text.
            spans.append((match.start(), len(text), text[open_brace + 1 : open_brace + 1 + _MAX_BOX_CHARS]))
            break
        spans.append((match.start(), close + 1, text[open_brace + 1 : close]))
    return spans


def _matching_brace(text: str, open_brace: int) -> int | None:
    depth = 0
    stop = min(len(text), open_brace + _MAX_BOX_CHARS)
    for index in range(open_brace, stop):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _last_boxed(text: str) -> tuple[str, int] | None:
    """The last box, joined with the boxes just before it when they read as one list of answers.

    Two boxes belong together when little text separates them (under 10 characters, or under 70 with "and", "or", a
    comma or a semicolon) and no sentence ends between them. A run that repeats a value or is very long is a
    degenerate completion rather than a list, and only its last box counts. Returns the answer and where the last box
    ends.
    """
    if "box" not in text:
        return None
    spans = _box_spans(text)
    if not spans:
        return None
    run = [spans[-1]]
    for span in reversed(spans[:-1]):
        between = text[span[1] : run[-1][0]]
        if _SENTENCE_BREAK_RE.search(between):
            break
        if not (len(between) < 10 or (len(between) < 70 and _BOX_SEPARATOR_RE.search(between))):
            break
        run.append(span)
    contents = [content.strip() for _, _, content in reversed(run)]
    if len(contents) > _MAX_JOINED_BOXES or len(set(contents)) < len(contents):
        contents = contents[-1:]
    answer = _clean(",".join(c for c in contents if c))
    return (answer, spans[-1][1]) if answer else None


# ------------------------------------------------------------------------------------------------------------- markers


def _after_hashes(text: str) -> str | None:
    if "####" not in text:
        return None
    last = _last_match(_HASHES_RE, text)
    return _clean(last.group(1)) if last else None


def _after_marker(text: str, start: int = 0, final_only: bool = False) -> str | None:
    """The answer stated after the last "the (final) answer is", "Answer:" or bare "Answer $...$".

    Args:
        text (`str`): The text to search.
        start (`int`, defaults to 0): Only markers from this position on count.
        final_only (`bool`, defaults to False): Only "final answer" markers count.
    """
    if "nswer" not in text and "NSWER" not in text:
        return None
    for match in reversed(list(_MARKER_RE.finditer(text, start))[-_MAX_MARKERS:]):
        if final_only and not match.group("final"):
            continue
        if not (match.group("verb") or match.group("colon") or _MARKER_FOLLOWER_RE.match(text, match.end())):
            continue
        sentence = _sentence_at(text, match.end())
        answer = _answer_in_sentence(sentence)
        if answer:
            return answer
    return None


def _sentence_at(text: str, start: int) -> str:
    """The text from `start` to the end of its sentence, keeping math environments whole."""
    rest = text[start : start + 4000].lstrip(" \t*:")
    for opening, closing in (("$$", "$$"), ("\\[", "\\]")):
        if rest.startswith(opening):
            end = rest.find(closing, len(opening))
            if end >= 0:
                return rest[: end + len(closing)]
    line = rest.split("\n", 1)[0]
    hope = _I_HOPE_RE.search(line)
    if hope:
        line = line[: hope.start()]
    return line[: _sentence_end(line)]


def _sentence_end(line: str) -> int:
    in_dollar = False
    paren_depth = 0
    for index, char in enumerate(line):
        if char == "$" and (index == 0 or line[index - 1] != "\\"):
            in_dollar = not in_dollar
        elif char == "\\" and line.startswith("\\(", index):
            paren_depth += 1
        elif char == "\\" and line.startswith("\\)", index):
            paren_depth = max(0, paren_depth - 1)
        elif char == "." and not in_dollar and paren_depth == 0:
            following = line[index + 1 : index + 2]
            if following == "" or following.isspace():
                return index
    return len(line)


def _answer_in_sentence(sentence: str) -> str | None:
    sentence = re.sub(r'^(?:\\?["\']|\*)+|(?:\\?["\']|\*)+$', "", sentence.strip()).strip()
    if not sentence or _CODE_SHAPED_RE.search(sentence):
        return None
    if not _is_prose(sentence):
        return _without_dollars(sentence)
    # A sentence such as "The volume of $ABCD$ is 120": the answer is the last math or number in it.
    env = _last_math_env_span(sentence)
    number = _last_number_match(sentence)
    if number is not None and (env is None or number.end() > env[1]):
        return _clean(number.group(0))
    if env is not None:
        return _clean(env[2])
    return None


# -------------------------------------------------------------------------------------------------------- fallbacks


def _is_prose(text: str) -> bool:
    """Whether `text` reads as sentences rather than as an answer: two or more words outside math and commands."""
    outside = _strip_math_envs(text)
    outside = _ENVIRONMENT_RE.sub(" ", outside)
    outside = _TEXT_COMMAND_RE.sub(" ", outside)
    outside = _COMMAND_RE.sub(" ", outside)
    words = [w for w in _WORD_RE.findall(outside) if w.lower() not in _NOT_PROSE_WORDS]
    return len(words) >= 2


def _strip_math_envs(text: str) -> str:
    text = re.sub(r"\$\$.*?\$\$|\\\[.*?\\\]", " ", text, flags=re.DOTALL)
    return re.sub(r"(?<!\\)\$[^$\n]*\$|\\\(.*?\\\)", " ", text)


def _short_answer(text: str) -> str | None:
    stripped = text.strip()
    # One line only: "11\n5/6" is two statements, not the mixed number 11 5/6.
    if len(stripped) > _SHORT_ANSWER_MAX_CHARS or "\n" in stripped or _is_prose(stripped):
        return None
    return _without_dollars(stripped)


def _without_dollars(text: str) -> str | None:
    """A short answer with its math delimiters dropped: `$1$ and $2$` reads as `1 and 2`."""
    if "$" in text:
        text = re.sub(r"(?<!\\)\$+", " ", text)
    return _clean(" ".join(text.split()))


def _last_math_env_span(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the math environment that ends last in `text`."""
    found: list[tuple[int, int, str]] = []
    for opening, closing in (("\\[", "\\]"), ("\\(", "\\)")):
        end = text.rfind(closing)
        if end >= 0:
            start = text.rfind(opening, 0, end)
            if start >= 0:
                found.append((start, end + len(closing), text[start + len(opening) : end]))
    dollar = _last_dollar_env(text)
    if dollar is not None:
        found.append(dollar)
    found = [span for span in found if span[2].strip()]
    return max(found, key=lambda span: span[1]) if found else None


def _last_dollar_env(text: str) -> tuple[int, int, str] | None:
    if "$" not in text:
        return None
    last = None
    index = 0
    length = len(text)
    while True:
        start = text.find("$", index)
        if start < 0:
            return last
        if start > 0 and text[start - 1] == "\\":
            index = start + 1
            continue
        if text.startswith("$$", start):
            end = text.find("$$", start + 2)
            if end < 0:
                return last
            last = (start, end + 2, text[start + 2 : end])
            index = end + 2
            continue
        end = start + 1
        while end < length:
            end = text.find("$", end)
            if end < 0 or text[end - 1] != "\\":
                break
            end += 1
        if end < 0 or end >= length:
            return last
        content = text[start + 1 : end]
        if "\n" in content:
            # Inline math does not span lines: this "$" was a currency sign or a stray; move on from it.
            index = start + 1
            continue
        last = (start, end + 1, content)
        index = end + 1


def _last_number_match(text: str) -> re.Match[str] | None:
    return _last_match(_NUMBER_IN_TEXT_RE, text)


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _short_text(text: str) -> str | None:
    """A short text taken whole, as a last resort (a plain-text answer such as "regular hexagon")."""
    if _CODE_SHAPED_RE.search(text):
        return None
    stripped = " ".join(text.split())
    return _clean(stripped) if 0 < len(stripped) <= 100 else None


def _unless_code(finder):
    """Without an explicit answer, program text has none: guessing one out of it would reward code."""

    def guarded(text: str) -> str | None:
        return None if _CODE_SHAPED_RE.search(text) else finder(text)

    return guarded


# Answers stated explicitly (a box, "####", "the answer is"), then answers inferred from the shape of the text.
_STATED = (_boxed_or_final_answer, _after_hashes, _after_marker)
_UNSTATED = (_unless_code(_short_answer), _unless_code(_last_math_or_number))


# --------------------------------------------------------------------------------------------------- number fast path


@dataclass(frozen=True)
class PlainNumber:
    """A number written plainly: its exact value, whether it carried a percent sign, and whether it was a decimal."""

    value: Fraction | None  # None for a malformed mixed number such as "4 4/0", which equals nothing
    percent: bool = False
    decimal: bool = False
    variable: str | None = None  # the "x" of "x = 5"


_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\q?quad\b|\\displaystyle|\\left\b|\\right\b|~")
_DEGREES_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ\b|\\degree\b|\^\s*\{\s*\\text\{o\}\s*\}")
_PERCENT_RE = re.compile(r"(?:\\?%|(?i:percent(?:age)?|pct)\b)\s*$")
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$|€|£|¥|₹)\s*|\s*(?:\\\$|\$|€|£|¥|₹)$")
_ASSIGNMENT_RE = re.compile(r"^([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)\s*=\s*")
_UNIT_SUFFIX_RE = re.compile(r"(?<=[\d.}])\s*(?:[A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*|[mgshlt])(?:\^?[23²³])?$")
_SIGN = r"(?P<sign>[-+])?\s*"
_NUMBER_FORMS = [
    ("thousands", re.compile(_SIGN + r"(?P<int>\d{1,3}(?:,\d{3})+)(?P<frac>\.\d+)?$")),
    ("thousands", re.compile(_SIGN + r"(?P<int>\d{1,3}(?: \d{3})+)(?P<frac>\.\d+)?$")),
    ("decimal", re.compile(_SIGN + r"(?P<int>\d*)(?P<frac>\.\d+|\.)?$")),
    (
        "scientific",
        re.compile(
            _SIGN + r"(?P<int>\d+)(?P<frac>\.\d+)?\s*(?:[eE]|\\times\s*10\s*\^)\s*\{?(?P<exp>[-+]?\d{1,3})\}?$"
        ),
    ),
    ("fraction", re.compile(_SIGN + r"(?P<num>\d+)\s*/\s*(?P<den>\d+)$")),
    (
        "fraction",
        re.compile(
            _SIGN
            + r"\\[dtc]?frac\s*(?:\{\s*(?P<num>\d+)\s*\}|(?P<num1>\d))\s*(?:\{\s*(?P<den>\d+)\s*\}|(?P<den1>\d))$"
        ),
    ),
    ("mixed", re.compile(_SIGN + r"(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)$")),
    ("mixed", re.compile(_SIGN + r"(?P<whole>\d+)\s*\\[dtc]?frac\s*\{\s*(?P<num>\d+)\s*\}\s*\{\s*(?P<den>\d+)\s*\}$")),
]
_DECIMAL_COMMA_RE = re.compile(r"(?P<sign>[-+])?(?P<int>\d+),(?P<frac>\d+)$")


def parse_plain_number(answer: str, decimal_comma: bool = False) -> PlainNumber | None:
    """Read `answer` as a plain number, or return None when it is anything else.

    Accepts signs, thousands separators (`7,425,000`, `1 000`, `14{,}916`, `1\\,234`), decimals (`.5`, `1000.0`),
    `a/b` and `\\frac{a}{b}` (also `\\dfrac`, `\\tfrac`, `\\frac12`), mixed numbers (`4 4/9`), `1.5 \\times 10^3`,
    percentages, currency signs, degrees, a trailing unit (`5 cm`, `\\text{ dollars}`) and an `x =` in front.

    Args:
        answer (`str`): An extracted answer.
        decimal_comma (`bool`, defaults to False):
            Read `1,22` as 1.22. Off by default, since `1,22` is more often the list {1, 22}.
    """
    if len(answer) > _FAST_PATH_MAX_CHARS or not any(c.isdigit() for c in answer):
        return None
    text, percent, variable = _number_core(answer)
    if text is None:
        return None
    if decimal_comma:
        match = _DECIMAL_COMMA_RE.match(text)
        if not match or (len(match.group("frac")) == 3 and match.group("int") not in ("0", "")):
            return None
        value = Fraction(f"{match.group('int')}.{match.group('frac')}")
        return PlainNumber(-value if match.group("sign") == "-" else value, percent, True, variable)
    for form, pattern in _NUMBER_FORMS:
        match = pattern.match(text)
        if match:
            number = _number_from_match(form, match)
            if number is None:
                return None
            value, decimal = number
            if value is not None and match.group("sign") == "-":
                value = -value
            return PlainNumber(value, percent, decimal, variable)
    return None


def _number_core(answer: str) -> tuple[str | None, bool, str | None]:
    """Strip what surrounds a number (wrappers, units, percent, currency, `x =`); returns (core, percent, variable)."""
    text = answer.replace("{,}", ",").replace("\\%", "%").replace("\\$", "$")
    text = re.sub(r"\\!\s*", "", text)  # "11,\\! 111" is 11,111
    text = _SPACING_RE.sub(lambda m: "" if m.group(0) == "\\," else " ", text)
    text = _WRAPPER_RE.sub(lambda m: " " + m.group(1), text)
    text = _DEGREES_RE.sub("", text)
    text = " ".join(text.split())
    variable = None
    match = _ASSIGNMENT_RE.match(text)
    if match:
        variable = match.group(1).replace("{", "").replace("}", "")
        text = text[match.end() :]
    percent = False
    for _ in range(2):
        text = _CURRENCY_RE.sub("", text).strip()
        match = _PERCENT_RE.search(text)
        if match:
            percent = True
            text = text[: match.start()].strip()
        text = _strip_unit(text)
    if text.startswith("(") and text.endswith(")") and "," not in text:
        text = text[1:-1].strip()
    return (text or None), percent, variable


def _strip_unit(text: str) -> str:
    """Drop a trailing unit word (`5 cm`, `10 square units`), but not a constant such as `2 pi`."""
    match = _UNIT_SUFFIX_RE.search(text)
    if match is None or any(word.lower() in _MATH_WORDS for word in _WORD_RE.findall(match.group(0))):
        return text
    return text[: match.start()].strip()


def _number_from_match(form: str, match: re.Match[str]) -> tuple[Fraction | None, bool] | None:
    groups = match.groupdict()
    if form in ("thousands", "decimal"):
        integer = groups["int"].replace(",", "").replace(" ", "")
        frac = groups["frac"] or ""
        if form == "thousands" and groups["int"].startswith("0,"):
            return None  # "0,111" is a decimal comma, left to the decimal-comma reading
        if not integer and frac in ("", "."):
            return None
        return Fraction(f"{integer or '0'}{frac.rstrip('.') if frac == '.' else frac}"), bool(frac.strip("."))
    if form == "scientific":
        mantissa = Fraction(f"{groups['int']}{groups['frac'] or ''}")
        return mantissa * Fraction(10) ** int(groups["exp"]), bool(groups["frac"])
    numerator = int(groups.get("num") or groups.get("num1"))
    denominator = int(groups.get("den") or groups.get("den1"))
    if form == "fraction":
        return (None, False) if denominator == 0 else (Fraction(numerator, denominator), False)
    # A mixed number needs a proper fraction: "4 4/0" and "11 7/6" are malformed and equal nothing.
    if denominator == 0 or numerator >= denominator:
        return None, False
    return int(groups["whole"]) + Fraction(numerator, denominator), False


def plain_numbers_equal(gold: PlainNumber, pred: PlainNumber) -> bool:
    """Equality of two plain numbers.

    Values compare with a relative tolerance of 1e-6 (0.333333 equals 1/3). A percentage equals its value (50% = 0.5 = 1/2); as in Math-Verify,
    it also equals its bare number when both are integers (28% = 28), but numbers are never rescaled otherwise.
    """
    if gold.value is None or pred.value is None:
        return False
    if gold.variable and pred.variable and gold.variable != pred.variable:
        return False
    if gold.percent == pred.percent:
        return _values_close(gold.value, pred.value)
    pct, other = (gold, pred) if gold.percent else (pred, gold)
    if pct.value.denominator == 1 and other.value.denominator == 1 and not other.decimal and pct.value == other.value:
        return True
    return _values_close(pct.value / 100, other.value)


def _values_close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))


def compare_plain_numbers(gold: str, pred: str) -> bool | None:
    """Compare two answers as plain numbers; None when either is not one."""
    gold_number = parse_plain_number(gold)
    pred_number = parse_plain_number(pred)
    if gold_number is not None and pred_number is None and gold_number.decimal:
        pred_number = parse_plain_number(pred, decimal_comma=True)
    elif pred_number is not None and gold_number is None and pred_number.decimal:
        gold_number = parse_plain_number(gold, decimal_comma=True)
    if gold_number is None or pred_number is None:
        return None
    return plain_numbers_equal(gold_number, pred_number)


# ----------------------------------------------------------------------------------------------------- text answers

_TEXT_ANSWER_RE = re.compile(r"[A-Za-z][A-Za-z' -]*")
_LETTER_CHOICE_RE = re.compile(r"\(?[A-Za-z]{1,3}\)?")
_MATH_WORDS = frozenset(
    {
        "pi", "sqrt", "frac", "infty", "inf", "infinity", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln",
        "exp", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "min", "max", "gcd", "lcm", "mod", "det",
    }
)  # fmt: skip


def text_answer(answer: str) -> str | None:
    """The normalised words of an answer that is plain text (`\\text{Evelyn}`, `odd`, `(C)`), else None.

    Single letters count as text only inside a text command (`\\text{E}`), since a bare `e` is Euler's number.
    """
    if len(answer) > _FAST_PATH_MAX_CHARS:
        return None
    text = answer.strip()
    wrapped = bool(_WRAPPER_RE.search(text))
    text = _WRAPPER_RE.sub(lambda m: " " + m.group(1) + " ", text)
    text = _SPACING_RE.sub(" ", text).replace("$", " ")
    text = " ".join(text.split()).strip(" .")
    if len(text) >= 3 and text[0] == "(" and text[-1] == ")" and text[1:-1].isalpha():
        text = text[1:-1]  # the "(C)" of a multiple-choice answer
    if not text or not _TEXT_ANSWER_RE.fullmatch(text):
        return None
    letters = text.replace(" ", "")
    if not wrapped and (len(letters) < 2 or text.lower() in _MATH_WORDS):
        return None
    return text.casefold()


def letters_of(answer: str) -> str:
    """The letters of a short symbolic answer, casefolded (`E` -> `e`); used against a text answer."""
    text = _WRAPPER_RE.sub(lambda m: m.group(1), answer)
    return "".join(c for c in text if c.isalpha()).casefold()


def compare_text(gold: str, pred: str) -> bool | None:
    """Compare answers when at least one is plain text; None when neither is."""
    gold_text = text_answer(gold)
    pred_text = text_answer(pred)
    if gold_text is None and pred_text is None:
        return None
    if gold_text is not None and pred_text is not None:
        return gold_text == pred_text
    other = pred if gold_text is not None else gold
    words = gold_text if gold_text is not None else pred_text
    if _LETTER_CHOICE_RE.fullmatch(other.strip()):
        return letters_of(other) == words.replace(" ", "")
    return None


# --------------------------------------------------------------------------------------------------- same spelling

_CANONICAL_DROP_RE = re.compile(r"\\left\b|\\right\b|\\[,;:!]|\\q?quad\b|\\displaystyle\b|\$")
# Whitespace, except between two digits, where it may separate a whole part from a fraction ("2 3/4").
_LAYOUT_SPACE_RE = re.compile(r"(?<!\d)\s+|\s+(?!\d)")


def canonical_spelling(answer: str) -> str:
    """A spelling of `answer` with layout removed, so that two answers spelled the same way compare equal."""
    text = _CANONICAL_DROP_RE.sub(" ", answer)
    text = _LAYOUT_SPACE_RE.sub("", " ".join(text.split()))
    text = re.sub(r"\\[dtc]frac", r"\\frac", text)
    return text.rstrip(".")
