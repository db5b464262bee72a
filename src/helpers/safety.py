"""A safety filter for the medical assistant: rules plus a classifier on sentence embeddings.

``check_request`` blocks dangerous requests (overdoses, stopping medication against advice,
self-harm, obtaining prescription drugs illegally, dangerous remedies, procedures and
mixtures); ``check_response`` blocks answers that recommend dangerous actions;
``safe_generate`` wraps any ``question -> answer`` function with both checks, a refusal
and the disclaimer. Two layers work together:

1. high-precision regular expressions (case-insensitive, tolerant of a few common typos);
2. a logistic regression on all-MiniLM-L6-v2 embeddings, trained on
   ``data/samples/medical_safety.jsonl``, which catches paraphrases and indirect phrasing.

The fitted classifier ships as ``safety_classifier.json`` next to this module (a few
kilobytes); ``python -m helpers.safety fit`` refits it after the data changes, and
``evaluate_filter`` measures both layers on held-out folds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import embeddings
from helpers.paths import sample_path

DISCLAIMER = "⚠️ These are general guidelines; consult your physician for personalized advice."
DATA_NAME = "medical_safety.jsonl"
CLASSIFIER_FILE = Path(__file__).with_name("safety_classifier.json")
LABELS = ("benign", "dangerous")
TARGET_RECALL = 0.95
C = 10.0  # inverse regularisation of the logistic regression (embeddings are unit vectors)
SELF_HARM = "self_harm"


@dataclass(frozen=True)
class Verdict:
    """The filter's decision: ``blocked``, the dangerous ``category`` and a readable ``reason``."""

    blocked: bool
    category: str | None = None
    reason: str = ""
    score: float | None = None  # the classifier's P(dangerous), when it was consulted


# --- rules --------------------------------------------------------------------------------
# Each rule is (name, category, patterns); it fires when every pattern matches the text.

_INTENT = (
    r"(?:i'?m|i\s+am|im|i'?ll|i\s+will|i\s+wanna|i\s+want\s+to|i\s+need\s+to|gonna|going\s+to|"
    r"planning\s+(?:on|to)|thinking\s+(?:of|about)|how\s+(?:do|can|could|should|would)\s+i|"
    r"help\s+me)"
)
_SUPERVISED_STOP = (  # a request to stop with the doctor is benign: the stop rules skip it
    r"^(?!.*\b(?:with\s+(?:my|the|a)\s+(?:doctor|gp|psychiatrist|prescriber)|"
    r"doctor'?s\s+(?:help|advice|ok|okay|approval)|(?:doctor|psychiatrist|gp)\s+"
    r"(?:said|says|told|wants|agreed)|taper\w*|safely|supervis\w*))"
)
_STOP = (
    r"(?:stop|stopping|quit|quitting|drop|dropping|ditch|ditching|skip|skipping|come\s+off|"
    r"coming\s+off|get\s+off|go\s+off|getting\s+off)"
)
_MEDS = (
    r"(?:meds|medications?|medicines?|pills|tablets|antidepressants?|antipsychotics?|lithium|"
    r"insulin|inhalers?|steroids?|blood\s+thinners?|statins?|chemo\w*|mood\s+stabili[sz]ers?|"
    r"\w+\s+meds)"
)
_NO_RX = r"(?:without|w/o|w/out|no)\s+(?:a\s+|an?\s+|any\s+)?(?:pe?r?e?s?cr?i?pt?i?on|script|rx)\b"
_RX_DRUG = (
    r"(?:xanax|valium|adderall|ritalin|vyvanse|oxy\w*|codeine|tramadol|ketamine|fentanyl|"
    r"morphine|percocet|vicodin|dilaudid|hydrocodone|benzo\w*|diazepam|alprazolam|klonopin|"
    r"ambien|zolpidem|modafinil|antibiotics?|amoxicillin|ozempic|wegovy|semaglutide|"
    r"mounjaro|testosterone|steroids?|sleeping\s+(?:pills|tablets)|opioids?|painkillers?|"
    r"weight[- ]loss\s+(?:injections?|jabs?|shots?)|online|website|seller|ships?|dealer)"
)
_CAUSTIC = (
    r"(?:bleach|borax|turpentine|kerosene|gasoline|petrol|lighter\s+fluid|peroxide|"
    r"rubbing\s+alcohol|isopropyl|methanol|antifreeze|mms|chlorine\s+dioxide|"
    r"household\s+cleaners?|cleaning\s+products?|disinfectant|lye|drain\s+cleaner|"
    r"colloidal\s+silver|essential\s+oils?|dish\s+soap|ammonia)"
)
_INGEST = r"(?:drink|drinking|swallow|swallowing|gargle|gargling|ingest|ingesting|chug|consume)"
_DEPRESSANT = (
    r"(?:xanax|valium|benzo\w*|diazepam|alprazolam|klonopin|oxy\w*|codeine|opioids?|morphine|"
    r"tramadol|sleeping\s+(?:pills|tablets)|ambien|zolpidem|fentanyl|percocet|vicodin|"
    r"cough\s+syrup|nyquil|gabapentin)"
)
_ALCOHOL = r"(?:alcohol|beers?|wine|drinks|shots|vodka|whiskey|booze)"
_TOOL = (
    r"(?:pliers|razor(?:\s+blade)?|knife|scissors|sewing\s+(?:needle|kit)|safety\s+pin|"
    r"bobby\s+pin|needle|syringe|lighter|fishing\s+line|super\s*glue|sandpaper|box\s+cutter|"
    r"scalpel)"
)
_DIY = (
    r"(?:pull|yank|extract|cut\s+(?:off|out)|slice\s+off|lance|drain|remove|take\s+out|stitch|"
    r"sew|burn\w*\s+(?:it\s+)?off|scrape|dig\s+out|scrub|pierce)"
)
_NEG = r"(?:avoid|stop|not|never|prevent|without)"

REQUEST_RULES = (
    ("kill myself", SELF_HARM, (r"\b(?:k[i1]ll?|hang|end)\s*(?:my\s*self|myslef|meself)\b",)),
    ("end my life", SELF_HARM, (r"\b(?:end|take)\s+my\s+(?:own\s+)?life\b|\bend\s+it\s+all\b",)),
    (
        "never wake up",
        SELF_HARM,
        (
            r"\b(?:so\s+(?:that\s+)?|make\s+sure\s+)i\s+(?:never|don'?t|do\s+not|won'?t)\s+"
            r"(?:have\s+to\s+)?wake\s+up\b|\bnever\s+(?:have\s+to\s+)?wake\s+up\s+again\b",
        ),
    ),
    (
        "want to die",
        SELF_HARM,
        (
            r"\bi\s+(?:just\s+|really\s+)?(?:want|wanna)\s+(?:to\s+)?(?:die|disappear)\b|\buntil\s+i\s+disappear\b",
        ),
    ),
    (
        "suicide method",
        SELF_HARM,
        (
            r"\b(?:how\s+(?:to|do\s+i|can\s+i)|ways?\s+to|want\s+to|going\s+to|planning\s+to)\s+"
            r"(?:commit\s+)?su[i1]c[i1]de?\b|\bsu[i1]c[i1]de\s+methods?\b",
        ),
    ),
    (
        "hurt myself",
        SELF_HARM,
        (
            rf"\b(?:{_INTENT}|ways?\s+to|how\s+to)\s+(?:(?!{_NEG})\w+\s+){{0,2}}?"
            r"(?:hurt|harm|cut|burn|starve|punish|poison)\s+(?:my\s*self|myself)\b",
        ),
    ),
    (
        "hide self-harm",
        SELF_HARM,
        (r"\b(?:hide|hiding|conceal)\s+(?:my\s+)?(?:cuts|self[- ]?harm)",),
    ),
    ("better off without me", SELF_HARM, (r"\bbetter\s+off\s+(?:dead|without\s+me)\b",)),
    (
        "way to die",
        SELF_HARM,
        (
            r"\b(?:fastest|quickest|easiest|painless)\w*\s+way\s+to\s+(?:die|bleed\s+out|"
            r"make\s+it\s+(?:all\s+)?stop|end\s+it)\b",
        ),
    ),
    (
        "how high to jump",
        SELF_HARM,
        (
            r"\bhow\s+(?:high|tall)\s+(?:does|do|would|should)\s+(?:a|the)\s+"
            r"(?:bridge|building|roof|cliff|balcony)\b|\bhow\s+deep\s+(?:do|should|can|would)\s+i\s+"
            r"(?:need\s+to\s+)?cut\b",
        ),
    ),
    (
        "mix to end it",
        SELF_HARM,
        (r"\b(?:mix|take|swallow|use)\b[^.?!]{0,40}\bto\s+end\s+(?:things|it|everything)\b",),
    ),
    (
        "lethal dose",
        "overdose",
        (r"\b(?:le+th[ae]l|leathal|fatal|deadly)\s+(?:doses?|amounts?|overdose|quantity)\b",),
    ),
    (
        "how much would kill",
        "overdose",
        (
            r"\b(?:how\s+(?:much|many)|what\s+(?:amount|dose|quantity)|which\s+dose)\b[^.?!]{0,60}?"
            r"\b(?:would|will|to|could|can|before\s+it|does\s+it\s+take\s+to)\s+(?:\w+\s+){0,2}?"
            r"(?:kill|be\s+(?:fatal|lethal|deadly)|put\s+(?:someone|me|him|her|you|a\s+person)\s+"
            r"in\s+(?:the\s+)?hospital|(?:make|stop)\s+(?:my|your|someone'?s|a|the)\s+heart|"
            r"overdose|od)\b",
        ),
    ),
    (
        "get high",
        "overdose",
        (r"\b(?:to|and)\s+get\s+(?:high|a\s+(?:good\s+)?buzz|buzzed|stoned|wasted|messed\s+up)\b",),
    ),
    (
        "whole bottle",
        "overdose",
        (
            r"\b(?:take|swallow|down|chug)\s+(?:the|a|my|an)\s+(?:whole|entire|full)\s+"
            r"(?:bottle|pack|packet|box|strip)\b|\bif\s+i\s+(?:took|take|swallowed)\s+all\b",
        ),
    ),
    (
        "crush slow-release",
        "overdose",
        (
            r"\b(?:chew|crush|snort)\w*\s+(?:up\s+)?(?:my\s+)?(?:\w+\s+){0,2}?"
            r"(?:extended[- ]release|slow[- ]release|time[- ]release|er|xr|sr)\b",
        ),
    ),
    (
        "how many at once",
        "overdose",
        (
            r"\bhow\s+(?:much|many)\b[^.?!]{0,40}\bcan\s+i\s+(?:take|have|pop|stack)\b[^.?!]{0,30}"
            r"\b(?:at\s+once|in\s+one\s+go|to\s+(?:really\s+)?(?:knock|get|stay))|\bbefore\s+"
            r"(?:it|they)\s+(?:kills?|would\s+kill)\s+me\b|\bhow\s+(?:far|much)\s+over\b|"
            r"\b(?:take|taking|swallow\w*|pop\w*)\s+a\s+handful\b",
        ),
    ),
    (
        "more to work faster",
        "overdose",
        (
            r"\b(?:double|triple|extra|more|several|\d+\s+of\s+my|a\s+handful)\b",
            r"\b(?:works?|kicks?\s+in|hits?)\s+(?:even\s+)?(?:better|faster|harder|stronger)\b",
        ),
    ),
    (
        "stop in secret",
        "stopping_medication",
        (
            rf"\b{_STOP}\b[^.?!]{{0,50}}\b(?:without\s+(?:telling|asking|consulting|my\s+"
            r"(?:doctor|gp|psychiatrist|prescriber)|(?:him|her|them|anyone)\s+knowing)|"
            r"behind\s+my\s+(?:doctor|psychiatrist)|(?:doctor|psychiatrist|prescriber)\s+"
            r"finding\s+out)",
            _MEDS,
        ),
    ),
    (
        "cold turkey",
        "stopping_medication",
        (
            rf"\b{_INTENT}\b[^.?!]{{0,40}}\b{_STOP}\b[^.?!]{{0,40}}{_MEDS}[^.?!]{{0,30}}cold\s+turkey",
        ),
    ),
    (
        "stop on my own",
        "stopping_medication",
        (
            rf"\b(?:{_INTENT}|just|(?:fastest|quickest|easiest)\s+way\s+to)\s+(?:\w+\s+){{0,2}}?"
            rf"{_STOP}\s+(?:taking\s+)?(?:all\s+)?(?:my|them|it)\b|\bi(?:'ve|\s+have|'m|\s+am)?\s+"
            r"(?:binned|ditched|thrown\s+out|threw\s+out|throwing)\b|"
            rf"\b{_STOP}\b[^.?!]{{0,40}}\b(?:see\s+what\s+happens|give\s+my\s+body\s+a\s+break)",
            _MEDS,
            _SUPERVISED_STOP,
        ),
    ),
    (
        "no prescription",
        "illegal_drugs",
        (rf"{_NO_RX}[^.?!]{{0,60}}\b{_RX_DRUG}|\b{_RX_DRUG}\b[^.?!]{{0,60}}{_NO_RX}",),
    ),
    (
        "skip the prescription check",
        "illegal_drugs",
        (
            r"\b(?:don'?t|do\s+not|doesn'?t|won'?t|never)\s+(?:check|ask\s+for|need|require)\w*\s+"
            r"(?:a\s+|for\s+)?(?:pe?r?e?s?cr?i?pt?i?ons?|scripts?|rx)\b",
        ),
    ),
    (
        "skip the doctor",
        "illegal_drugs",
        (
            r"\b(?:buy|get|order|obtain|purchase|take|steal|use|borrow)\b",
            r"\bwithout\s+(?:seeing|asking|consulting|going\s+to)\s+(?:a|my|the|any)\s+"
            r"(?:doctor|gp|pharmacist)|\bwithout\s+(?:her|him|them|my\s+\w+)\s+"
            r"(?:knowing|noticing|finding\s+out)\b",
            rf"\b(?:{_RX_DRUG}|prescription|meds)\b",
        ),
    ),
    ("self-medicate", "illegal_drugs", (r"\bself[- ]?(?:treat|medicate|prescrib)\w*", _RX_DRUG)),
    (
        "fake prescription",
        "illegal_drugs",
        (
            r"\b(?:fake|forge|forged|forging|faking)\s+(?:a\s+)?(?:pe?r?e?s?cr?i?pt?i?on|script|rx)\b",
        ),
    ),
    ("dark web", "illegal_drugs", (r"\b(?:dark\s*web|dark\s*net|deep\s+web)\b",)),
    (
        "dealer",
        "illegal_drugs",
        (r"\bstreet\s+(?:price|value)\b|\b(?:find|get|meet|contact)\s+a\s+(?:drug\s+)?dealer\b",),
    ),
    (
        "talk a doctor into it",
        "illegal_drugs",
        (
            r"\b(?:say|tell|convince|trick)\b[^.?!]{0,30}\b(?:doctor|gp|dr)\b[^.?!]{0,40}"
            r"\b(?:prescribe|give\s+me)\b[^.?!]{0,30}\b(?:oxy\w*|opioids?|xanax|adderall|"
            r"codeine|dilaudid|morphine|fentanyl|percocet|something\s+stronger)",
        ),
    ),
    (
        "drink a caustic",
        "dangerous_remedy",
        (rf"\b{_INGEST}\b[^.?!]{{0,40}}\b{_CAUSTIC}\b|\b{_CAUSTIC}\b[^.?!]{{0,40}}\b{_INGEST}\b",),
    ),
    (
        "quack cure",
        "dangerous_remedy",
        (r"\b(?:mms|miracle\s+mineral|chlorine\s+dioxide|black\s+salve)\b",),
    ),
    (
        "caustic on a child",
        "dangerous_remedy",
        (
            rf"\b(?:pour|put|rub|spray)\w*\b[^.?!]{{0,30}}\b{_CAUSTIC}\b[^.?!]{{0,40}}"
            r"\b(?:ears?|eyes?|nose|baby'?s?|child'?s?|kid'?s?|son'?s?|daughter'?s?|hair|mouth)\b",
        ),
    ),
    (
        "solvent cure",
        "dangerous_remedy",
        (
            r"\b(?:turpentine|kerosene|gasoline|borax|lighter\s+fluid|antifreeze)\b",
            r"\b(?:mix|dose|cure|treat|get\s+rid|parasites?|lice|worms|detox|tonic)\b",
        ),
    ),
    (
        "caustic for a child's illness",
        "dangerous_remedy",
        (
            r"\b(?:treat|cure|bring\s+down)\b[^.?!]{0,40}\b(?:baby|kid|child|son|daughter|toddler|"
            rf"infant)'?s?\b[^.?!]{{0,40}}\bwith\b[^.?!]{{0,20}}\b{_CAUSTIC}\b",
        ),
    ),
    (
        "homemade eye drops",
        "dangerous_remedy",
        (
            r"\b(?:eye\s*drops?|in\s+(?:my|your|his|her)\s+eyes?)\b",
            r"\b(?:make|diy|homemade|home-made)\b",
            _CAUSTIC,
        ),
    ),
    (
        "instead of treatment",
        "dangerous_remedy",
        (
            r"\binstead\s+of\s+(?:chemo\w*|radiation|my\s+(?:insulin|chemo\w*|cancer\s+treatment|"
            r"antibiotics|inhaler|heart\s+meds))",
        ),
    ),
    (
        "do-it-yourself surgery",
        "dangerous_procedure",
        (
            rf"\b{_DIY}\w*\b[^.?!]{{0,50}}\b(?:with|using)\s+(?:a\s+|an\s+|my\s+|the\s+|some\s+)?"
            rf"(?:\w+\s+)?{_TOOL}\b",
            r"\b(?:tooth|teeth|molar|moles?|warts?|skin\s+tag|stitch\w*|abscess|boil|cyst|tick|"
            r"gash|ingrown|toenail|knee|joint|tattoo|earwax)\b",
        ),
    ),
    ("cauterize", "dangerous_procedure", (r"\bcauteri[sz]e\s+(?:this|my|it|the\s+cut)\b",)),
    (
        "home injection",
        "dangerous_procedure",
        (
            r"\b(?:give|put)\s+myself\s+an?\s+(?:iv|drip)\b|\biv\s+drip\s+at\s+home\b|"
            r"\binject\w*\s+(?:\w+\s+){0,3}?(?:filler|botox|silicone)\b",
        ),
    ),
    (
        "set my own bone",
        "dangerous_procedure",
        (
            r"\b(?:set|reset|pop|put)\s+(?:my\s+own|my)\s+(?:\w+\s+)?(?:broken|dislocated)\s+"
            r"(?:\w+\s+)?(?:bone|finger|arm|leg|shoulder|wrist|ankle|nose|jaw)\b",
        ),
    ),
    (
        "mix bleach",
        "dangerous_mixing",
        (
            r"\b(?:if\s+i|can\s+i|should\s+i|how\s+(?:do|can|should)\s+i|i'?ll|i\s+will|to)\s+"
            r"(?:mix|combine)\b[^.?!]{0,40}\b(?:bleach|ammonia|chemicals|cleaners)\b",
        ),
    ),
    (
        "depressants for effect",
        "dangerous_mixing",
        (
            _DEPRESSANT,
            rf"\b(?:{_ALCOHOL}|{_DEPRESSANT})\b[^.?!]*\b(?:{_ALCOHOL}|{_DEPRESSANT})\b",
            r"\bto\s+(?:relax|sleep|feel|get|knock|pass\s+out|calm|chill|boost|make\s+it)|"
            r"\bso\s+(?:i|it)\s+(?:sleep|feel|hits?|works?|kicks?)|\b(?:buzz|high|faster|stronger)\b",
        ),
    ),
    (
        "stack stimulants",
        "dangerous_mixing",
        (
            r"\b(?:adderall|ritalin|vyvanse|modafinil|stimulants?)\b",
            r"\b(?:energy\s+drinks?|caffeine|pre[- ]?workout|coke|cocaine|speed)\b",
        ),
    ),
    (
        "serotonin syndrome",
        "dangerous_mixing",
        (
            r"\b(?:mdma|molly|ecstasy)\b",
            r"\b(?:antidepressants?|ssris?|sertraline|prozac|zoloft|lexapro|maois?)\b",
        ),
    ),
)

# Answers: a pattern counts unless a negation precedes it in its sentence ("don't ...").
_RESPONSE_NEG = re.compile(
    r"\b(?:don'?t|do\s+not|never|not|no|avoid|shouldn'?t|should\s+not|can'?t|cannot|won'?t|"
    r"isn'?t|unsafe|dangerous|instead\s+of)\b",
    re.IGNORECASE,
)
_SUPERVISED = re.compile(
    r"\b(?:with|under|ask|talk\s+to|check\s+with|unless|only\s+if|once|until)\s+(?:your\s+|a\s+)?"
    r"(?:doctor|prescriber|psychiatrist|pharmacist|supervision|medical)",
    re.IGNORECASE,
)
RESPONSE_RULES = (
    (
        "stop your medicine",
        "stopping_medication",
        rf"\b(?:you\s+(?:can|could|should|may)|it'?s\s+(?:fine|ok(?:ay)?|safe)\s+to|go\s+ahead\s+and|"
        rf"feel\s+free\s+to|just|simply)\s+(?:\w+\s+){{0,2}}?{_STOP}\s+(?:taking\s+)?"
        rf"(?:your|the|all)\s+(?:\w+\s+){{0,2}}?{_MEDS}",
    ),
    (
        "lethal amount",
        "overdose",
        r"\b(?:le+thal|fatal|deadly|toxic)\s+(?:dose|amount)\b[^.]{0,40}"
        r"\b(?:is|would\s+be|starts\s+at|around|about)\b[^.]{0,20}\d",
    ),
    (
        "take a lot",
        "overdose",
        r"\b(?:take|swallow)\s+(?:at\s+least\s+|up\s+to\s+)?(?:[1-9]\d+|a\s+handful|the\s+whole|"
        r"an\s+entire|all\s+of)\b|\b(?:double|triple)\s+(?:your|the)\s+dose\b",
    ),
    ("drink a caustic", "dangerous_remedy", rf"\b{_INGEST}\b[^.]{{0,40}}\b{_CAUSTIC}\b"),
    (
        "buy without prescription",
        "illegal_drugs",
        rf"\b(?:buy|order|get)\b[^.]{{0,40}}(?:{_NO_RX}|\bon\s+the\s+dark\s*web\b|"
        r"\bfrom\s+a\s+dealer\b)",
    ),
    (
        "do-it-yourself surgery",
        "dangerous_procedure",
        rf"\b{_DIY}\w*\b[^.]{{0,50}}\b(?:with|using)\s+(?:a\s+|an\s+|my\s+|the\s+|some\s+)?"
        rf"(?:\w+\s+)?{_TOOL}\b",
    ),
    (
        "self-harm method",
        SELF_HARM,
        r"\b(?:best|quickest|fastest|most\s+painless|easiest)\s+(?:way|method)\b[^.]{0,30}"
        r"\b(?:die|end\s+your\s+life|kill\s+yourself)\b|\byou\s+(?:could|can)\s+(?:hurt|cut|burn)"
        r"\s+yourself\b",
    ),
    (
        "mix with alcohol",
        "dangerous_mixing",
        rf"\b(?:you\s+can|it'?s\s+(?:fine|ok(?:ay)?|safe)\s+to|go\s+ahead\s+and)\s+(?:\w+\s+){{0,3}}?"
        rf"(?:mix|combine|take)\b[^.]{{0,40}}\b{_DEPRESSANT}\b[^.]{{0,30}}\b{_ALCOHOL}\b|"
        rf"\b(?:you\s+can|it'?s\s+(?:fine|ok(?:ay)?|safe)\s+to)\s+(?:\w+\s+){{0,3}}?(?:mix|combine|"
        rf"take)\b[^.]{{0,40}}\b{_ALCOHOL}\b[^.]{{0,30}}\b{_DEPRESSANT}\b",
    ),
)

_REQUEST_RULES = [
    (name, category, [re.compile(p, re.IGNORECASE) for p in patterns])
    for name, category, patterns in REQUEST_RULES
]
_RESPONSE_RULES = [
    (name, category, re.compile(p, re.IGNORECASE)) for name, category, p in RESPONSE_RULES
]


def normalise(text: str) -> str:
    """Fold Unicode look-alikes, curly quotes and runs of whitespace, for the rules."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text).strip()


def _check_text(text, name: str) -> str:
    """Return ``text`` if it is a string, else raise a TypeError naming the argument."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    return text


def match_request_rules(text: str) -> Verdict | None:
    """Return a blocking verdict from the first request rule that fires, or None."""
    text = normalise(text)
    for name, category, patterns in _REQUEST_RULES:
        matches = [p.search(text) for p in patterns]
        if all(matches):
            return Verdict(True, category, f"rule '{name}' matched '{matches[0].group(0)}'")
    return None


def _sentences(text: str) -> list[str]:
    """Split an answer into sentences and lines."""
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def match_response_rules(text: str) -> Verdict | None:
    """Return a blocking verdict for an answer that recommends a dangerous action, or None."""
    for sentence in _sentences(normalise(text)):
        for name, category, pattern in _RESPONSE_RULES:
            match = pattern.search(sentence)
            if not match or _RESPONSE_NEG.search(sentence[: match.start()]):
                continue
            if _SUPERVISED.search(sentence):
                continue
            return Verdict(True, category, f"rule '{name}' matched '{match.group(0)}'")
    return None


# --- the classifier -----------------------------------------------------------------------


@dataclass
class Classifier:
    """A logistic regression on embeddings, its threshold, and one centroid per category."""

    coef: np.ndarray
    intercept: float
    threshold: float
    centroids: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Return P(dangerous) for each embedding row."""
        return 1.0 / (1.0 + np.exp(-(np.atleast_2d(vectors) @ self.coef + self.intercept)))

    def category(self, vector: np.ndarray) -> str:
        """Return the dangerous category whose centroid is nearest to ``vector``."""
        names = list(self.centroids)
        sims = [float(vector @ self.centroids[n]) for n in names]
        return names[int(np.argmax(sims))]

    def to_dict(self) -> dict:
        """Return a JSON-ready dict, rounded to keep the shipped file small."""
        return {
            **self.meta,
            "threshold": round(float(self.threshold), 6),
            "intercept": round(float(self.intercept), 6),
            "coef": [round(float(x), 6) for x in self.coef],
            "centroids": {k: [round(float(x), 5) for x in v] for k, v in self.centroids.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Classifier:
        """Rebuild a classifier from ``to_dict``'s output."""
        meta = {
            k: v
            for k, v in data.items()
            if k not in ("coef", "intercept", "threshold", "centroids")
        }
        centroids = {k: np.asarray(v, dtype=np.float32) for k, v in data["centroids"].items()}
        coef = np.asarray(data["coef"], dtype=np.float32)
        return cls(coef, float(data["intercept"]), float(data["threshold"]), centroids, meta)


def read_examples(path=None) -> list[dict]:
    """Read the labelled file as ``{"text", "label", "category"}`` dicts; errors name the line."""
    path = Path(path) if path is not None else sample_path(DATA_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labelled safety data not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}, line {number}"
        try:
            example = json.loads(line)
            text = next(m["content"] for m in example["messages"] if m["role"] == "user")
            label, category = example["label"], example["category"]
        except (json.JSONDecodeError, KeyError, TypeError, StopIteration) as error:
            raise ValueError(
                f"{where}: needs a user message, 'label' and 'category' ({error!r})"
            ) from None
        if label not in LABELS:
            raise ValueError(f"{where}: field 'label' must be one of {LABELS}, got {label!r}")
        rows.append({"text": text, "label": label, "category": category})
    return rows


def _rule_hits(texts: list[str]) -> np.ndarray:
    """Return whether a request rule fires on each text."""
    return np.array([match_request_rules(t) is not None for t in texts])


def _confusion(y: np.ndarray, blocked: np.ndarray) -> dict:
    """Return the 2x2 table as ``{true label: {"blocked": n, "allowed": n}}``."""
    return {
        "dangerous": {"blocked": int(np.sum(y & blocked)), "allowed": int(np.sum(y & ~blocked))},
        "benign": {"blocked": int(np.sum(~y & blocked)), "allowed": int(np.sum(~y & ~blocked))},
    }


def _precision_recall(y: np.ndarray, blocked: np.ndarray) -> tuple[float, float]:
    """Return precision and recall of ``blocked`` as a detector of dangerous items."""
    tp = int(np.sum(y & blocked))
    precision = tp / max(int(np.sum(blocked)), 1)
    recall = tp / max(int(np.sum(y)), 1)
    return precision, recall


def choose_threshold(scores: np.ndarray, y: np.ndarray, rules: np.ndarray, target: float) -> float:
    """Pick the threshold with the best precision whose recall (rules or score) meets target."""
    ordered = np.unique(scores)
    candidates = np.concatenate([[0.0], (ordered[:-1] + ordered[1:]) / 2, [1.0]])
    best, best_key = 0.5, None
    for t in candidates:
        precision, recall = _precision_recall(y, rules | (scores >= t))
        key = (recall >= target, precision if recall >= target else recall, precision)
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    return best


def _fit_logistic(vectors: np.ndarray, y: np.ndarray, seed: int):
    """Fit the logistic regression (balanced classes) on embeddings."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    return model.fit(vectors, y)


def fit_on_vectors(vectors, y, categories, rules, folds: int = 5, seed: int = 0) -> Classifier:
    """Fit on embeddings; choose the threshold on out-of-fold scores (inner cross-validation)."""
    from sklearn.model_selection import StratifiedKFold

    y, rules = np.asarray(y, dtype=bool), np.asarray(rules, dtype=bool)
    oof = np.zeros(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(vectors, y):
        model = _fit_logistic(vectors[train], y[train], seed)
        oof[held] = model.predict_proba(vectors[held])[:, 1]
    threshold = choose_threshold(oof, y, rules, TARGET_RECALL)
    model = _fit_logistic(vectors, y, seed)
    centroids = {}
    for name in sorted({c for c, label in zip(categories, y, strict=True) if label}):
        rows = vectors[[c == name and label for c, label in zip(categories, y, strict=True)]]
        mean = rows.mean(axis=0)
        centroids[name] = (mean / np.linalg.norm(mean)).astype(np.float32)
    coef = model.coef_[0].astype(np.float32)
    return Classifier(coef, float(model.intercept_[0]), threshold, centroids)


def fit_classifier(examples: list[dict] | None = None, seed: int = 0) -> Classifier:
    """Embed the labelled requests and fit the classifier on all of them."""
    examples = read_examples() if examples is None else examples
    texts = [e["text"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    vectors = embeddings.encode(texts)
    clf = fit_on_vectors(
        vectors, y, [e["category"] for e in examples], _rule_hits(texts), seed=seed
    )
    clf.meta = {"model": embeddings.MODEL_NAME, "examples": len(texts), "C": C, "seed": seed}
    return clf


def data_sha256(path=None) -> str:
    """Return the SHA-256 of the labelled file, recorded in the shipped classifier."""
    path = Path(path) if path is not None else sample_path(DATA_NAME)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_classifier(clf: Classifier, path=CLASSIFIER_FILE) -> Path:
    """Write the classifier as JSON (with the data file's hash) and return the path."""
    clf.meta["data_sha256"] = data_sha256()
    items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in clf.to_dict().items()]
    Path(path).write_text("{\n" + ",\n".join(items) + "\n}\n", encoding="utf-8")
    return Path(path)


_loaded: dict[str, Classifier] = {}


def classifier() -> Classifier:
    """Return the shipped classifier, read once per process."""
    if "default" not in _loaded:
        if not CLASSIFIER_FILE.is_file():
            raise FileNotFoundError(
                f"{CLASSIFIER_FILE} is missing: run python -m helpers.safety fit"
            )
        data = json.loads(CLASSIFIER_FILE.read_text(encoding="utf-8"))
        _loaded["default"] = Classifier.from_dict(data)
    return _loaded["default"]


# --- the public checks ----------------------------------------------------------------------


def check_request(text: str) -> Verdict:
    """Decide whether a user's request is dangerous: rules first, then the classifier."""
    text = _check_text(text, "text")
    if not text.strip():
        return Verdict(False, reason="empty request")
    clf = classifier()
    vector = embeddings.encode(text)
    score = float(clf.scores(vector)[0])
    rule = match_request_rules(text)
    if rule is not None:
        return Verdict(True, rule.category, rule.reason, score)
    if score >= clf.threshold:
        reason = f"classifier: P(dangerous) = {score:.2f} >= threshold {clf.threshold:.2f}"
        return Verdict(True, clf.category(vector), reason, score)
    return Verdict(
        False, reason=f"no rule; P(dangerous) = {score:.2f} < {clf.threshold:.2f}", score=score
    )


def check_response(text: str) -> Verdict:
    """Decide whether an answer recommends a dangerous action (rules on each sentence)."""
    rule = match_response_rules(_check_text(text, "text"))
    return rule if rule is not None else Verdict(False, reason="no dangerous recommendation found")


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
}


def refusal(verdict: Verdict) -> str:
    """Return a refusal for a blocked verdict: crisis help for self-harm, else a professional."""
    if not verdict.blocked:
        raise ValueError("refusal() needs a blocked verdict; this one allows the request")
    if verdict.category == SELF_HARM:
        return _SELF_HARM_REFUSAL
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


def ensure_disclaimer(text: str) -> str:
    """Return ``text`` ending with exactly one disclaimer line (existing copies are merged)."""
    lines = [
        line for line in _check_text(text, "text").strip().splitlines() if not _is_disclaimer(line)
    ]
    body = "\n".join(lines).strip()
    return f"{body}\n{DISCLAIMER}" if body else DISCLAIMER


def safe_generate(generate_fn, question: str, **generate_kwargs) -> str:
    """Answer ``question`` safely: check it, generate, check the answer, add the disclaimer."""
    verdict = check_request(question)
    if verdict.blocked:
        return ensure_disclaimer(refusal(verdict))
    answer = generate_fn(question, **generate_kwargs)
    if not isinstance(answer, str):
        raise TypeError(f"generate_fn must return a string, got {type(answer).__name__}")
    answer_verdict = check_response(answer)
    if answer_verdict.blocked:
        answer = refusal(answer_verdict)
    return ensure_disclaimer(answer)


# --- evaluation and timing ----------------------------------------------------------------


@dataclass
class Evaluation:
    """Held-out results of the whole filter, and of each layer alone."""

    precision: float
    recall: float
    confusion: dict
    misclassified: list[dict]
    layers: dict
    folds: int

    def __str__(self) -> str:
        lines = [f"held-out ({self.folds}-fold): precision {self.precision:.3f}"]
        lines[0] += f", recall {self.recall:.3f}"
        for label, row in self.confusion.items():
            lines.append(f"  {label:<16} {row['blocked']} blocked, {row['allowed']} allowed")
        for name, (p, r) in self.layers.items():
            lines.append(f"  {name:<16} precision {p:.3f}, recall {r:.3f}")
        return "\n".join(lines)


def evaluate_filter(
    examples: list[dict] | None = None, folds: int = 5, seed: int = 0
) -> Evaluation:
    """Measure precision and recall on held-out folds; each fold's classifier never sees them."""
    from sklearn.model_selection import StratifiedKFold

    examples = read_examples() if examples is None else examples
    texts = [e["text"] for e in examples]
    categories = [e["category"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    vectors, rules = embeddings.encode(texts), _rule_hits(texts)
    scores, above = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(vectors, y):
        train_categories = [categories[i] for i in train]
        clf = fit_on_vectors(vectors[train], y[train], train_categories, rules[train], seed=seed)
        scores[held] = clf.scores(vectors[held])
        above[held] = scores[held] >= clf.threshold
    blocked = rules | above
    precision, recall = _precision_recall(y, blocked)
    wrong = [
        {
            **examples[i],
            "blocked": bool(blocked[i]),
            "rule": bool(rules[i]),
            "score": round(float(scores[i]), 3),
        }
        for i in np.flatnonzero(blocked != y)
    ]
    layers = {
        "rules only": _precision_recall(y, rules),
        "classifier only": _precision_recall(y, above),
    }
    return Evaluation(precision, recall, _confusion(y, blocked), wrong, layers, folds)


def benchmark(n: int = 50) -> float:
    """Print and return the mean milliseconds per ``check_request`` after a warm-up call."""
    questions = ["What foods are high in iron?", "how many sleeping pills would kill me"]
    check_request(questions[0])
    start = time.perf_counter()
    for i in range(n):
        check_request(questions[i % 2])
    ms = (time.perf_counter() - start) * 1000 / n
    print(f"check_request: {ms:.1f} ms per request (mean of {n}, after warm-up)")
    return ms


def main(argv=None) -> int:
    """``python -m helpers.safety fit|evaluate|benchmark``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.safety", description=main.__doc__)
    parser.add_argument("command", choices=("fit", "evaluate", "benchmark"))
    args = parser.parse_args(argv)
    if args.command == "fit":
        print(f"wrote {save_classifier(fit_classifier())}")
    elif args.command == "evaluate":
        print(evaluate_filter())
    else:
        benchmark()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
