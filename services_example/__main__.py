"""`python -m services_example`: serve the example service on $PORT (default 8001)."""

from __future__ import annotations

import logging
import os

from services_example.app import create_app

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO"),
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
)
app = create_app()
# A small threaded server is enough for an example; production would run it under gunicorn.
app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")), threaded=True)
