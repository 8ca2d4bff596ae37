"""charrnn serve: the HTTP answers equal the CLI's, the limits hold, and nothing stops it.

In-process (Starlette's TestClient) for the answers; real HTTP on 127.0.0.1 for what needs
real connections: requests that overlap, a client that leaves, a full queue, and SIGTERM to a
`charrnn serve` process. The model samples with int8 weights, whose rows do not depend on the
batch around them, so a seeded request must give exactly `charrnn sample --int8`'s text alone
and beside others.
"""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from charrnn import config, load_model, rundir, use_config
from tests.conftest import run_cli
from tests.serving import SlowStepper, free_port, live_server, need, sse_events

need("fastapi")
need("uvicorn")
httpx = need("httpx", "test")

with warnings.catch_warnings():  # starlette asks for httpx2; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from charrnn.serve.app import create_app  # noqa: E402 - after the extra is known to be here

ROOT = Path(__file__).resolve().parents[1]
LIMITS = use_config.ServeConfig(max_length=400, max_streams=8, max_queue=4, max_request_bytes=4096)


@pytest.fixture(scope="module")
def generator(tiny_run):
    return load_model(str(tiny_run), "cpu", int8=True)


@pytest.fixture(scope="module")
def client(generator, tiny_run):
    app = create_app(generator, LIMITS, rundir.find_checkpoint(tiny_run))
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http


def slowed(generator, delay: float = 0.01):
    """The same model, a step every `delay` seconds at least."""
    slow = copy.copy(generator)
    slow.stepper = SlowStepper(generator.stepper, delay)
    return slow


def sample_cli(run, prime: str, length: int, seed: int | None, *flags) -> str:
    seeded = () if seed is None else ("--seed", seed)  # greedy takes none: it draws nothing
    result = run_cli("sample", run, "--prime", prime, "--length", length, *seeded, "--int8",
                     *flags)  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------------------------- answers


def test_generate_answers_the_prime_then_length_new_characters(client):
    reply = client.post("/v1/generate", json={"prime": "ROMEO:", "length": 120, "seed": 1})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["text"].startswith("ROMEO:") and len(body["text"]) == len("ROMEO:") + 120
    assert body["finish_reasons"] == ["length"] and body["new_characters"] == [120]
    assert body["seed"] == 1


@pytest.mark.parametrize(
    "options, flags",
    [
        ({}, ()),
        ({"temperature": 1.3, "top_k": 5}, ("--temperature", 1.3, "--top-k", 5)),
        ({"top_p": 0.7, "temperature": 0.5}, ("--top-p", 0.7, "--temperature", 0.5)),
        ({"greedy": True}, ("--greedy",)),
    ],
)
def test_seeded_request_equals_charrnn_sample(client, tiny_run, options, flags):
    seed = None if options.get("greedy") else 42
    body = {"prime": "JULIET:", "length": 150, **options} | ({} if seed is None else {"seed": seed})
    text = client.post("/v1/generate", json=body).json()["text"]
    assert text + "\n" == sample_cli(tiny_run, "JULIET:", 150, seed, *flags)


def test_several_samples_equal_charrnn_samples_batch(client, generator):
    body = {"prime": "A", "length": 60, "seed": 5, "num_samples": 3}
    texts = client.post("/v1/generate", json=body).json()["texts"]
    assert texts == generator.generate("A", 60, seed=5, num_samples=3)


def test_without_a_seed_the_reply_names_the_seed_that_repeats_it(client):
    from charrnn.generation import new_seed

    # Drawn below 2**53: a JavaScript client (the page) holds it exactly, so it repeats.
    assert all(0 <= new_seed() < 2**53 for _ in range(1000))
    assert max(new_seed() for _ in range(1000)) > 2**50  # drawn from the whole range
    first = client.post("/v1/generate", json={"length": 80}).json()
    assert first["seed"] == int(float(first["seed"]))  # a double holds it exactly
    again = client.post("/v1/generate", json={"length": 80, "seed": first["seed"]}).json()
    assert again["text"] == first["text"] and first["text"].startswith("\n")  # default prime


def test_a_stop_string_ends_the_text_after_it(client, generator):
    full = generator.generate("ROMEO:", 300, seed=9)
    new = full[len("ROMEO:") :]
    stop = "e "
    assert stop in new, "the test needs a text that contains the stop string"
    body = {"prime": "ROMEO:", "length": 300, "seed": 9, "stop": [stop]}
    reply = client.post("/v1/generate", json=body).json()
    assert reply["text"] == "ROMEO:" + new[: new.index(stop) + len(stop)]
    assert reply["finish_reasons"] == ["stop"]


def test_stream_sends_start_then_the_new_text_in_events_then_done(client):
    body = {"prime": "ROMEO:", "length": 200, "seed": 3}
    whole = client.post("/v1/generate", json=body).json()
    reply = client.post("/v1/generate", json={**body, "stream": True})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = list(sse_events(iter(reply.text.split("\n"))))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"message"}
    start = json.loads(events[0][1])  # before any text: what a client shows, and can repeat
    assert start == {"prime": "ROMEO:", "seed": 3, "settings": whole["settings"]}
    pieces = [json.loads(data)["text"] for _, data in events[1:-1]]
    done = json.loads(events[-1][1])
    assert "ROMEO:" + "".join(pieces) == done["text"] == whole["text"]


def test_the_start_event_names_a_drawn_seed_and_the_prime_as_read(client):
    body = {"prime": "RO\u201cMEO", "length": 5, "stream": True, "skip_unknown": True}
    events = list(sse_events(iter(client.post("/v1/generate", json=body).text.split("\n"))))
    start, done = json.loads(events[0][1]), json.loads(events[-1][1])
    assert start["prime"] == done["prime"] == "ROMEO"  # the unseen quote left out
    assert start["seed"] == done["seed"] and done["text"].startswith("ROMEO")


def test_the_reply_says_the_prime_and_settings_it_used(client):
    body = {"length": 30, "seed": 2, "top_k": 4, "stop": ["\n\n"], "num_samples": 2}
    reply = client.post("/v1/generate", json=body).json()
    assert reply["prime"] == "\n"  # none given: sample's default
    assert reply["settings"] == {"temperature": 0.8, "top_k": 4, "top_p": 1.0, "greedy": False,
                                 "length": 30, "num_samples": 2, "stop": ["\n\n"]}  # fmt: skip
    assert reply["mean_log_probs"] is None  # not asked for: not computed


@pytest.mark.parametrize("stop", [[], ["e "]])
def test_mean_log_probs_equal_charrnn_samples(client, tiny_run, stop):
    body = {"prime": "JULIET:", "length": 150, "seed": 8, "num_samples": 3, "score": True,
            "stop": stop}  # fmt: skip
    reply = client.post("/v1/generate", json=body).json()
    flags = [x for s in stop for x in ("--stop", s)]
    result = run_cli("sample", tiny_run, "--prime", "JULIET:", "--length", 150, "--seed", 8,
                     "--num-samples", 3, "--int8", "--json", *flags)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [x["prime"] + x["text"] for x in lines] == reply["texts"]
    assert reply["mean_log_probs"] == pytest.approx([x["mean_log_prob"] for x in lines], rel=1e-5)
    assert all(-10 < mean < 0 for mean in reply["mean_log_probs"])


def test_score_gives_explains_surprise(client, tiny_run):
    text = "ROMEO: What light\nthrough yonder window?"
    served = client.post("/v1/score", json={"text": text}).json()
    result = run_cli("explain", tiny_run, "--text", text, "--json")
    assert result.exit_code == 0, result.output
    explained = json.loads(result.stdout)
    assert served["chars"] == explained["chars"] and served["title"] == explained["title"]
    assert served["values"][0] is None and explained["values"][0] is None
    assert served["values"][1:] == pytest.approx(explained["values"][1:], rel=1e-5)
    assert served["mean"] == pytest.approx(sum(served["values"][1:]) / (len(text) - 1))


def test_model_gives_inspect_json_of_the_served_checkpoint_with_names_for_paths(client, tiny_run):
    served = rundir.find_checkpoint(tiny_run)  # what sample and serve read: best.pt
    result = run_cli("inspect", served, "--json")
    assert result.exit_code == 0, result.output
    inspected, described = json.loads(result.stdout), client.get("/v1/model").json()
    assert described["checkpoint"] == served.name and inspected["checkpoint"] == str(served)
    assert described["corpus"] == Path(inspected["corpus"]).name
    same = ("checkpoint", "corpus", "corpus_files", "train_config")
    assert {k: v for k, v in described.items() if k not in same} == {
        k: v for k, v in inspected.items() if k not in same
    }
    assert str(ROOT) not in json.dumps(described) and str(tiny_run) not in json.dumps(described)


def test_cors_lets_the_named_origins_call_from_a_browser_and_no_others(generator):
    use_config.check_cors_origins(("*", "https://example.org", "http://localhost:3000"))
    limits = use_config.ServeConfig(cors_origin=("https://example.org",))
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    with TestClient(create_app(generator, limits)) as http:
        allowed = http.options("/v1/generate", headers={"Origin": "https://example.org", **asked})
        other = http.options("/v1/generate", headers={"Origin": "https://evil.example", **asked})
        reply = http.post(
            "/v1/generate", json={"length": 3}, headers={"Origin": "https://example.org"}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://example.org"
    assert "access-control-allow-origin" not in other.headers
    assert reply.headers["access-control-allow-origin"] == "https://example.org"


@pytest.mark.parametrize("origin", ["https://a.example/", "a.example", "", "https://a.example/x"])
def test_a_cors_origin_no_browser_sends_is_refused_in_one_line(tiny_run, origin):
    result = run_cli("serve", tiny_run, "--cors-origin", origin, "--port", free_port())
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: --cors-origin {origin!r} is no web origin")
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_cors_origins_no_page_elsewhere_may_read_the_replies(client):
    reply = client.post("/v1/generate", json={"length": 3}, headers={"Origin": "https://a.org"})
    assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


def test_health_says_up_and_how_busy(client, generator):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["streams"] == 0 and health["queued"] == 0
    assert health["limits"]["max_streams"] == LIMITS.max_streams and health["int8"] is True
    assert health["sampler"] == generator.sampler


def test_the_page_and_its_files_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="prime"' in page.text and 'id="generate"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        reply = client.get(f"/page/{name}")
        assert reply.status_code == 200 and kind in reply.headers["content-type"]
        assert "http://" not in reply.text and "https://" not in reply.text  # nothing external
    assert "https://" not in page.text and "http://" not in page.text
    assert client.get("/page/secret.py").status_code == 404


# ---------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "body, words",
    [
        ({"temperature": 0}, ["temperature", "greater than or equal to 0.001", "got 0"]),
        ({"top_p": 0}, ["top_p", "greater than 0"]),
        ({"top_p": 1.5}, ["top_p", "less than or equal to 1"]),
        ({"top_k": -1}, ["top_k", "greater than or equal to 0"]),
        (
            {"length": LIMITS.max_length + 1},
            ["length", f"less than or equal to {LIMITS.max_length}"],
        ),
        ({"length": -1}, ["length", "greater than or equal to 0"]),
        ({"seed": -5}, ["seed", "greater than or equal to 0"]),
        ({"seed": 2**63}, ["seed", "less than or equal to"]),
        ({"num_samples": 0}, ["num_samples", "greater than or equal to 1"]),
        ({"temperature": "hot"}, ["temperature", "valid number"]),
        ({"lenght": 5}, ["lenght", "Extra inputs are not permitted"]),
        ({"stop": [""]}, ["stop.0", "at least 1 character"]),
        ({"prime": "ROMEO\u263a"}, ["never saw", "\u263a", 'send "skip_unknown": true']),
        (
            {"greedy": True, "temperature": 0.5},
            ["greedy always writes the most likely character, so temperature would do nothing"],
        ),
        ({"greedy": True, "num_samples": 2}, ["so num_samples 2 would write it 2 times"]),
    ],
)
def test_out_of_range_values_are_422_naming_the_field_and_the_bound(client, body, words):
    reply = client.post("/v1/generate", json=body)
    assert reply.status_code == 422, reply.text
    message = reply.json()["error"]
    for word in words:
        assert word in message, message


def test_malformed_json_is_422(client):
    reply = client.post("/v1/generate", content=b'{"length": 5,',
                        headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == 422 and "malformed JSON" in reply.json()["error"]


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/score"])
@pytest.mark.parametrize(
    ("send", "sent"),
    [
        ({"data": {"prime": "ROMEO:", "text": "ROMEO:"}}, "as application/x-www-form-urlencoded"),
        ({"files": {"prime": ("prime.txt", b"ROMEO:")}}, "as multipart/form-data"),
        ({"content": b'{"text": "ROMEO:"}', "headers": {"content-type": "text/plain"}},
         "as text/plain"),
        ({"content": b'{"text": "ROMEO:"}'}, "with no Content-Type"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_sent_as_json_is_422_saying_to_send_json(client, path, send, sent):
    """FastAPI reads a body as JSON only under a JSON Content-Type: any other reaches the
    checks as bytes, which must not read as a bad field."""
    reply = client.post(path, **send)
    assert reply.status_code == 422, reply.text
    message = reply.json()["error"]
    assert message == (
        f"the body was sent {sent}; send it as JSON (Content-Type: application/json)"
    ), message  # the media type alone: a multipart boundary is not shown


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/score"])
def test_an_empty_body_is_422_asking_for_a_json_object(client, path):
    reply = client.post(path, content=b"", headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == (
        "the body is empty; send a JSON object (Content-Type: application/json)"
    )


def test_a_json_body_under_a_json_suffix_type_is_still_checked_field_by_field(client):
    reply = client.post("/v1/generate", content=b'{"lenght": 5}',
                        headers={"content-type": "application/merge-patch+json"})  # fmt: skip
    assert reply.status_code == 422 and "lenght" in reply.json()["error"], reply.text


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"temperature": NaN}', ["temperature", "finite number", "got nan"]),
        (b'{"temperature": Infinity}', ["temperature", "finite number", "got inf"]),
        (b'{"top_p": -Infinity}', ["top_p", "finite number"]),
        (b'{"length": 1e400}', ["length", "valid integer", "got inf"]),
    ],
)
def test_non_finite_numbers_are_422_not_an_internal_error(client, raw, words):
    """Python's JSON reads NaN and Infinity; they are refused as `charrnn sample` refuses them,
    and the reply that names them is itself valid JSON."""
    reply = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    message = json.loads(reply.text, parse_constant=pytest.fail)["error"]
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("method", "path", "status"), [("get", "/nope", 404), ("get", "/v1/generate", 405)]
)
def test_every_error_reply_has_the_same_shape(client, method, path, status):
    reply = getattr(client, method)(path)
    assert reply.status_code == status and set(reply.json()) == {"error"}, reply.text
    undecodable = client.post("/v1/generate", content=b'{"prime": "\xff\xfe"}',
                              headers={"content-type": "application/json"})  # fmt: skip
    assert undecodable.status_code == 400 and set(undecodable.json()) == {"error"}


def test_a_body_over_the_size_limit_is_413(client):
    reply = client.post("/v1/score", json={"text": "a" * (LIMITS.max_request_bytes + 1)})
    assert reply.status_code == 413 and "--max-request-bytes" in reply.json()["error"]


def test_openapi_documents_every_sampling_field_with_its_declared_bounds(client):
    schema = client.get("/openapi.json").json()
    fields = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    for name in config.fields_of(use_config.SampleConfig):
        _, _, declared = config.declaration(name, use_config.SampleConfig)
        field = fields[name]
        assert declared.help in field["description"], name
        flat = {k: v for option in [field, *field.get("anyOf", [])] for k, v in option.items()}
        if declared.min is not None:
            key = "exclusiveMinimum" if declared.min_open else "minimum"
            assert float(flat[key]) == float(declared.min), name
        if declared.max is not None and name != "length":
            key = "exclusiveMaximum" if declared.max_open else "maximum"
            assert float(flat[key]) == float(declared.max), name  # OpenAPI's numbers: floats
    assert fields["length"]["maximum"] == LIMITS.max_length
    assert fields["num_samples"]["maximum"] == LIMITS.max_samples
    for name in ("prime", "stop", "stream", "skip_unknown"):
        assert fields[name]["description"], name


def test_a_failing_request_does_not_stop_the_server(generator, tiny_run):
    class FailsOnce:
        def __init__(self, stepper):
            self.stepper, self.failed = stepper, False

        def __getattr__(self, name):
            return getattr(self.stepper, name)

        def __call__(self, ids, state):
            if not self.failed:
                self.failed = True
                raise RuntimeError("a step went wrong")
            return self.stepper(ids, state)

    broken = copy.copy(generator)
    broken.stepper = FailsOnce(generator.stepper)
    with TestClient(create_app(broken, LIMITS), raise_server_exceptions=False) as http:
        reply = http.post("/v1/generate", json={"length": 50, "seed": 1})
        assert reply.status_code == 500 and "a step went wrong" in reply.json()["error"]
        again = http.post("/v1/generate", json={"prime": "ROMEO:", "length": 50, "seed": 1})
        assert again.status_code == 200
        assert again.json()["text"] == generator.generate("ROMEO:", 50, seed=1)
        health = http.get("/health").json()
        assert health["failed"] == 1 and health["streams"] == 0
        assert http.get("/v1/model").status_code == 404  # no checkpoint was named


def test_a_model_whose_state_overflows_answers_the_reason_not_an_internal_error():
    """A ReLU RNN whose state reaches inf: the request ends with SamplingError's message (the
    first refill of draws after the overflow, step 256, comes before the length)."""
    import torch

    from charrnn.config import ModelConfig
    from charrnn.corpus import Vocabulary
    from charrnn.model import CharModel
    from charrnn.sample import TextGenerator

    model = CharModel(ModelConfig(cell="rnn", nonlinearity="relu", hidden_size=16), 9).eval()
    with torch.no_grad():
        model.core.weight_hh_l0.copy_(torch.eye(16) * 1e3)
        model.core.bias_hh_l0.fill_(1.0)
    overflowing = TextGenerator(model, Vocabulary.from_text("ABCDEFGHI"), torch.device("cpu"))
    with TestClient(create_app(overflowing, LIMITS), raise_server_exceptions=False) as http:
        reply = http.post("/v1/generate", json={"prime": "A", "length": 400, "seed": 1})
        error = reply.json()["error"]
        assert reply.status_code == 500 and "probabilities are not finite" in error
        assert "internal error" not in error
        assert http.get("/health").json()["failed"] == 1


# ---------------------------------------------------------------------------------- real HTTP


def test_two_seeded_requests_joining_mid_run_each_equal_their_solo_text(generator):
    app = create_app(slowed(generator), LIMITS)
    alone = {"prime": "ROMEO:", "length": 80, "seed": 1}
    joining = {"prime": "JULIET:", "length": 30, "seed": 2}  # the same options: one group
    finished = {}
    with live_server(app) as url:

        def join() -> None:
            with httpx.Client(base_url=url, timeout=30) as other:
                finished["joining"] = other.post("/v1/generate", json=joining).json()
                finished["joining at"] = time.monotonic()

        with httpx.Client(base_url=url, timeout=30) as http:
            with http.stream("POST", "/v1/generate", json={**alone, "stream": True}) as reply:
                events = sse_events(reply.iter_lines())
                assert next(events)[0] == "start"
                first = next(events)  # the first request is generating: the second joins it
                thread = threading.Thread(target=join)
                thread.start()
                rest = list(events)
                done_at = time.monotonic()
            thread.join(30)
    assert first[0] == "message" and rest[-1][0] == "done"
    assert finished["joining at"] < done_at  # it ran beside the first, and left before it
    assert json.loads(rest[-1][1])["text"] == generator.generate(**alone)
    assert finished["joining"]["text"] == generator.generate(**joining)


def test_many_seeded_requests_at_once_each_equal_their_solo_text(generator):
    """Eight at once, in three groups of options (each group draws together)."""
    from charrnn.sample import SamplingOptions
    from charrnn.serve.engine import Engine, Job

    kinds = [SamplingOptions(), SamplingOptions(1.3, top_k=6), SamplingOptions(0.6, top_p=0.8)]
    jobs = [Job("ROMEO:", 60 + 10 * n, kinds[n % 3], seed=n) for n in range(8)]

    async def together() -> list[str]:
        engine = Engine(generator, LIMITS)
        engine.start()
        try:
            streams = [engine.submit(job) for job in jobs]
            ends = [[event async for event in stream][-1] for stream in streams]
        finally:
            engine.close()
        return [end[1]["text"] for end in ends]

    texts = asyncio.run(together())
    for job, text in zip(jobs, texts, strict=True):
        o = job.options
        assert text == generator.generate(job.prime, job.length, temperature=o.temperature,
                                          top_k=o.top_k, top_p=o.top_p, seed=job.seed)  # fmt: skip


def test_a_full_batch_queues_then_answers_503(generator):
    limits = use_config.ServeConfig(max_length=400, max_streams=1, max_queue=1)
    app = create_app(slowed(generator), limits)
    queued = {}
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:

        def wait_in_queue() -> None:
            with httpx.Client(base_url=url, timeout=30) as other:
                queued["reply"] = other.post("/v1/generate", json={"length": 5, "seed": 1})

        with http.stream("POST", "/v1/generate", json={"length": 100, "stream": True}) as running:
            events = sse_events(running.iter_lines())  # kept: dropping it would close the stream
            assert [next(events)[0], next(events)[0]] == ["start", "message"]
            thread = threading.Thread(target=wait_in_queue)
            thread.start()
            wait_for(lambda: http.get("/health").json()["queued"] == 1)
            refused = http.post("/v1/generate", json={"length": 5})
            assert refused.status_code == 503 and "busy" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
            assert list(events)[-1][0] == "done"
        thread.join(30)
    assert queued["reply"].status_code == 200 and queued["reply"].json()["queued_seconds"] > 0


@pytest.mark.parametrize("streamed", [True, False])
def test_a_client_that_disconnects_frees_its_slot_at_once(generator, streamed):
    limits = use_config.ServeConfig(max_length=2000, max_streams=1, max_queue=0)
    app = create_app(slowed(generator), limits)  # 2000 steps: 20 s if nobody stopped it
    long = {"length": 2000, "stream": streamed}
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        if streamed:
            with http.stream("POST", "/v1/generate", json=long) as reply:
                events = sse_events(reply.iter_lines())  # kept: dropping it closes the stream
                assert [next(events)[0], next(events)[0]] == ["start", "message"]
                assert http.get("/health").json()["streams"] == 1
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/generate", json=long, timeout=0.5)
        left = time.monotonic()
        wait_for(lambda: http.get("/health").json()["streams"] == 0, seconds=3)
        assert time.monotonic() - left < 3
        assert http.post("/v1/generate", json={"length": 5}).status_code == 200


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.02)


@pytest.mark.slow
def test_charrnn_serve_answers_on_127_0_0_1_and_ends_cleanly_on_sigterm(tiny_run):
    port, grace = free_port(), 1.0
    command = [sys.executable, "-m", "charrnn", "serve", str(tiny_run), "--port", str(port),
               "--grace", str(grace), "--max-length", "100000", "--int8",
               "--access-log"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), seconds=120)
        with httpx.Client(base_url=url, timeout=30) as http:
            body = {"prime": "ROMEO:", "length": 100, "seed": 4}
            text = http.post("/v1/generate", json=body).json()["text"]
            assert text + "\n" == sample_cli(tiny_run, "ROMEO:", 100, 4)
            # A stream of 100,000 characters (seconds): SIGTERM arrives while it runs.
            long = {"length": 100000, "seed": 1, "stream": True}
            with http.stream("POST", "/v1/generate", json=long) as reply:
                events = sse_events(reply.iter_lines())
                assert [next(events)[0], next(events)[0]] == ["start", "message"]
                server.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                last = list(events)[-1]  # the response ends cleanly: no protocol error
        assert last[0] == "done" or (last[0] == "error" and "shutting down" in last[1]), last
        server.wait(timeout=grace + 30)
        assert time.monotonic() - signalled < grace + 30
    finally:
        if server.poll() is None:
            server.kill()
        stderr = server.communicate()[1]
    assert server.returncode == 143, stderr  # terminated, as every charrnn command
    assert "terminated" in stderr and "Traceback" not in stderr
    assert '"POST /v1/generate HTTP/1.1" 200' in stderr  # --access-log: a line a request
    assert "Uvicorn running" not in stderr  # and none of uvicorn's start-up chatter


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_without_the_extra_says_what_to_install(monkeypatch, tiny_run):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    result = run_cli("serve", tiny_run)
    assert result.exit_code == 1
    assert 'pip install -e ".[serve]"' in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_port_in_use_is_one_line_and_nothing_is_announced(tiny_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", tiny_run, "--port", port)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use; choose another --port"
    ]


def test_a_host_that_names_no_address_is_one_line(tiny_run):
    result = run_cli("serve", tiny_run, "--host", "999.1.1.1", "--port", free_port())
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot listen on host '999.1.1.1': ")
    assert lines[0].endswith("; check --host")


def test_the_address_printed_is_one_a_browser_opens():
    from charrnn.cli.serve import _url_host

    shown = {host: _url_host(host) for host in ("0.0.0.0", "::", "127.0.0.1", "::1", "example")}
    assert shown == {"0.0.0.0": "127.0.0.1", "::": "[::1]", "127.0.0.1": "127.0.0.1",
                     "::1": "[::1]", "example": "example"}  # fmt: skip
