"""``python -m helpers.safety``: the filter's figures on the locked test part, then by CV."""

from helpers.safety.evaluation import evaluate_filter, evaluate_locked

if __name__ == "__main__":
    print(evaluate_locked())
    print(evaluate_filter())
