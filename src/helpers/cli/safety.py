"""``safety fit|evaluate|benchmark``: refit, measure and time the medical safety filter."""

from __future__ import annotations

import argparse

ACTIONS = {
    "fit": "refit the request and answer classifiers on the dev rows and write them by the rules",
    "evaluate": "recall and false-positive rate on the locked test part (rules, classifier, both; "
    "Wilson intervals), then 5-fold cross-validation on the dev rows as a secondary figure",
    "benchmark": "milliseconds per check_request",
}


def run(args: argparse.Namespace) -> int:
    """Run one safety action and return the exit status."""
    from helpers.safety import classify, evaluation

    if args.action == "fit":
        clf = classify.fit_classifier(seed=args.seed)
        print(f"wrote {classify.save_classifier(clf)}")
        answers = classify.fit_answer_classifier(seed=args.seed)
        print(f"wrote {classify.save_classifier(answers, classify.ANSWER_CLASSIFIER_FILE)}")
    elif args.action == "evaluate":
        print(evaluation.evaluate_locked())
        print(evaluation.evaluate_filter(seed=args.seed))
    else:
        evaluation.benchmark()
    return 0


def add_commands(commands) -> None:
    """Register ``safety``."""
    actions = "; ".join(f"{name}: {what}" for name, what in ACTIONS.items())
    safety = commands.add_parser(
        "safety", help="fit, evaluate or time the medical safety filter", description=actions
    )
    safety.add_argument("action", choices=tuple(ACTIONS), help="what to do")
    safety.add_argument(
        "--seed", type=int, default=0, help="seed of the folds and the fit (default 0)"
    )
    safety.set_defaults(func=run)
