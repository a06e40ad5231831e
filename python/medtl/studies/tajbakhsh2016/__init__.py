"""tajbakhsh2016: its protocol, data, adapters, report and `medtl data` commands."""

from medtl.studies.tajbakhsh2016 import (  # noqa: F401  (they register themselves)
    adapters,
    cli,
    protocol,
)
