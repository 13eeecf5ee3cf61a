"""Ray job entry point: `ray job submit --working-dir . -- python jobs/evaluate.py ...`.

Same arguments as `streamvl evaluate` (see `streamvl evaluate --help`); the work runs in the job's driver
process, in plain Python (no Ray actors are needed for it).
"""

import sys

from streamvl.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]], prog_name="jobs/evaluate.py")
