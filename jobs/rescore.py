"""Ray job entry point: `ray job submit --working-dir . -- python jobs/rescore.py ...`.

Same arguments as `streamvl rescore` (see `streamvl rescore --help`); the work runs in the job's driver
process, in plain Python (no Ray actors are needed for it).
"""

import sys

from streamvl.cli import main

if __name__ == "__main__":
    main(["rescore", *sys.argv[1:]], prog_name="jobs/rescore.py")
