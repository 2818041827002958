"""``python -m tinyllm.course ...``: see tinyllm.course.cli."""

import sys

from tinyllm.course.cli import main

sys.exit(main(sys.argv[1:]))
