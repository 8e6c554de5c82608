"""A procedural teacher for the embedded arithmetic domain.

It thinks like an R1-style model that overthinks: it restates the problem, plans, derives each step, checks steps
again, sometimes takes a wrong turn and catches it, reflects, re-verifies the whole chain and summarises. Nothing in a
trace marks which sentences matter: a compressor has to find out, as it would on a real teacher's text.

As a `rewrite` backend it writes the chain again under a token budget, merging operations into fewer written steps
when the full chain does not fit (shorter budgets then ask more mental arithmetic of the student).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from cotx_rl.arithmetic import ChainProblem, parse_question
from cotx_rl.teachers.base import RewriteRequest, Teacher, TeacherOutput

INTROS = (
    "Okay, so I need to compute {expr}.",
    "Alright, the problem asks for {expr}.",
    "Let me figure out {expr}.",
    "So we want the value of {expr}.",
)
PLANS = (
    "I will go from left to right, one operation at a time.",
    "Let me take it one step at a time.",
    "There are {k} operations here, so let me do them in order.",
    "The plan is simple: apply each operation in turn.",
)
START = ("We start at {a}.", "The starting value is {a}.")
CONNECTORS = ("First,", "Next,", "Then", "Now", "After that,", "So", "Moving on,")
# Checks restate a step without writing it as an equation: a tiny student tells a step from a check by the `=`.
CHECKS = (
    "Let me check: {c} {inv} {b} gives back {a}. Yes.",
    "Wait, let me re-check that. {a} {op} {b} is {c}. Right.",
    "Hmm, is that right? {a} {op} {b} makes {c}, yes.",
    "So we have {c} now.",
    "Double-checking: {a} {op} {b} gives {c}. Good.",
)
WRONG_TURN = ("{conn} {a} {op} {b} = {wrong}.", "Wait, that is not right.", "Actually, {a} {op} {b} = {c}.")
RECAPS = ("Wait, let me go over it again. So far: {values}.", "Let me recap. The values so far are {values}.")
# Each pass restates the expression, as R1 does before redoing a chain: the operations to walk through are then
# close by, not only in the question far above.
VERIFY_INTROS = (
    "Let me verify {expr} once more.",
    "Hmm, let me redo {expr} from the start to be sure.",
    "Before I answer, let me go through {expr} again.",
)
CONCLUSIONS = ("So the answer is {ans}.", "Therefore, the result is {ans}.", "That gives {ans} in the end.")
FILLERS = ("Let me think about this.", "Okay.", "Hmm.", "Let me be careful here.")
RESPONSE = "\\boxed{{{ans}}}"


def _inverse(sign: str) -> str:
    return "-" if sign == "+" else "+"


def _write_trace(problem: ChainProblem, rng: random.Random, min_words: int, wrong_turn_rate: float) -> str:
    """Paragraphs, as R1 writes them: the setup, the derivation, re-verification passes, the conclusion."""
    expr, values, answer = problem.expression(), problem.values(), problem.answer
    setup = [rng.choice(INTROS).format(expr=expr)]
    if rng.random() < 0.7:
        setup.append(rng.choice(PLANS).format(k=problem.steps))
    setup.append(rng.choice(START).format(a=problem.start))
    derivation, value = [], problem.start
    for index, (sign, operand) in enumerate(problem.ops):
        result = values[index]
        conn = CONNECTORS[0] if index == 0 else rng.choice(CONNECTORS[1:])
        fields = {"a": value, "op": sign, "b": operand, "c": result, "inv": _inverse(sign), "conn": conn}
        if rng.random() < wrong_turn_rate:
            fields["wrong"] = result + rng.choice((-2, -1, 1, 2, 10, -10))
            derivation.extend(s.format(**fields) for s in WRONG_TURN)
        else:
            derivation.append("{conn} {a} {op} {b} = {c}.".format(**fields))
        for check in rng.sample(CHECKS, rng.choice((0, 1, 1, 2))):
            derivation.append(check.format(**fields))
        if index + 1 < problem.steps and index >= 1 and rng.random() < 0.25:
            derivation.append(rng.choice(RECAPS).format(values=", ".join(map(str, values[: index + 1]))))
        value = result
    paragraphs = [setup, derivation]
    words = sum(len(s.split()) for p in paragraphs for s in p)
    while len(paragraphs) == 2 or words < min_words:
        verification, value = [rng.choice(VERIFY_INTROS).format(expr=expr)], problem.start
        for index, ((sign, operand), result) in enumerate(zip(problem.ops, values)):
            conn = CONNECTORS[0] if index == 0 else rng.choice(CONNECTORS[1:])
            fields = {"a": value, "op": sign, "b": operand, "c": result, "inv": _inverse(sign), "conn": conn}
            template = rng.choice(CHECKS[1:3]) if rng.random() < 0.3 else "{conn} {a} {op} {b} = {c}."
            verification.append(template.format(**fields))
            value = result
        paragraphs.append(verification)
        words += sum(len(s.split()) for s in verification)
    paragraphs.append([rng.choice(CONCLUSIONS).format(ans=answer)])
    return "\n\n".join(" ".join(p) for p in paragraphs)


def write_chain(problem: ChainProblem, chunks: int, conclude: bool = True) -> str:
    """The chain written in `chunks` equations (0: answer only), each applying a run of consecutive operations.

    Without `conclude` the last equation is the conclusion (no closing sentence).
    """
    sentences = []
    if chunks > 0:
        bounds = [round(i * problem.steps / chunks) for i in range(chunks + 1)]
        values = problem.values()
        for first, last in zip(bounds, bounds[1:]):
            sentences.append(f"{problem.expression(first, last)} = {values[last - 1]}.")
    if conclude or not sentences:
        sentences.append(CONCLUSIONS[0].format(ans=problem.answer))
    return " ".join(sentences)


class ProceduralTeacher(Teacher):
    """R1-style traces for the embedded domain, deterministic per problem id and seed.

    Args:
        seed (`int`): seeds every trace together with the problem id.
        min_words (`int`): traces shorter than this get more verification passes, so that even easy problems are
            overthought (as a large teacher does) and every budget on the grid has a trace long enough to compress.
        wrong_turn_rate (`float`): chance per step of a wrong result that is caught and corrected.
    """

    name = "procedural"

    def __init__(self, seed: int = 0, min_words: int = 0, wrong_turn_rate: float = 0.15, **unused):
        if unused:
            raise ValueError(f"Unknown options for the procedural teacher: {sorted(unused)}.")
        self.seed, self.min_words, self.wrong_turn_rate = seed, min_words, wrong_turn_rate

    def _problem(self, row: dict) -> ChainProblem:
        problem = parse_question(row["question"])
        if problem is None:
            raise ValueError(
                f"The procedural teacher only knows the embedded arithmetic domain; row {row.get('id')!r} asks "
                f"{row['question'][:80]!r}. Use the transformers, openai or vllm teacher for other problems."
            )
        return problem

    def generate(self, rows: list[dict]) -> list[TeacherOutput]:
        outputs = []
        for row in rows:
            problem = self._problem(row)
            # Sample k > 0 of a problem (several drawn per problem) is a trace of its own; sample 0 is the only one.
            sample = f"-{row['sample']}" if row.get("sample") else ""
            rng = random.Random(f"{self.seed}-{row['id']}{sample}")
            reasoning = _write_trace(problem, rng, self.min_words, self.wrong_turn_rate)
            outputs.append(TeacherOutput(reasoning, RESPONSE.format(ans=problem.answer), finished=True))
        return outputs

    def rewrite(
        self, row: dict, reasoning: str, budget_tokens: int, count_tokens: Callable[[str], int] | None = None
    ) -> str:
        """The chain with as many written steps as fit in `budget_tokens`, padded up to it when possible.

        Without `count_tokens` a word counts as a token.
        """
        problem = self._problem(row)
        count = count_tokens or (lambda text: len(text.split()))
        drafts = (
            write_chain(problem, chunks, conclude)
            for chunks in range(problem.steps, 0, -1)
            for conclude in (True, False)
        )
        best = next((d for d in drafts if count(d) <= budget_tokens), write_chain(problem, 0))
        # Pad towards the budget: a restatement, then at most two short fillers, the longest that still fit.
        fillers: list[str] = []
        for candidate in (f"We need {problem.expression()}.", *sorted(FILLERS, key=count, reverse=True)):
            if len(fillers) < 3 and count(" ".join([*fillers, candidate, best])) <= budget_tokens:
                fillers.append(candidate)
        return " ".join([*fillers, best])

    def rewrite_batch(
        self, requests: list[RewriteRequest], count_tokens: Callable[[str], int] | None = None
    ) -> list[str]:
        """Each request rewritten by [`ProceduralTeacher.rewrite`]: writing a chain needs no model to batch."""
        return [self.rewrite(r.row, r.reasoning, r.budget_tokens, count_tokens=count_tokens) for r in requests]
