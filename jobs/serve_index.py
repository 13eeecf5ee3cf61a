"""Ray job entry point: `ray job submit --working-dir . -- python jobs/serve_index.py --db PATH`.

A long-running indexing job (same options as `streamvl serve-index`). Add and remove streams
while it runs with `streamvl streams add URI --db PATH` / `streamvl streams remove ID --db PATH`;
`ray job stop` ends it, and a new submission resumes every stream from its checkpoint.
"""

import sys

from streamvl.cli import main

if __name__ == "__main__":
    main(["serve-index", *sys.argv[1:]], prog_name="jobs/serve_index.py")
