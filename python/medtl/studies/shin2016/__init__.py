"""shin2016: its protocol, data, adapters, reports and `medtl data` commands."""

from medtl.studies.shin2016 import cli, protocol  # noqa: F401  (they register themselves)
from medtl.studies.shin2016.ild import adapter as ild_adapter  # noqa: F401
from medtl.studies.shin2016.ln import adapter as ln_adapter  # noqa: F401
