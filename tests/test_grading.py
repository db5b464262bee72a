"""Grading answers: the stance of the first sentence, and the numbers an answer states."""

import pytest

from helpers import grading


@pytest.mark.parametrize(
    ("answer", "stance"),
    [
        ("Yes, you can take expired medicine.", "yes"),
        ("Yes. A single dose is recommended for everyone aged 75 and older.", "yes"),
        ("  Sure! Ask your pharmacist.", "yes"),
        ("No. The RSV vaccine is given as a single dose.", "no"),
        ("It's best not to. Expired medicines may be less effective.", "no"),
        ("The RSV jab is not recommended for you.\nAsk your doctor.", "no"),
        ("You shouldn't stop your inhaler on your own.", "no"),
        ("RSV vaccines are recommended for adults aged 75 and older.", None),
        ("It depends on the medicine. No two labels are alike.", None),  # only the first sentence
        ("", None),
    ],
)
def test_yes_no_reads_the_first_sentence(answer, stance):
    assert grading.yes_no(answer) == stance


def test_first_sentence_stops_at_a_full_stop_a_mark_or_a_line():
    assert grading.first_sentence("Rest. Drink water.") == "Rest"
    assert grading.first_sentence("Take 2.5 ml. Then rest.") == "Take 2.5 ml"
    assert grading.first_sentence("Really?\nYes") == "Really"
    assert grading.first_sentence("one line\nsecond") == "one line"


def test_asks_yes_no_wants_an_auxiliary_verb_first():
    assert grading.asks_yes_no("Can I take expired medicine?")
    assert grading.asks_yes_no("Should my 80-year-old father be vaccinated against RSV?")
    assert grading.asks_yes_no("  is it safe?")
    assert not grading.asks_yes_no("Which adults are advised to have an RSV vaccination?")
    assert not grading.asks_yes_no("I just turned 76. Is the RSV jab recommended for me?")
    assert not grading.asks_yes_no("Island holidays: what to pack?")  # "is" inside a word


def test_states_number_in_digits_or_words():
    assert grading.states_number("all adults aged 75 and older", 75)
    assert grading.states_number("everyone over seventy-five", 75)
    assert grading.states_number("Seventy five and up", 75)
    assert grading.states_number("from 75+", 75)
    assert not grading.states_number("adults aged 175", 75)
    assert not grading.states_number("a dose of 7.5 mg or 0.75 g", 75)
    assert not grading.states_number("750 people", 75)
    assert not grading.states_number("aged 60 to 74", 75)
    assert grading.states_number("at least 150 minutes", 150)  # digits beyond the words' range


def test_number_words():
    assert [grading.number_words(n) for n in (0, 13, 20, 75, 99)] == [
        "zero",
        "thirteen",
        "twenty",
        "seventy-five",
        "ninety-nine",
    ]
    with pytest.raises(ValueError, match="0 to 99"):
        grading.number_words(100)
