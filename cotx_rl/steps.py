"""Reasoning of the embedded domain as steps: splitting, the arithmetic a step derives, which steps its chain rests on.

The answer check of every trace, [`leads_to_answer`], is here too: strict for the embedded domain, the verifier's for
any other ([`cotx_rl.segments`] reads real reasoning).

Arithmetic in model text is evaluated by walking a parsed syntax tree that admits numbers and `+ - * /` only: no
`eval`, nothing that could run code.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from fractions import Fraction

from cotx_rl.arithmetic import ChainProblem, chain_support, parse_question
from cotx_rl.segments import reaches_answer

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|\n+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
# "lhs = rhs" where the lhs is an arithmetic expression and the rhs a number; `x` and `×` read as multiplication.
_EQUATION = re.compile(r"((?:\d+(?:\.\d+)?|[-+*/×÷()]|(?<=\s)x(?=\s)|\s)+?)\s*=\s*(-?\d+(?:\.\d+)?)(?![\d.]\d)")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_MAX_EXPRESSION_CHARS = 200


def split_steps(reasoning: str) -> list[str]:
    """Steps of a reasoning text in order: sentences or lines, joined with spaces they give back its content.

    A fragment that cannot stand alone is kept with the step before it: a one- or two-word sentence ("Yes.",
    "Right."), or a sentence without numbers right after a step that got its arithmetic wrong ("Wait, that is not
    right."), so that dropping a wrong turn drops its retraction too.
    """
    steps: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(reasoning)):
        if not sentence:
            continue
        attach = len(sentence.split()) <= 2 or (
            not _NUMBER.search(sentence) and bool(steps) and step_facts(steps[-1]).false_equations > 0
        )
        if steps and attach:
            steps[-1] = f"{steps[-1]} {sentence}"
        else:
            steps.append(sentence)
    return steps


def split_paragraphs(reasoning: str) -> list[list[str]]:
    """The steps of each paragraph (blocks separated by a blank line), in order."""
    blocks = (block for block in _PARAGRAPH_BREAK.split(reasoning) if block.strip())
    return [steps for steps in (split_steps(block) for block in blocks) if steps]


def safe_arithmetic(expression: str) -> Fraction | None:
    """The exact value of a short `+ - * /` expression of numbers, or None when it is anything else."""
    expression = expression.replace("×", "*").replace("÷", "/").replace("x", "*").strip()
    if not expression or len(expression) > _MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError):
        return None

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ZeroDivisionError
            return _BINOPS[type(node.op)](left, right)
        raise ValueError("not arithmetic")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def numbers_in(text: str) -> list[Fraction]:
    return [Fraction(n) for n in _NUMBER.findall(text)]


@dataclass
class StepFacts:
    """What one step says in arithmetic: the values it derives (true equations) and the ones it gets wrong."""

    text: str
    derives: list[Fraction] = field(default_factory=list)
    uses: list[Fraction] = field(default_factory=list)
    false_equations: int = 0


def step_facts(text: str) -> StepFacts:
    facts = StepFacts(text)
    for lhs, rhs in _EQUATION.findall(text):
        if not re.search(r"\d", lhs):
            continue
        value = safe_arithmetic(lhs)
        if value is None:
            continue
        if value == Fraction(rhs):
            facts.derives.append(value)
            facts.uses.extend(numbers_in(lhs))
        else:
            facts.false_equations += 1
    return facts


def embedded_problem(question: str, answer: str) -> ChainProblem | None:
    """The embedded-domain problem behind `question` when `answer` is its chain's result, else None."""
    problem = parse_question(question)
    return problem if problem is not None and str(problem.answer) == str(answer).strip() else None


def supporting_steps(steps: list[str], answer: str, question: str) -> set[int] | None:
    """Indices of the steps an embedded-domain conclusion rests on, or None when the chain breaks.

    The steps must carry the whole chain of operations ([`~cotx_rl.arithmetic.chain_support`]). Questions of other
    domains have no chain to carry (None): their traces are read as segments ([`cotx_rl.segments`]).
    """
    problem = embedded_problem(question, answer)
    return None if problem is None else chain_support(steps, problem)


def leads_to_answer(reasoning: str, answer: str, question: str) -> bool:
    """Whether a reasoning still reaches the gold `answer`.

    For the embedded domain the check is strict: the steps carry every operation of the chain and none of them states
    a false equation. Elsewhere the project's verifier must read the gold answer in the reasoning, with no other final
    answer after it ([`cotx_rl.segments.reaches_answer`]): real reasoning derives its numbers in words and LaTeX as
    often as in `a op b = c` lines.
    """
    if embedded_problem(question, answer) is None:
        return reaches_answer(reasoning, answer)
    steps = split_steps(reasoning)
    support = supporting_steps(steps, answer, question)
    if support is None:
        return False
    return all(step_facts(steps[i]).false_equations == 0 for i in support)
