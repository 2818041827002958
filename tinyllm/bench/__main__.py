"""``python -m tinyllm.bench``: run the benchmark suites (see ``tinyllm.bench``)."""

import sys

from tinyllm.bench import main

sys.exit(main())
