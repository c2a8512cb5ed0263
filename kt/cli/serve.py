"""`kt serve`: load a model and serve the OpenAI API on it."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from kt.config import ServeConfig


def serve(
    model: Optional[str] = typer.Argument(None, help="GGUF file, a name in the model store, or nothing for the default model"),
    host: str = typer.Option("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network"),
    port: int = typer.Option(10002, help="TCP port"),
    max_new_tokens: int = typer.Option(1024, help="default and upper bound of generated tokens per request"),
    chunk_size: int = typer.Option(512, help="most prompt tokens in one forward"),
    threads: Optional[int] = typer.Option(None, "--cpu-infer", "--threads", help="CPU threads for the kernels (default: the physical cores)"),
    served_name: Optional[str] = typer.Option(None, help="model id shown to clients"),
    optimize_config: str = typer.Option("auto", help="optimize-rule YAML, or auto (kt's rules for the model's architecture)"),
) -> None:
    """Serve MODEL over the OpenAI API (chat completions, streaming)."""
    try:
        config = ServeConfig(model=model, host=host, port=port, max_new_tokens=max_new_tokens,
                             chunk_size=chunk_size, threads=threads, served_name=served_name,
                             optimize_config=optimize_config)
    except ValueError as e:
        _fail(str(e))
    import uvicorn

    from kt.gguf.errors import GGUFError
    from kt.optimize import OptimizeRuleError
    from kt.runtime.engine import Engine, EngineConfig
    from kt.runtime.worker import EngineWorker
    from kt.server.app import ServedModel, create_app
    from kt.store import ModelNotFound, resolve

    try:
        name, path = resolve(config.model)
        typer.echo(f"kt: loading {name} from {path}", err=True)
        engine = Engine.from_path(path, EngineConfig(chunk_size=config.chunk_size, threads=config.threads,
                                                     optimize_config=config.optimize_config))
    except (GGUFError, ModelNotFound, NotImplementedError, OptimizeRuleError) as e:
        _fail(str(e))
    served = ServedModel(name=config.served_name or name, tokenizer=engine.tokenizer, engine=EngineWorker(engine),
                         context_length=engine.context_length, max_new_tokens=config.max_new_tokens)
    typer.echo(f"kt: serving {served.name} on http://{config.host}:{config.port}/v1", err=True)
    uvicorn.run(create_app(served), host=config.host, port=config.port, log_level="warning")


def _fail(message: str) -> None:
    print(f"kt serve: {message}", file=sys.stderr)
    raise typer.Exit(1)
