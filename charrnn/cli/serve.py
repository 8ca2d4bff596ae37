"""`charrnn serve`: a model behind HTTP (and a page to try it), until Ctrl-C or SIGTERM."""

from typing import Any

from charrnn import config, use_config
from charrnn.cli import settings
from charrnn.cli.common import INT8, RUN_TO_USE, err
from charrnn.errors import ConfigError

INSTALL = 'pip install -e ".[serve]"'
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@settings.declared_options(list(config.fields_of(use_config.ServeConfig)), use_config.ServeConfig)
def serve(
    checkpoint: RUN_TO_USE = None,
    device: settings.option("device") = "auto",
    int8: INT8 = None,
    threads: settings.option("threads", shown_default="by batch and model size") = None,
    **limits: Any,
) -> None:
    """Serve a model over HTTP: POST /v1/generate, /v1/score; GET /v1/model, /health, and a
    page at /. Concurrent requests share the model's steps (one batch)."""
    try:
        import uvicorn  # noqa: F401 - serve_forever's, checked here so both are named at once

        from charrnn.serve.app import create_app, listen, serve_forever
    except ImportError as missing:
        raise ConfigError(
            f"charrnn serve needs the serve extra ({missing.name} is missing): {INSTALL}"
        ) from None
    from charrnn import rundir
    from charrnn.machine import available_cores
    from charrnn.sample import load_model

    settings.check(device=device, threads=threads)
    chosen = config.build(use_config.ServeConfig, settings.typed(limits))
    path = rundir.find_checkpoint(checkpoint or rundir.latest(), rundir.FOR_USING)
    threads = available_cores() if threads == 0 else threads  # the declared "0 = all cores"
    generator = load_model(str(path), device, int8=int8, threads=threads)
    app = create_app(generator, chosen, path)
    listener = listen(chosen.host, chosen.port)
    if chosen.host not in LOOPBACK:
        err.print(
            f"[yellow]listening on {chosen.host}: anyone who can reach this machine can use "
            "the model[/yellow]"
        )
    where = f"http://{_url_host(chosen.host)}:{chosen.port}/"
    err.print(f"serving {path} on {where} (Ctrl-C stops)", markup=False)
    serve_forever(app, chosen, listener)


def _url_host(host: str) -> str:
    # Every address (0.0.0.0, ::) is no address a browser opens: this machine's is one.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host
