"""The factual-consistency signal notebook 03 uses: claims absent from the training answers."""

from helpers.evaluate import claims, unsupported_claims


def test_claims_pair_numbers_with_units_and_skip_list_markers():
    text = "Hello!\n1. Open the app.\n2. Returns within 30 days get a 10% discount, $5 off."
    assert claims(text) == {"30 days", "10%", "$5 off", "discount"}


def test_a_number_without_a_unit_stands_alone():
    assert claims("Call 555 and press 2 for help.") == {"555", "2"}


def test_promise_words_match_word_starts_only():
    assert claims("We guarantee a refund.") == {"guarantee", "refund"}
    assert claims("Feel carefree.") == set()


def test_unsupported_claims_flags_only_what_no_known_answer_states():
    known = claims("Returns are accepted within 30 days. Our warranty lasts 3 years.")
    reply = "Hello! Our warranty lasts 10 years and returns are accepted within 30 days."
    assert unsupported_claims(reply, known) == ["10 years"]
    assert unsupported_claims("Hello! Please contact us.", known) == []
