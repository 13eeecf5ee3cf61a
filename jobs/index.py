"""Ray job entry point: `ray job submit --working-dir . -- python jobs/index.py SOURCE... --db PATH`.

Same arguments as `streamvl index`; under job submission Ray sets RAY_ADDRESS, so the run uses
the cluster's actors instead of starting a local Ray.
"""

import sys

from streamvl.cli import main

if __name__ == "__main__":
    main(["index", *sys.argv[1:]], prog_name="jobs/index.py")
