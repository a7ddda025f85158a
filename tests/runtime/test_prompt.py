"""Prompt building for models without a chat template, and stop-sequence cutting."""

from __future__ import annotations

from runtime.prompt import (
    TRANSCRIPT_EXAMPLES,
    TRANSCRIPT_INSTRUCTION,
    TRANSCRIPT_STOPS,
    StopFilter,
    merge_system_into_user,
    plain_transcript,
)
from runtime.protocol import ChatMessage

EXAMPLES = (
    "User: Who discovered penicillin?\n"
    "Assistant: Alexander Fleming discovered penicillin in 1928.\n"
    "User: How do I keep bread fresh longer?\n"
    "Assistant: Store it in a bread box or a paper bag at room temperature, "
    "or freeze slices you won't eat within a few days.\n"
)


def test_plain_transcript_opens_with_the_instruction_and_examples() -> None:
    prompt = plain_transcript([ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"),
                               ChatMessage("user", " Capital of France? ")])
    assert prompt.text == (
        "A conversation between a user and a helpful, knowledgeable assistant who answers "
        "questions directly and concisely.\n\n"
        + EXAMPLES
        + "User: Hi\nAssistant: Hello\nUser: Capital of France?\nAssistant:"
    )
    assert prompt.stops == TRANSCRIPT_STOPS and "\nUser:" in prompt.stops
    assert not prompt.templated


def test_system_prompt_replaces_the_instruction_and_keeps_the_examples() -> None:
    prompt = plain_transcript([ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?")])
    assert prompt.text == "Be brief.\n\n" + EXAMPLES + "User: Capital of France?\nAssistant:"
    assert TRANSCRIPT_INSTRUCTION not in prompt.text
    blank = plain_transcript([ChatMessage("system", "  "), ChatMessage("user", "Hi")])
    assert blank.text.startswith(TRANSCRIPT_INSTRUCTION + "\n\n")  # an empty system prompt is none


def test_examples_are_prompt_text_not_messages() -> None:
    """Every history gets the same examples once, before its own turns, whatever is trimmed."""
    history = [ChatMessage("user", "One"), ChatMessage("assistant", "Two"), ChatMessage("user", "Three")]
    full, trimmed = plain_transcript(history), plain_transcript(history[2:])
    for prompt, first in ((full, "User: One"), (trimmed, "User: Three")):
        assert prompt.text.count(EXAMPLES) == 1
        assert prompt.text.index(EXAMPLES) + len(EXAMPLES) == prompt.text.index(first)
    assert plain_transcript([]).text.endswith(EXAMPLES + "Assistant:")


def test_example_answers_end_where_a_reply_should() -> None:
    """One line each and no turn marker inside, so the next example starts at a stop sequence."""
    for question, answer in TRANSCRIPT_EXAMPLES:
        for text in (question, answer):
            assert "\n" not in text and not any(stop.strip() in text for stop in TRANSCRIPT_STOPS)
    follows = plain_transcript([ChatMessage("user", "Hi")]).text.split(TRANSCRIPT_EXAMPLES[0][1], 1)[1]
    assert follows.startswith("\nUser:")


def test_stop_filter_never_shows_a_stop_split_across_chunks() -> None:
    stops = StopFilter(["\nUser:"])
    shown = []
    for chunk in [" Paris", " is", " nice.", "\n", "Us", "er:", " more"]:
        text, hit = stops.feed(chunk)
        shown.append(text)
        if hit:
            break
    assert "".join(shown) == "Paris is nice."
    assert hit


def test_stop_filter_releases_held_text_that_was_not_a_stop() -> None:
    stops = StopFilter(["\nUser:"])
    first, _ = stops.feed("Line one\nUs")
    second, hit = stops.feed("ually fine")
    assert first == "Line one"
    assert first + second == "Line one\nUsually fine"
    assert not hit
    held, _ = stops.feed("\n")
    assert held == "" and stops.flush() == "\n"


def test_system_text_moves_into_the_first_user_turn() -> None:
    merged = merge_system_into_user([ChatMessage("system", "S"), ChatMessage("user", "U")])
    assert merged == [ChatMessage("user", "S\n\nU")]
