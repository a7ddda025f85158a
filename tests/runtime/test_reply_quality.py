"""Replies of the default base model to everyday questions: answers, not echoes of the question.

A base model prompted with a bare ``User:``/``Assistant:`` transcript often repeats the
question back; the instruction line and example exchanges of
:func:`runtime.prompt.plain_transcript` are there to prevent that. This module asks a fixed
list of questions greedily through a real worker and counts echoes (see :func:`is_echo`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from runtime.default_model import GGUF_NAME
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, GenerationParams
from runtime.settings import RuntimeSettings
from tests.runtime.streams import collect

EVERYDAY_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "How do I boil an egg?",
    "Name three primary colors.",
    "What is 12 times 12?",
    "Who wrote Romeo and Juliet?",
    "Give me a tip for sleeping better.",
    "What is the boiling point of water in Celsius?",
    "How many days are in a week?",
    "What is the largest ocean on Earth?",
    'Translate "thank you" into Spanish.',
    "What color is the sky on a clear day?",
    "How many legs does a spider have?",
    "What is the opposite of hot?",
    "Suggest a name for a pet cat.",
    "Why do leaves change color in autumn?",
    "What is the chemical symbol for gold?",
    "How can I save money on groceries?",
    "What is the freezing point of water in Fahrenheit?",
    "Recommend a good book for a beginner programmer.",
    "What do bees make?",
)
GREEDY = GenerationParams(max_new_tokens=48, temperature=0.0)

# Words that carry no answer by themselves; everything else is a content word.
_FUNCTION_WORDS = frozenset({
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i",
    "me", "my", "you", "your", "it", "its", "we", "our", "they", "their", "he", "she", "his", "her",
    "this", "that", "these", "those", "what", "who", "whom", "how", "why", "which", "when", "where",
    "can", "could", "would", "should", "will", "shall", "may", "might", "of", "in", "on", "at",
    "to", "for", "from", "by", "with", "about", "into", "and", "or", "but", "not", "so", "if", "as",
    "than", "then", "there", "here", "please", "tell", "give", "name", "some", "any",
})
_TURN_LABEL = re.compile(r"^\s*(user|assistant|system)\s*:", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\n]")


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower().replace("'", "")).split()


def _content(words: list[str]) -> set[str]:
    return {w for w in words if w not in _FUNCTION_WORDS}


def is_echo(question: str, reply: str) -> bool:
    """Whether ``reply`` fails to answer ``question``: it is empty, opens a new turn, or repeats it.

    Text is normalised to lower-case words (punctuation dropped). A reply is an echo when

    * it has no words at all;
    * it starts with a speaker label (``User:``, ``Assistant:``, ``System:``), i.e. the model
      began another turn instead of answering;
    * the question's words appear, in order and contiguously, anywhere in the reply;
    * it opens with the question's first two words (``Who wrote the play?`` to ``Who wrote
      Romeo and Juliet?``, ``Suggest a name for a dog.`` to ``Suggest a name for a pet cat.``),
      i.e. it restates or re-asks the question; or
    * its first sentence says nothing new: it has no content words, or at least 80% of them
      occur in the question (content words are all but a short list of function words).
    """
    words = _words(reply)
    if not words or _TURN_LABEL.match(reply):
        return True
    asked = _words(question)
    if f" {' '.join(asked)} " in f" {' '.join(words)} " or words[:2] == asked[:2]:
        return True
    first = _content(_words(_SENTENCE_END.split(reply.strip(), maxsplit=1)[0]))
    if not first:
        return True
    return len(first & _content(asked)) >= 0.8 * len(first)


def test_echo_definition() -> None:
    question = "What is the capital of France?"
    assert is_echo(question, "")
    assert is_echo(question, " \n ")
    assert is_echo(question, "User: What is the capital of Spain?")
    assert is_echo(question, "What is the capital of France? The capital of France is Paris.")
    assert is_echo(question, "The capital of France.")
    assert is_echo(question, "It is.")
    assert is_echo("How do I boil an egg?", "How do you boil an egg?")
    assert is_echo("Who wrote Romeo and Juliet?", "Who wrote the play?")
    assert is_echo("What is 7 plus 5?", "7 plus 5")
    assert not is_echo(question, "The capital of France is Paris.")
    assert not is_echo(question, "Paris.")
    assert not is_echo("What is 12 times 12?", "12 times 12 is 144.")
    assert not is_echo("Name three primary colors.", "Red, blue and yellow.")


@pytest.fixture(scope="module")
async def runtime(runtime_settings: RuntimeSettings) -> AsyncIterator[Runtime]:
    rt = Runtime(runtime_settings)
    await rt.load("quality", GGUF_NAME, "cpu")  # loaded once for the module
    yield rt
    await rt.close()


async def test_everyday_questions_get_answers_not_echoes(runtime: Runtime) -> None:
    replies = {}
    for question in EVERYDAY_PROMPTS:
        text, _ = await collect(runtime, "quality", [ChatMessage("user", question)], GREEDY)
        replies[question] = text
    assert all(text.strip() for text in replies.values()), replies
    echoes = {q: text for q, text in replies.items() if is_echo(q, text)}
    assert not echoes, f"{len(echoes)} of {len(replies)} replies echo the question: {echoes}"
    assert "Paris" in replies["What is the capital of France?"]


async def test_examples_are_not_messages_of_the_chat(runtime: Runtime) -> None:
    history = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "Hi"),
               ChatMessage("assistant", "Hello! How can I help?"), ChatMessage("user", "What do bees make?")]
    fitted = await runtime.fit("quality", history, max_new_tokens=GREEDY.max_new_tokens)
    assert fitted.dropped == 0 and fitted.messages == tuple(history)
