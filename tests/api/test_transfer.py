"""Export (Markdown, JSON, a zip of all) and import of chats, through the real app and
SQLite with the fake runtime: export then import gives the same transcript and tree, a
malformed archive is a 400 that says where and imports nothing, a too large one a 413, and
imported chats belong to the importer."""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.settings import ApiSettings
from api.store import Chat, Message
from api.transfer import MAX_IMPORT_CHATS
from runtime.fake import FakeRuntime, fake_model
from tests.auth import signed_in

MODEL = "fake.gguf"
MAX_CHARS = 4000
MAX_IMPORT_BYTES = 2_000_000

Archive = dict[str, Any]


@pytest.fixture(scope="module")
def fake() -> FakeRuntime:
    return FakeRuntime([fake_model(MODEL)], reply_words=3)


@pytest.fixture(scope="module")
async def app(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeRuntime, db_url: str
) -> AsyncIterator[QuartTestApp]:
    home = tmp_path_factory.mktemp("transfer")
    settings = ApiSettings(models_dir=home / "models", db_url=db_url, logs_dir=home / "logs",
                           state_dir=home, max_message_chars=MAX_CHARS, max_import_bytes=MAX_IMPORT_BYTES)
    async with create_app(settings, runtime=fake).test_app() as running:
        yield running


@pytest.fixture(scope="module")
async def alice(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "alice", "user")


@pytest.fixture(scope="module")
async def bob(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "bob", "user")


async def _say(client: QuartClient, chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(f"/chat?model={MODEL}", json={"chat_id": chat_id, "message": text, **extra})
    assert response.status_code == 200, await response.get_data()
    return dict(await response.get_json())


async def _get(client: QuartClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, (path, await response.get_data())
    return await response.get_json()


@pytest.fixture(scope="module")
async def trip(alice: QuartClient, fake: FakeRuntime) -> dict[str, Any]:
    """Alice's chat with a title, a system prompt and a tree: a regenerated reply and an edited
    question beside the branch shown, which is not the newest."""
    created = await alice.post("/chats", json={"chat_id": "trip", "title": "Trip to Lyon",
                                               "system_prompt": "Answer briefly.\nIn English.", "temperature": 0.2})
    assert created.status_code == 201
    await _say(alice, "trip", "Which trains go to Lyon?")
    first_back = await _say(alice, "trip", "And back to Paris?")
    fake.reply_words = 5
    try:
        regenerated = await alice.post("/chats/trip/regenerate", json={})
        assert regenerated.status_code == 200
        question = (await _get(alice, "/history?chat_id=trip"))["messages"][2]
        await _say(alice, "trip", "And back to Marseille?", edit_of=question["id"])
    finally:
        fake.reply_words = 3
    shown = await alice.post("/chats/trip/branch", json={"message_id": first_back["id"]})
    assert shown.status_code == 200
    history = await _get(alice, "/history?chat_id=trip")
    assert [m["text"] for m in history["messages"]] == [
        "Which trains go to Lyon?", "word0 word1 word2", "And back to Paris?", "word0 word1 word2"]
    tree = await _get(alice, "/history?chat_id=trip&tree=true")
    assert len(tree["messages"]) == 7
    return {"history": history, "tree": tree}


@pytest.fixture(scope="module")
async def archive(alice: QuartClient, trip: dict[str, Any]) -> Archive:
    response = await alice.get("/chats/trip/export?format=json")
    assert response.status_code == 200
    return dict(json.loads(await response.get_data()))


async def _import(client: QuartClient, archive: Any) -> tuple[int, Any]:
    response = await client.post("/chats/import", json=archive)
    return response.status_code, await response.get_json()


def _normalised(history: dict[str, Any], order: dict[int, int]) -> dict[str, Any]:
    """A history with each message id replaced by its place in the chat's tree."""
    def place(message_id: int | None) -> int | None:
        return None if message_id is None else order[message_id]

    return {
        "current": place(history["current_message_id"]),
        "messages": [{**m, "id": place(m["id"]), "parent_id": place(m["parent_id"]),
                      "siblings": [place(s) for s in m["siblings"]]} for m in history["messages"]],
    }


async def _transcript(client: QuartClient, chat_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    tree = await _get(client, f"/history?chat_id={chat_id}&tree=true")
    order = {m["id"]: n for n, m in enumerate(tree["messages"])}
    shown = await _get(client, f"/history?chat_id={chat_id}")
    chat = await _get(client, f"/chats/{chat_id}")
    return _normalised(tree, order), _normalised(shown, order), chat


async def _markdown(client: QuartClient, chat_id: str) -> str:
    response = await client.get(f"/chats/{chat_id}/export")
    assert response.status_code == 200
    return re.sub(r"exported \d{4}-\d\d-\d\d \d\d:\d\d UTC", "exported (time)", await response.get_data(as_text=True))


async def test_export_markdown_is_the_branch_shown_with_each_replys_metrics(alice: QuartClient, trip: Any) -> None:
    response = await alice.get("/chats/trip/export")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="trip-to-lyon.md"'
    text = await response.get_data(as_text=True)
    assert text.startswith("# Trip to Lyon\n\nmodel fake.gguf (llama.cpp) · created ")
    assert "> **System prompt:**\n> Answer briefly.\n> In English.\n" in text
    shown = trip["history"]["messages"]
    assert [line for line in text.splitlines() if line.startswith("**")] == [
        f"**{'You' if m['sender'] == 'user' else 'Assistant'}** · {m['timestamp'][:10]} {m['timestamp'][11:16]} UTC"
        for m in shown]
    assert text.index("Which trains go to Lyon?") < text.index("And back to Paris?")
    assert "Marseille" not in text and "word4" not in text  # other branches are in the JSON only
    footers = [line for line in text.splitlines() if line.startswith("*") and "tokens/s" in line]
    assert len(footers) == 2
    reply = shown[1]
    assert footers[0] == (f"*{reply['tokens']} tokens · {reply['time_s']:.2f} s · {reply['tps']:.1f} tokens/s · "
                          f"first token {reply['time_to_first_token_s'] * 1000:.0f} ms · fake.gguf on cpu*")


async def test_export_json_has_every_message_of_the_tree(alice: QuartClient, trip: Any, archive: Archive) -> None:
    response = await alice.get("/chats/trip/export?format=json")
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Disposition"] == 'attachment; filename="trip-to-lyon.json"'
    assert (archive["format"], archive["version"]) == ("llmchat.chats", 1) and archive["exported_at"]
    (chat,) = archive["chats"]
    meta = await _get(alice, "/chats/trip")
    assert {k: chat[k] for k in ("chat_id", "title", "display_title", "created_at", "updated_at", "model", "device",
                                 "backend", "system_prompt", "temperature", "top_p", "max_new_tokens")} == {
        "chat_id": "trip", "title": "Trip to Lyon", "display_title": "Trip to Lyon",
        "created_at": meta["created_at"], "updated_at": meta["updated_at"], "model": MODEL, "device": meta["device"],
        "backend": "llama.cpp", "system_prompt": "Answer briefly.\nIn English.", "temperature": 0.2,
        "top_p": meta["top_p"], "max_new_tokens": meta["max_new_tokens"]}
    assert chat["current_message_id"] == trip["history"]["current_message_id"]
    tree = trip["tree"]["messages"]
    assert chat["messages"] == [{k: v for k, v in m.items() if k != "siblings"} for m in tree]


async def test_export_all_is_a_zip_of_the_archive_and_one_markdown_file_per_chat(
    alice: QuartClient, bob: QuartClient, trip: Any
) -> None:
    await _say(alice, "second", "Another question")
    await _say(alice, "third", "Another question")  # the same title: the file names differ
    await _say(bob, "bobs", "Bob's own question")
    response = await alice.get("/chats/export")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    assert re.fullmatch(r'attachment; filename="llmchat-chats-\d{4}-\d\d-\d\d\.zip"',
                        response.headers["Content-Disposition"])
    bundle = zipfile.ZipFile(io.BytesIO(await response.get_data(as_text=False)))
    archive = json.loads(bundle.read("chats.json"))
    mine = [c["chat_id"] for page in [(await _get(alice, "/chats?limit=200"))["chats"]] for c in page]
    assert [c["chat_id"] for c in archive["chats"]] == mine and "bobs" not in mine
    markdown = sorted(n for n in bundle.namelist() if n != "chats.json")
    assert len(markdown) == len(mine) and all(re.fullmatch(r"chats/\d{4}-\d\d-\d\d-[a-z0-9-]+\.md", n) for n in markdown)
    assert len([n for n in markdown if "another-question" in n]) == 2
    trip_file = next(n for n in markdown if n.endswith("trip-to-lyon.md"))
    assert bundle.read(trip_file).decode().startswith("# Trip to Lyon\n")


async def test_export_then_import_gives_the_same_transcript_and_tree(alice: QuartClient, archive: Archive) -> None:
    status, body = await _import(alice, archive)
    assert status == 201, body
    ((new_id, title),) = [(c["chat_id"], c["title"]) for c in body["imported"]]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id) and title == "Trip to Lyon"
    old_tree, old_shown, old_chat = await _transcript(alice, "trip")
    new_tree, new_shown, new_chat = await _transcript(alice, new_id)
    assert new_tree == old_tree and new_shown == old_shown  # texts, times, statuses, metrics, parents, siblings
    assert {**new_chat, "chat_id": "trip", "loaded": old_chat["loaded"]} == old_chat  # created_at and updated_at too
    assert await _markdown(alice, new_id) == await _markdown(alice, "trip")
    # New message ids: the original chat is untouched.
    new_ids = {m["id"] for m in (await _get(alice, f"/history?chat_id={new_id}&tree=true"))["messages"]}
    assert not new_ids & {m["id"] for m in archive["chats"][0]["messages"]}
    # And exporting the import gives the archive back, but for the chat id.
    again = json.loads(await (await alice.get(f"/chats/{new_id}/export?format=json")).get_data())
    old_ids = [m["id"] for m in archive["chats"][0]["messages"]]
    renumber = dict(zip(sorted(new_ids), old_ids, strict=True))
    for m in again["chats"][0]["messages"]:
        m["id"], m["parent_id"] = renumber[m["id"]], renumber.get(m["parent_id"])
    again["chats"][0]["current_message_id"] = renumber[again["chats"][0]["current_message_id"]]
    assert {**again["chats"][0], "chat_id": "trip"} == archive["chats"][0]


async def test_imported_chats_belong_to_the_importer(alice: QuartClient, bob: QuartClient, archive: Archive) -> None:
    status, body = await _import(bob, archive)
    assert status == 201
    new_id = body["imported"][0]["chat_id"]
    bobs = [c["chat_id"] for c in (await _get(bob, "/chats?limit=200"))["chats"]]
    alices = [c["chat_id"] for c in (await _get(alice, "/chats?limit=200"))["chats"]]
    assert new_id in bobs and new_id not in alices
    assert (await alice.get(f"/chats/{new_id}")).status_code == 404
    assert (await alice.get(f"/chats/{new_id}/export")).status_code == 404
    assert (await bob.get("/chats/trip/export")).status_code == 404  # nor the other way round
    assert (await Chat.get(id=new_id).prefetch_related("owner")).owner.name == "bob"  # type: ignore[union-attr]
    # Imported messages are searchable by their new owner only.
    hits = (await _get(bob, "/search?q=marseille"))["results"]
    assert [h["chat_id"] for h in hits] == [new_id]


async def test_a_reply_exported_while_streaming_imports_as_stopped(alice: QuartClient, archive: Archive) -> None:
    changed = copy.deepcopy(archive)
    chat = changed["chats"][0]
    chat["messages"][-1]["status"] = "streaming"
    chat["current_message_id"] = None  # absent: the last message is shown
    status, body = await _import(alice, changed)
    assert status == 201
    history = await _get(alice, f"/history?chat_id={body['imported'][0]['chat_id']}&tree=true")
    assert history["messages"][-1]["status"] == "stopped"
    assert history["current_message_id"] == history["messages"][-1]["id"]


def _message(index: int, **change: Any) -> Callable[[Archive], str]:
    def mutate(a: Archive) -> str:
        m = a["chats"][0]["messages"][index]
        m.update(change)
        return f"chats[0], message {m['id']}"
    return mutate


def _chat(**change: Any) -> Callable[[Archive], str]:
    def mutate(a: Archive) -> str:
        a["chats"][0].update(change)
        return "chats[0]"
    return mutate


def _top(**change: Any) -> Callable[[Archive], str]:
    def mutate(a: Archive) -> str:
        a.update(change)
        return ""
    return mutate


def _parent_later(a: Archive) -> str:
    messages = a["chats"][0]["messages"]
    messages[1]["parent_id"] = messages[3]["id"]
    return f"chats[0], message {messages[1]['id']}, parent_id: {messages[3]['id']} is no earlier message"


def _duplicate(a: Archive) -> str:
    messages = a["chats"][0]["messages"]
    messages[2]["id"] = messages[1]["id"]
    return f"chats[0], message {messages[1]['id']}, id: another message of this chat has the same id"


def _second_chat_bad(a: Archive) -> str:
    bad = copy.deepcopy(a["chats"][0])
    bad["messages"][2]["sender"] = "system"
    a["chats"].append(bad)
    return f"chats[1], message {bad['messages'][2]['id']}, sender"


def _dropped(key: str) -> Callable[[Archive], str]:
    def mutate(a: Archive) -> str:
        del a["chats"][0][key]
        return f"chats[0], {key}: Field required"
    return mutate


MALFORMED: dict[str, Callable[[Archive], str]] = {
    "format": _top(format="something.else"),
    "version": _top(version=2),
    "no chats": _top(chats=[]),
    "chats not a list": _top(chats={"a": 1}),
    "unknown top-level field": _top(comment="hi"),
    "sender": _message(1, sender="bot"),
    "status": _message(1, status="thinking"),
    "parent later": _parent_later,
    "parent unknown": _message(1, parent_id=987654),
    "duplicate id": _duplicate,
    "current message unknown": _chat(current_message_id=987654),
    "text too long": _message(0, text="x" * (MAX_CHARS + 1)),
    "text empty": _message(0, text=""),
    "text not a string": _message(0, text=5),
    "id not a number": lambda a: _message(0, id="first")(a) and "chats[0], messages[0], id",
    "timestamp": _message(0, timestamp="yesterday"),
    "timestamp out of range": _message(0, timestamp="0001-01-01T00:00:00+05:00"),
    "tokens negative": _message(1, tokens=-1),
    "tokens too large": _message(1, tokens=10**20),
    "running_on": _message(1, running_on="tpu"),
    "unknown message field": _message(1, siblings=[1]),
    "temperature": _chat(temperature=5),
    "device": _chat(device="tpu"),
    "title too long": _chat(title="t" * 201),
    "created_at missing": _dropped("created_at"),
    "a later chat is bad": _second_chat_bad,
}

EXPECTED_FIELD = {
    "format": "format", "version": "version", "no chats": "chats", "chats not a list": "chats",
    "unknown top-level field": "comment", "sender": "sender", "status": "status", "parent unknown": "parent_id: 987654",
    "current message unknown": "current_message_id: 987654", "text too long": f"the limit is {MAX_CHARS}",
    "text empty": "may not be empty", "text not a string": "text", "id not a number": "id", "timestamp": "timestamp",
    "timestamp out of range": "out of range", "tokens negative": "tokens", "tokens too large": "tokens",
    "running_on": "running_on", "unknown message field": "siblings", "temperature": "temperature",
    "device": "device", "title too long": "title",
}


async def _counts() -> tuple[int, int]:
    return await Chat.all().count(), await Message.all().count()


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_archive_is_a_400_that_says_where_and_imports_nothing(
    bob: QuartClient, archive: Archive, case: str
) -> None:
    changed = copy.deepcopy(archive)
    where = MALFORMED[case](changed)
    before = await _counts()
    status, body = await _import(bob, changed)
    assert status == 400, body
    assert body["error"] == "MalformedRequest"
    assert body["detail"].startswith("the archive is not a valid llmchat export; nothing was imported: ")
    assert where in body["detail"] and EXPECTED_FIELD.get(case, "") in body["detail"], body["detail"]
    assert await _counts() == before


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"llmchat.chats"', b"{not json", b'{"format": NaN}', b"\xff\xfe", b""])
async def test_a_body_that_is_no_archive_object_is_a_400(bob: QuartClient, raw: bytes) -> None:
    before = await _counts()
    response = await bob.post("/chats/import", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "MalformedRequest"
    assert await _counts() == before


async def test_too_many_chats_is_a_400(bob: QuartClient) -> None:
    chat = {"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
    status, body = await _import(bob, {"format": "llmchat.chats", "version": 1, "chats": [chat] * (MAX_IMPORT_CHATS + 1)})
    assert status == 400 and f"at most {MAX_IMPORT_CHATS}" in body["detail"]


async def test_too_large_is_a_413_that_names_the_setting_and_imports_nothing(bob: QuartClient, archive: Archive) -> None:
    padded = copy.deepcopy(archive)
    padded["chats"][0]["messages"][1]["text"] = "x" * MAX_IMPORT_BYTES  # a reply may be long; the body may not
    before = await _counts()
    status, body = await _import(bob, padded)
    assert status == 413 and "LLMCHAT_MAX_IMPORT_BYTES" in body["detail"]
    assert await _counts() == before
    # Other routes keep the small limit of a message.
    response = await bob.post("/chats", json={"title": "x" * 200_000})
    assert response.status_code == 413


async def test_a_large_archive_within_the_limit_imports(bob: QuartClient, archive: Archive) -> None:
    large = copy.deepcopy(archive)
    large["chats"][0]["messages"][1]["text"] = "long reply " * 40_000  # 440 kB: beyond a message's body limit
    status, body = await _import(bob, large)
    assert status == 201, body
    history = await _get(bob, f"/history?chat_id={body['imported'][0]['chat_id']}&tree=true")
    assert history["messages"][1]["text"] == "long reply " * 40_000


async def test_import_takes_json_only(bob: QuartClient, archive: Archive) -> None:
    response = await bob.post("/chats/import", data=json.dumps(archive), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


async def test_export_of_an_unknown_chat_or_format(alice: QuartClient, trip: Any) -> None:
    assert (await alice.get("/chats/nope/export")).status_code == 404
    assert (await alice.get("/chats/trip/export?format=pdf")).status_code == 422


@pytest.mark.parametrize("reserved", ["export", "import"])
async def test_the_route_names_are_no_chat_ids(alice: QuartClient, reserved: str) -> None:
    """A chat called "export" could never be read back: GET /chats/export is the archive."""
    for refused in (await alice.post("/chats", json={"chat_id": reserved}),
                    await alice.post("/load", json={"chat_id": reserved, "model": MODEL})):
        assert refused.status_code == 400
        assert "reserved" in (await refused.get_json())["detail"]
    assert (await alice.get("/chats/export")).headers["Content-Type"] == "application/zip"
