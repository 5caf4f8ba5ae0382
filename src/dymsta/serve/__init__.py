"""``dymsta serve``: an HTTP API and a web page for a trained model (``pip install "dymsta[serve]"``).

    from dymsta.serve import ServeConfig, create_app, serve
    serve("runs/ucf101_s1", port=8000, config=ServeConfig(token="s3cret"))   # blocks; or:
    app = create_app(Predictor.from_checkpoint("runs/ucf101_s1"))           # an ASGI app, for any server

The inference is :class:`dymsta.engine.predict.Predictor`'s, so a prediction is the object ``dymsta predict --json``
prints. See docs/serve.md for the API, its errors and its limits.
"""

from __future__ import annotations

from dymsta.serve.app import BadVideo, ServeConfig, create_app, describe_model, serve

__all__ = ["BadVideo", "ServeConfig", "create_app", "describe_model", "serve"]
