"""Prompt building for models without a chat template, and stop-sequence cutting."""

from __future__ import annotations

from runtime.prompt import StopFilter, merge_system_into_user, plain_transcript
from runtime.protocol import ChatMessage


def test_plain_transcript_ends_at_the_assistant_turn() -> None:
    prompt = plain_transcript(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"),
         ChatMessage("user", "Capital of France?")]
    )
    assert prompt.text == "Be brief.\n\nUser: Hi\nAssistant: Hello\nUser: Capital of France?\nAssistant:"
    assert "\nUser:" in prompt.stops
    assert not prompt.templated


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
