"""The HTTP side of `charrnn serve`: a FastAPI app around one engine.

    POST /v1/generate   the prime and new characters (JSON), or streamed (text/event-stream)
    POST /v1/score      the model's surprise at each character of a text (as `explain --json`)
    GET  /v1/model      the served checkpoint's facts (as `inspect --json`, paths as names)
    GET  /health        up, and how busy
    GET  /              the page (charrnn/serve/page/)

The request's sampling fields and their bounds are not written here: they are built from
charrnn.use_config.SampleConfig's declarations (the server's own limits narrow `length` and
`num_samples`), so the validation, the 422 messages and the OpenAPI schema say what
`charrnn sample --help` says.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations, and the
request models are made inside create_app.
"""

import asyncio
import contextlib
import copy
import dataclasses
import errno
import json
import logging
import math
import socket
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from charrnn import config, use_config
from charrnn.errors import CharRNNError, ConfigError
from charrnn.generation import new_seed
from charrnn.sample import SamplingOptions, TextGenerator
from charrnn.serve.engine import Busy, Engine, Job, ShuttingDown, Stream

MAX_STOPS, MAX_STOP_CHARS = 8, 64
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# allow_inf_nan: a temperature of Infinity is refused here as `charrnn sample` refuses inf.
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------- requests


def sample_field(name: str, limits: use_config.ServeConfig) -> tuple[Any, Any]:
    """A request field for the declared sampling setting `name`: its type, default, bounds and
    description from SampleConfig; `length`, `num_samples` and `stop` within the server's
    limits."""
    kind, default, declared = config.declaration(name, use_config.SampleConfig)
    if name == "length":
        declared = dataclasses.replace(declared, max=limits.max_length)
        default = min(default, limits.max_length)
    elif name == "num_samples":
        declared = dataclasses.replace(declared, max=min(limits.max_samples, limits.max_streams))
    bounds: dict[str, Any] = {}
    if declared.min is not None:
        bounds["gt" if declared.min_open else "ge"] = declared.min
    if declared.max is not None:
        bounds["lt" if declared.max_open else "le"] = declared.max
    words = declared.bounds_text()
    description = declared.help + (f" ({words})" if words else "")
    if declared.item is not None:  # a repeatable setting (stop): a list, within the limits
        item = declared.item
        if item is str:
            item = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
        description += f" (at most {MAX_STOPS}, each 1 to {MAX_STOP_CHARS} characters)"
        return list[item], Field(default_factory=list, max_length=MAX_STOPS,
                                 description=description)  # fmt: skip
    annotation = kind | None if default is None else kind
    return annotation, Field(default, description=description, **bounds)


def _skip_unknown(description: str) -> tuple[Any, Any]:
    return bool, Field(False, description=description)


def request_models(limits: use_config.ServeConfig) -> tuple[type[BaseModel], type[BaseModel]]:
    """(GenerateRequest, ScoreRequest) for these limits."""
    sampling = {
        name: sample_field(name, limits) for name in config.fields_of(use_config.SampleConfig)
    }
    generate = create_model(
        "GenerateRequest",
        __config__=STRICT,
        prime=(
            str | None,
            Field(
                None,
                description="text to start from; the reply's text begins with it "
                "(absent or empty: a newline, as `charrnn sample`)",
            ),
        ),  # fmt: skip
        **sampling,
        stream=(
            bool,
            Field(
                False,
                description='answer text/event-stream: one `data: {"text": ...}` '
                "event per piece of new text, then `event: done` with the summary",
            ),
        ),  # fmt: skip
        skip_unknown=_skip_unknown("drop prime characters the model never saw (else 422)"),
        score=(
            bool,
            Field(
                False,
                description="also give each sample's mean log-probability per new character "
                "(`mean_log_probs`, under the model at temperature 1, as `charrnn sample "
                "--json`); costs a little time per character",
            ),
        ),  # fmt: skip
    )
    score = create_model(
        "ScoreRequest",
        __config__=STRICT,
        text=(
            str,
            Field(
                min_length=1,
                description="the text to read; its first character is "
                "not scored (nothing comes before it)",
            ),
        ),  # fmt: skip
        skip_unknown=_skip_unknown("show characters the model never saw unscored (else 422)"),
    )
    return generate, score


class GenerateReply(BaseModel):
    """The answer to a generation (also the data of a stream's `done` event)."""

    text: str = Field(description="the prime followed by the new characters (sample 1)")
    texts: list[str] = Field(description="every sample's text, prime included")
    prime: str = Field(description="the prime as read (the default, or unseen characters left out)")
    finish_reasons: list[str] = Field(description="per sample: length or stop")
    new_characters: list[int] = Field(description="new characters per sample")
    mean_log_probs: list[float | None] | None = Field(
        description='per sample, with "score": true: the mean log-probability of its new '
        "characters under the model (temperature 1); null for a sample with none"
    )
    seed: int = Field(description="the seed used (drawn when none was given): ask again with it")
    settings: dict[str, Any] = Field(
        description="temperature, top_k, top_p, greedy, length, num_samples, stop as used"
    )
    seconds: float = Field(description="from the prime's reading to the last character")
    queued_seconds: float = Field(description="time spent waiting for a place in the batch")
    chars_per_second: float | None = Field(description="new characters per second")


class Problem(BaseModel):
    error: str = Field(description="what is wrong, in one line")


# ---------------------------------------------------------------------------------- the app


def create_app(
    generator: TextGenerator,
    limits: use_config.ServeConfig | None = None,
    checkpoint: str | Path | None = None,
) -> FastAPI:
    """The app serving `generator` within `limits`; `checkpoint` is the file it was loaded from
    (described by GET /v1/model)."""
    limits = limits or use_config.ServeConfig()
    GenerateRequest, ScoreRequest = request_models(limits)  # noqa: N806 - classes
    described = _describe(checkpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = Engine(generator, limits)
        app.state.engine.start()
        try:
            yield
        finally:  # uvicorn has let the open requests finish (or cut them off after the grace)
            await asyncio.to_thread(app.state.engine.close)

    app = FastAPI(
        title="charrnn",
        summary="Text from a character-level recurrent network, one character at a time.",
        version=_version(),
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    use_config.check_cors_origins(limits.cors_origin)
    if limits.cors_origin:  # pages of these origins may call the API from a browser
        from fastapi.middleware.cors import CORSMiddleware

        origins = list(limits.cors_origin)
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"])  # fmt: skip
    errors = {422: {"model": Problem}, 503: {"model": Problem}}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        unread = _not_json(request.headers.get("content-type"), error)
        problems = [unread] if unread else [_problem(e) for e in error.errors()]
        detail = _json_safe(jsonable_encoder(error.errors()))  # the input given may be NaN
        return JSONResponse({"error": "; ".join(problems), "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """404, 405 and a body that cannot be decoded: the same {"error": ...} as the rest."""
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)

    @app.exception_handler(CharRNNError)
    async def refused(request: Request, error: CharRNNError) -> JSONResponse:
        if isinstance(error, Busy | ShuttingDown):
            return JSONResponse({"error": str(error)}, 503, headers={"Retry-After": "1"})
        return JSONResponse({"error": _for_http(str(error))}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, 500)

    @app.post(
        "/v1/generate",
        response_model=None,
        responses={200: {"model": GenerateReply, "content": {"text/event-stream": {}}}, **errors},
    )
    async def generate(request: Request, body: GenerateRequest) -> Response:  # type: ignore[valid-type]
        """Write text: the prime followed by `length` new characters, as `charrnn sample`
        prints it. With `"stream": true` the new text arrives as server-sent events."""
        engine: Engine = request.app.state.engine
        stream = engine.submit(_job(generator, body))
        if body.stream:
            return StreamingResponse(
                _events(engine, stream),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _reply(request, engine, stream)

    @app.post("/v1/score", responses=errors)
    async def score(request: Request, body: ScoreRequest) -> dict:  # type: ignore[valid-type]
        """The model's surprise (loss in nats) at each character given the ones before it, as
        `charrnn explain --json` gives it; `mean` is their mean."""
        from charrnn import explain, scoring

        reading = scoring.read(generator.vocab, body.text, body.skip_unknown)
        view = await request.app.state.engine.run(
            lambda: explain.surprise(generator.model, generator.vocab, reading)
        )
        payload = view.to_json()
        scored = [v for v in view.values if v is not None]
        payload["mean"] = sum(scored) / len(scored) if scored else None
        return payload

    @app.get("/v1/model")
    async def model() -> dict:
        """The served checkpoint: corpus, vocabulary, model, training (`charrnn inspect
        --json`)."""
        if described is None:
            return JSONResponse({"error": "no checkpoint file behind this model"}, 404)
        return described

    @app.get("/health")
    async def health(request: Request) -> dict:
        """Up, how many samples are being generated, how many requests wait, the limits."""
        engine: Engine = request.app.state.engine
        return {
            "status": "ok",
            **engine.stats(),
            "device": str(generator.device),
            "int8": generator.int8,
            "sampler": generator.sampler,  # "compiled int8", "int8" or "exact"
            "limits": config.to_dict(limits),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page_file("index.html"))

    @app.get("/page/{name}", include_in_schema=False)
    async def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            return JSONResponse({"error": f"no page file {name!r}"}, 404)
        return Response(_page_file(name), media_type=PAGE_FILES[name])

    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` and listening, or ConfigError saying why not: bound
    before the server announces its address, so a port in use is one line, not a server that
    said it was serving and then exits with uvicorn's log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        why = getattr(error, "strerror", None) or error
        raise ConfigError(f"cannot listen on host {host!r}: {why}; check --host") from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; choose another --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return listener


def serve_forever(app: FastAPI, limits: use_config.ServeConfig, listener: socket.socket) -> None:
    """Run `app` on uvicorn, on `listener` (from `listen`), until SIGINT or SIGTERM.

    On the signal uvicorn stops accepting connections and waits for the open ones; the engine
    lets its streams run for `limits.grace` seconds, then ends the rest with an `error` event
    (a clean end of their responses), so uvicorn's own cut-off (later) has nothing to cut."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            engine = getattr(app.state, "engine", None)
            if engine is not None:
                engine.drain(limits.grace)
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app,
            host=limits.host,
            port=limits.port,
            timeout_graceful_shutdown=limits.grace + 2,
            log_level="warning",
            log_config=_log_config(),
            access_log=limits.access_log,
        )
    )
    if limits.access_log:  # uvicorn's own request lines; its start-up chatter stays quiet
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server.run(sockets=[listener])


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with its request lines on stderr (where charrnn says everything
    else) rather than stdout."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def _job(generator: TextGenerator, body: Any) -> Job:
    """The checked request as the engine takes it (the prime cleaned as `charrnn sample` does:
    absent or empty is the default prime; unknown characters refused or skipped)."""
    use_config.check_greedy({name: getattr(body, name) for name in body.model_fields_set})
    prime = generator.clean_prime(body.prime, body.skip_unknown)
    options = SamplingOptions(body.temperature, body.top_k, body.top_p, body.greedy)
    seed = new_seed() if body.seed is None else body.seed
    return Job(prime, body.length, options, seed, body.num_samples, tuple(body.stop), body.score)


async def _events(engine: Engine, stream: Stream) -> AsyncIterator[str]:
    """Server-sent events: `start` (the prime as read, the seed and the settings, so a client
    can show them before any text and keep the seed of a stream it stops), the new text in
    pieces, then `done` (or `error`)."""
    job = stream.job
    several = job.num_samples > 1
    start = {"prime": job.prime, "seed": job.seed, "settings": job.settings()}
    yield f"event: start\ndata: {json.dumps(start, ensure_ascii=False)}\n\n"
    try:
        async for event in stream:
            if event[0] == "text":
                data = {"text": event[2], "index": event[1]} if several else {"text": event[2]}
                yield f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
            elif event[0] == "done":
                yield f"event: done\ndata: {json.dumps(event[1], ensure_ascii=False)}\n\n"
            else:
                yield f"event: error\ndata: {json.dumps({'error': event[1]})}\n\n"
    finally:  # done, or the client went away (the response was cancelled): free the rows
        engine.cancel(stream)


async def _reply(request: Request, engine: Engine, stream: Stream) -> Response:
    """The whole answer as JSON; a client that disconnects first frees its rows at once."""

    async def end() -> tuple:
        async for event in stream:
            if event[0] != "text":
                return event
        raise RuntimeError("the stream ended without a result")

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    finished, watcher = asyncio.ensure_future(end()), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({finished, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not finished.done():
            finished.cancel()
            engine.cancel(stream)
    if not finished.done() or finished.cancelled():
        return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
    kind, payload = finished.result()
    if kind == "done":
        return JSONResponse(payload)
    return JSONResponse({"error": payload}, status_code=500)


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float written as text (JSON has no NaN or Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


# The library's refusals name the command line's flag; a client sends the request's field.
FLAGS_AS_FIELDS = {"pass --skip-unknown": 'send "skip_unknown": true'}


def _for_http(message: str) -> str:
    for flag, field in FLAGS_AS_FIELDS.items():
        message = message.replace(flag, field)
    return message


def _not_json(content_type: str | None, error: RequestValidationError) -> str | None:
    """Why the body was not read as JSON at all, or None when it was.

    FastAPI parses a body only when its Content-Type says JSON; any other body (form data, no
    Content-Type) reaches validation as its raw bytes, which it would report as "Input should
    be a valid dictionary", naming neither JSON nor the header."""
    if isinstance(error.body, bytes):
        kind = (content_type or "").split(";", 1)[0].strip()[:100]
        sent = f"as {kind}" if kind else "with no Content-Type"
        return f"the body was sent {sent}; send it as JSON (Content-Type: application/json)"
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",)
           for e in error.errors()):  # fmt: skip
        return "the body is empty; send a JSON object (Content-Type: application/json)"
    return None


def _problem(error: dict) -> str:
    """One validation error in words that name the field, the rule and the value given."""
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    if error.get("type") == "json_invalid":
        at = error.get("loc", ())[-1:]
        place = f" at character {at[0]}" if at and isinstance(at[0], int) else ""
        return f"malformed JSON{place}: {error.get('ctx', {}).get('error', error.get('msg'))}"
    given = error.get("input")
    shown = "" if error.get("type") == "missing" or isinstance(given, dict) else f", got {given!r}"
    return f"{where}: {error.get('msg')}{shown}"


def _describe(checkpoint: str | Path | None) -> dict | None:
    """`charrnn inspect --json` of the checkpoint, with every path cut to its file name: a
    server tells its clients what the model is, not where its files lie on this machine."""
    if checkpoint is None:
        return None
    from charrnn import insight

    return _names_only(jsonable_encoder(insight.summarize(checkpoint).to_json()))


# The keys of inspect's JSON (at any depth) whose strings are paths of this machine.
PATH_KEYS = {"checkpoint", "corpus", "path", "val_corpus", "init_from"}


def _names_only(value: Any, is_path: bool = False) -> Any:
    if isinstance(value, str) and is_path and value:
        return Path(value).name or value
    if isinstance(value, dict):
        return {key: _names_only(item, key in PATH_KEYS) for key, item in value.items()}
    if isinstance(value, list):
        return [_names_only(item, is_path) for item in value]
    return value


def _page_file(name: str) -> str:
    return resources.files("charrnn.serve").joinpath("page", name).read_text(encoding="utf-8")


def _version() -> str:
    from charrnn import __version__

    return __version__


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, before the app reads them.

    The body is read here (at most max_bytes of it) and handed on; then the app's later
    `receive` calls go to the server, so it still hears when the client disconnects."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {
                "error": f"the request body is larger than {self.max_bytes} bytes "
                "(--max-request-bytes)"
            }  # fmt: skip
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
