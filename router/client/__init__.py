"""`router.client`, the name DESIGN.md gives the client library: the same modules as
`breaker_client` (the `breaker-client` distribution in `client/`, which services install).

Here only for code written against that name with the router installed; a service that
installs the client alone imports `breaker_client`. The module objects are the same, not
copies, so exceptions, classes and state are shared whichever name imports them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import breaker_client

for _info in pkgutil.iter_modules(breaker_client.__path__):
    sys.modules[f"{__name__}.{_info.name}"] = importlib.import_module(
        f"breaker_client.{_info.name}"
    )
sys.modules[__name__] = breaker_client
