"""The application factory: Quart + quart-schema, with storage and the runtime opened and
closed in the serving lifecycle (``before_serving`` / ``after_serving``)."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from quart import Quart
from quart_schema import Info, QuartSchema

from api import (
    account_endpoints,
    accounts,
    admin_endpoints,
    auth,
    endpoints,
    errors,
    hosts,
    library_endpoints,
    machine,
    machine_endpoints,
    metrics,
    openai_compat,
    requests,
    single_process,
)
from api.chatlog import ChatLog, configure_logging
from api.conversation import Conversations
from api.database import (
    StartRefused,
    close_store,
    dialect_of,
    end_cut_replies,
    open_store,
    redacted,
    setup_lock,
)
from api.limits import Limits
from api.openapi import LlmchatOpenAPI
from api.replicas import Replicas
from api.services import Services
from api.settings import ApiSettings
from runtime.interface import ModelRuntime
from runtime.manager import Runtime

log = logging.getLogger(__name__)
LOCKS = "llmchat.locks"


class _App(Quart):
    """Quart, except that a refusal to start (:class:`StartRefused`) is logged as its reason alone."""

    def log_exception(
        self, exception_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None]
    ) -> None:
        if isinstance(exception_info[1], StartRefused):
            self.logger.error("%s", exception_info[1])
            return
        super().log_exception(exception_info)


async def _runtime(settings: ApiSettings) -> ModelRuntime:
    """The runtime the settings name: local worker processes, or actors on a Ray cluster."""
    if settings.runtime == "ray":
        from runtime.ray_runtime import RayRuntime  # the cluster extra: imported only when chosen

        try:
            return await RayRuntime.connect(settings)
        except ImportError as exc:
            raise StartRefused(f"LLMCHAT_RUNTIME=ray needs the cluster extra: pip install -e '.[cluster]' ({exc})") from None
        except ConnectionError as exc:
            raise StartRefused(f"LLMCHAT_RAY_ADDRESS={settings.ray_address}: no Ray cluster answers ({exc})") from None
    # Constructing the local runtime ends workers an earlier run left: not on the loop.
    return await asyncio.to_thread(Runtime, settings)


def create_app(settings: ApiSettings | None = None, runtime: ModelRuntime | None = None) -> Quart:
    """Build the API. ``runtime`` defaults to the real one (one process per loaded model)."""
    settings = settings or ApiSettings()
    app = _App(__name__)
    # Bodies larger than the longest message allows (4 bytes a character, plus room) are refused early.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_message_chars * 4 + 64 * 1024
    app.config["RESPONSE_TIMEOUT"] = None
    QuartSchema(
        app,
        info=Info(title="llmchat API", version="0.1.0", description="Local chat with models run in worker processes."),
        redoc_ui_path=None,
        openapi_provider_class=LlmchatOpenAPI,
        scalar_ui_path=None,
        security_schemes=auth.SECURITY_SCHEMES,
        security=auth.SECURITY,
    )
    errors.register(app)
    requests.register(app)
    hosts.register(app)
    auth.register(app)
    app.register_blueprint(account_endpoints.blueprint)
    app.register_blueprint(admin_endpoints.blueprint)
    app.register_blueprint(endpoints.blueprint)
    app.register_blueprint(machine_endpoints.blueprint)
    app.register_blueprint(openai_compat.blueprint)
    library_endpoints.register(app, settings)  # after requests.register: it extends the request class

    several = settings.runtime == "ray" and dialect_of(settings.db_url) == "postgres"  # replicas allowed

    @app.before_serving
    async def start() -> None:
        configure_logging(settings.logs_dir)
        # Before anything else: a second process would mark this one's live replies as cut short.
        locks = None if several else await single_process.hold(settings.state_dir, settings.db_url, settings.runtime)
        try:
            await _open()
        except BaseException:
            if locks is not None:
                await locks.release()
            raise
        app.extensions[LOCKS] = locks

    async def _open() -> None:
        async with setup_lock(settings.db_url):  # replicas starting together take turns
            await open_store(settings.db_url, settings.db_pool_min, settings.db_pool_max)
            admin, password = await accounts.bootstrap()
        if password is not None:  # shown once, on the terminal only: never in a log file
            print(f"llmchat: created the administrator account {admin.name!r} with the password {password} "
                  "(shown once; change it with POST /auth/password or python -m api.users)", flush=True)
        chosen = runtime if runtime is not None else await _runtime(settings)
        chatlog = ChatLog(settings.logs_dir)
        recorder = metrics.Metrics(chosen)
        limits = Limits(settings, chosen)
        conversations = Conversations(chosen, settings, chatlog, recorder, limits)
        if several:
            conversations.peers = await Replicas.join(settings.db_url, conversations.stop, conversations.stop_user)
        if conversations.peers is None or conversations.peers.alone:
            await end_cut_replies()  # no other process can be streaming them
        if conversations.peers is not None:
            await conversations.peers.started()
        app.extensions["llmchat"] = Services(
            settings, chosen, conversations, chatlog, recorder, accounts.FailureLimiter(), admin, limits
        )
        app.extensions[machine.EXTENSION] = machine.Sampler(chosen, recorder, settings.machine_sample_s).start()
        log.info("serving; database %s, models %s, %s runtime", redacted(settings.db_url), settings.models_dir,
                 settings.runtime)

    @app.after_serving
    async def stop() -> None:
        sampler: machine.Sampler | None = app.extensions.pop(machine.EXTENSION, None)
        if sampler is not None:
            await sampler.stop()
        services: Services | None = app.extensions.pop("llmchat", None)
        if services is not None:
            await services.runtime.close()
            if services.conversations.peers is not None:
                await services.conversations.peers.leave()
        await close_store()
        locks: single_process.ProcessLocks | None = app.extensions.pop(LOCKS, None)
        if locks is not None:
            await locks.release()
        log.info("stopped; every worker has exited" if settings.runtime == "local" else "stopped")

    return app
