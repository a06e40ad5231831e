"""ravishankar2016: its protocol, data, adapter, report and `medtl data` commands."""

from medtl.studies.ravishankar2016 import (  # noqa: F401  (they register themselves)
    adapter,
    cli,
    protocol,
)
