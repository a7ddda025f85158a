"""Request and response bodies. quart-schema validates requests against these and builds
``/openapi.json`` from them, so the documented schemas are the enforced ones.

Names and fields of the seed (LoadRequest, ChatRequest, ChatResponse, ...) are kept so
seed clients work unchanged; fields after them are additions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CHAT_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
ChatId = Field(min_length=1, max_length=64, pattern=CHAT_ID_PATTERN, examples=["5f0c2a9e"])
OptionalChatId = Field(None, min_length=1, max_length=64, pattern=CHAT_ID_PATTERN)
DeviceName = Literal["auto", "cpu", "gpu"]
BackendName = Literal["llama.cpp", "transformers", "onnx"]
MessageStatus = Literal["streaming", "complete", "stopped", "error"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests


class LoadRequest(Strict):
    chat_id: str = ChatId
    model: str = Field(min_length=1, max_length=255)
    device: DeviceName = "auto"
    backend: BackendName | None = Field(None, description="Force a backend; default: the model's own.")
    idle_unload_s: float | None = Field(
        None, ge=0, le=30 * 24 * 3600, description="Unload after this long unused (0 = never); default: the setting."
    )


class UnloadRequest(Strict):
    chat_id: str = ChatId
    model: str | None = Field(None, description="Accepted for seed compatibility; the chat's model is unloaded.")
    device: DeviceName | None = None


class ChatRequest(Strict):
    chat_id: str = ChatId
    message: str = Field(min_length=1)
    stream: bool = Field(False, description="Answer with server-sent events instead of one JSON body.")


class ChatQuery(Strict):
    model: str | None = Field(None, max_length=255, description="Load this model first if it is not loaded.")
    device: DeviceName | None = None


class ChatIdQuery(Strict):
    chat_id: str = ChatId


class OptionalChatIdQuery(Strict):
    chat_id: str | None = OptionalChatId


class ChatSettings(Strict):
    """Fields a chat can be created with or changed to; omitted fields stay as they are."""

    title: str | None = Field(None, max_length=200)
    system_prompt: str | None = Field(None, max_length=32_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, le=32_768)


class CreateChatRequest(ChatSettings):
    chat_id: str | None = OptionalChatId


class RegenerateRequest(Strict):
    stream: bool = False


# Responses


class WorkerState(BaseModel):
    model: str
    device: DeviceName
    backend: str
    running_on: Literal["cpu", "cuda"]
    pid: int
    context_length: int
    load_time_s: float
    chats: list[str]
    busy: bool
    queued: int = 0
    idle_s: float = 0.0
    idle_unload_s: float = 0.0
    cuda_visible_devices: str | None = None


class StatusResponse(BaseModel):
    loaded: bool
    model: str | None = None
    device: str | None = None
    chat_id: str | None = None
    backend: str | None = None
    running_on: str | None = None
    context_length: int | None = None
    reason: str | None = Field(None, description="Why the chat's model is no longer loaded, if it went away.")
    workers: list[WorkerState] = []


class ChatMeta(BaseModel):
    chat_id: str
    title: str
    model: str | None = None
    device: str | None = None
    backend: str | None = None
    loaded: bool = False
    created_at: str
    updated_at: str
    message_count: int = 0


class ChatDetail(ChatMeta):
    system_prompt: str
    temperature: float
    top_p: float
    max_new_tokens: int


class ChatList(BaseModel):
    chats: list[ChatMeta]


class ChatMessage(BaseModel):
    sender: Literal["user", "assistant"]
    text: str
    timestamp: str
    id: int
    status: MessageStatus = "complete"
    error: str | None = None
    model: str | None = None
    device: str | None = None
    prompt_tokens: int | None = None
    tokens: int | None = None
    time_to_first_token_s: float | None = None
    time_s: float | None = None
    tps: float | None = None
    dropped_messages: int | None = None


class History(BaseModel):
    chat_id: str
    messages: list[ChatMessage]


class LoadResponse(BaseModel):
    status: Literal["loaded"]
    chat_id: str
    model: str
    device: str
    load_time_s: float
    backend: str
    running_on: str
    context_length: int


class UnloadResponse(BaseModel):
    status: Literal["unloaded", "not_loaded"]
    chat_id: str
    model: str | None = None
    device: str | None = None
    process_exited: bool | None = Field(None, description="Checked after the worker stopped.")
    freed_mb: float | None = Field(
        None, description="Memory given back: the worker's resident memory on CPU, its VRAM (NVML) on a GPU."
    )
    shared: bool = Field(False, description="Other chats still use the worker, so it keeps running.")


class ChatResponse(BaseModel):
    response: str
    tokens: int
    time_s: float
    tps: float
    message_id: int
    status: MessageStatus
    prompt_tokens: int
    time_to_first_token_s: float
    dropped_messages: int
    model: str
    device: str


class ModelEntry(BaseModel):
    name: str
    backend: str
    size_bytes: int
    context_length: int | None
    loaded_on: list[str] = Field(description="Devices it is loaded on right now (auto, cpu, gpu).")


class ModelList(BaseModel):
    models: list[ModelEntry]
    models_dir: str


class Deleted(BaseModel):
    deleted: bool
    chat_id: str


class Stopped(BaseModel):
    stopped: bool
    chat_id: str
