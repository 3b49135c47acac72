"""`foundry serve`: an OpenAI-compatible HTTP server, thin over `model_foundry.generation`.

    loader.py   which folder a NAME|PATH means; the model loaded on a background thread, with a load state
    worker.py   the bounded queue and the ONE thread that runs the engine (it is not thread-safe)
    schemas.py  OpenAI's request bodies (pydantic), response and chunk shapes, errors in OpenAI's format
    app.py      the Starlette app (routes, auth, SSE streaming) and `run_server` (bind, uvicorn, load)

Nothing here imports torch at module level: the server listens first and loads the model afterwards.
"""
