"""`python -m services_example`: serve the example service on $PORT (default 8001)."""

from __future__ import annotations

import logging
import os

from services_example.app import create_app

LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
logging.basicConfig(level=LEVEL, format="%(asctime)s %(levelname)s %(name)s %(message)s")
# Werkzeug sets its own logger to INFO (a line per request); follow LOG_LEVEL instead.
logging.getLogger("werkzeug").setLevel(LEVEL)
app = create_app()
# A small threaded server is enough for an example; production would run it under gunicorn.
app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")), threaded=True)
