"""The public checks: requests (rules, then the classifier), answers, refusals, the disclaimer."""

from __future__ import annotations

from helpers.safety.classify import (
    Classifier,
    answer_classifier,
    classifier,
    score_many,
    score_segments,
)
from helpers.safety.rules import Verdict, match_request_rules, match_response_rules
from helpers.safety.text import check_text

DISCLAIMER = "⚠️ These are general guidelines; consult your physician for personalized advice."
SELF_HARM = "self_harm"


def _classify(text: str, clf: Classifier) -> tuple[float, str]:
    """Return a text's highest segment score and the category nearest that segment."""
    score, vector = score_segments(clf, text)
    return score, clf.category(vector)


def check_request(text: str) -> Verdict:
    """Decide whether a user's request is dangerous: rules first, then the classifier.

    Both see the text after :func:`.text.normalise` (obfuscation undone); the classifier
    scores each sentence and takes the maximum.
    """
    text = check_text(text, "text")
    if not text.strip():
        return Verdict(False, reason="empty request")
    clf = classifier()
    score, category = _classify(text, clf)
    rule = match_request_rules(text)
    if rule is not None:
        return Verdict(True, rule.category, rule.reason, score)
    if score >= clf.threshold:
        reason = f"classifier: P(dangerous) = {score:.2f} >= threshold {clf.threshold:.2f}"
        return Verdict(True, category, reason, score)
    return Verdict(
        False, reason=f"no rule; P(dangerous) = {score:.2f} < {clf.threshold:.2f}", score=score
    )


def check_response(text: str) -> Verdict:
    """Decide whether an answer recommends a dangerous action: rules, then the classifier.

    Both work sentence by sentence (the classifier takes the highest sentence's score), so a
    friendly opening cannot hide the sentence that recommends the harm.
    """
    return check_responses([text])[0]


def check_responses(texts: list[str]) -> list[Verdict]:
    """:func:`check_response` for many answers, with one embedding call for all of them."""
    texts = [check_text(text, "text") for text in texts]
    verdicts = [match_response_rules(text) for text in texts]
    to_score = [i for i, text in enumerate(texts) if verdicts[i] is None and text.strip()]
    clf = answer_classifier()
    scored = score_many(clf, [texts[i] for i in to_score]) if to_score else []
    for i, (score, vector) in zip(to_score, scored, strict=True):
        if score >= clf.threshold:
            reason = f"answer classifier: P(dangerous) = {score:.2f} >= {clf.threshold:.2f}"
            verdicts[i] = Verdict(True, clf.category(vector), reason, score)
        else:
            verdicts[i] = Verdict(False, reason="no dangerous recommendation found", score=score)
    empty = Verdict(False, reason="empty answer")
    return [empty if verdict is None else verdict for verdict in verdicts]


_SELF_HARM_REFUSAL = (
    "I'm really sorry you're feeling this way, and I can't help with that. You don't have to "
    "face this alone. If you are in danger right now, call your local emergency number "
    "(for example 911 in the US or 112 in Europe) or go to the nearest emergency department. "
    "You can also reach a crisis line any time: in the US, call or text 988 (Suicide & Crisis "
    "Lifeline); elsewhere, your local crisis line or emergency services can connect you with "
    "someone to talk to. If you can, tell someone you trust how you're feeling."
)
_CATEGORY_REASONS = {
    "overdose": "taking more than the label or your prescriber allows can cause serious harm",
    "stopping_medication": "stopping or changing a prescribed medicine alone can be dangerous",
    "illegal_drugs": "medicines obtained without a prescription can be fake or unsafe",
    "dangerous_remedy": "that remedy can cause poisoning or serious injury",
    "dangerous_procedure": "doing that procedure yourself can cause infection or serious injury",
    "dangerous_mixing": "that combination can cause dangerous interactions",
    "unsafe_dosing": "children and older people need doses worked out for them, not adult ones",
    "prescription_misuse": "a medicine prescribed for someone else, or left over, may be wrong "
    "for you",
}
_OWN_REFUSALS = {  # categories whose refusal is not "ask a doctor or pharmacist"
    "harming_others": (
        "I can't help with anything that could harm another person, including giving someone "
        "a medicine or substance without their knowledge. If someone is in danger, call your "
        "local emergency number now. If you are caring for someone who is hard to manage, "
        "their doctor can help safely."
    ),
    "eating_disorder": (
        "I'm sorry you're going through this, and I can't help with that, because it could "
        "seriously harm your body. You deserve support: an eating-disorder helpline or your "
        "doctor can listen without judgement. If you feel unwell or unsafe, call your local "
        "emergency number."
    ),
}


def refusal(verdict: Verdict) -> str:
    """Return a refusal for a blocked verdict: crisis help for self-harm, else a professional."""
    if not verdict.blocked:
        raise ValueError("refusal() needs a blocked verdict; this one allows the request")
    if verdict.category == SELF_HARM:
        return _SELF_HARM_REFUSAL
    if verdict.category in _OWN_REFUSALS:
        return _OWN_REFUSALS[verdict.category]
    why = _CATEGORY_REASONS.get(verdict.category, "it could put your health at risk")
    return (
        f"I'm sorry, but I can't help with that, because {why}. Please talk to a doctor or "
        "pharmacist, who can advise you safely. If someone may already be in danger, call your "
        "local emergency number or a poison control center now."
    )


def _is_disclaimer(line: str) -> bool:
    """Tell whether a line is the disclaimer, with or without its warning sign."""
    body = DISCLAIMER.removeprefix("⚠️").strip().lower()
    return line.replace("\ufe0f", "").replace("⚠", "").strip().lower() == body


def has_disclaimer(text: str) -> bool:
    """Tell whether an answer ends with the disclaimer line, and has it only there.

    The one definition of the medical house style, for every notebook: the last non-empty
    line is the disclaimer (with or without its warning sign, in any case) and no other line
    is. An answer that mentions a physician in passing, or that was cut before its last
    line, does not count; :func:`ensure_disclaimer`'s output always does.
    """
    lines = [line for line in check_text(text, "text").splitlines() if line.strip()]
    return bool(lines) and _is_disclaimer(lines[-1]) and sum(map(_is_disclaimer, lines)) == 1


def ensure_disclaimer(text: str) -> str:
    """Return ``text`` ending with exactly one disclaimer line (existing copies are merged)."""
    lines = [
        line for line in check_text(text, "text").strip().splitlines() if not _is_disclaimer(line)
    ]
    body = "\n".join(lines).strip()
    return f"{body}\n{DISCLAIMER}" if body else DISCLAIMER


def _strings(answers: list, expected: str) -> list[str]:
    """Return the generated answers, or say which one is not a string."""
    for answer in answers:
        if not isinstance(answer, str):
            raise TypeError(f"{expected}, got {type(answer).__name__}")
    return answers


def _finish(answer: str, verdict: Verdict) -> str:
    """Replace an answer its check blocked by a refusal; end it with the disclaimer."""
    return ensure_disclaimer(refusal(verdict) if verdict.blocked else answer)


def safe_generate(generate_fn, question: str, **generate_kwargs) -> str:
    """Answer ``question`` safely: check it, generate, check the answer, add the disclaimer."""
    verdict = check_request(question)
    if verdict.blocked:
        return ensure_disclaimer(refusal(verdict))
    expected = "generate_fn must return a string"
    [answer] = _strings([generate_fn(question, **generate_kwargs)], expected)
    return _finish(answer, check_response(answer))


def safe_generate_batch(generate_many, questions: list[str], **generate_kwargs) -> list[str]:
    """:func:`safe_generate` for requests that arrive together, with one generation call.

    ``generate_many`` maps a list of questions to their answers, in order (one batch on the
    model); it sees only the questions the request check lets through, and is not called
    when it blocks them all. The answers are checked together (:func:`check_responses`) and
    come back in the order of ``questions``.
    """
    verdicts = [check_request(question) for question in questions]
    allowed = [q for q, verdict in zip(questions, verdicts, strict=True) if not verdict.blocked]
    generated = list(generate_many(allowed, **generate_kwargs)) if allowed else []
    if len(generated) != len(allowed):
        raise ValueError(f"generate_many returned {len(generated)} answers for {len(allowed)}")
    generated = _strings(generated, "generate_many must return strings")
    answers = iter(map(_finish, generated, check_responses(generated)))
    return [
        ensure_disclaimer(refusal(verdict)) if verdict.blocked else next(answers)
        for verdict in verdicts
    ]
