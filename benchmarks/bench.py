"""The side-by-side throughput benchmark (same as `mixinputs bench`); see src/mixinputs/bench/.

python benchmarks/bench.py --quick
python benchmarks/bench.py --json benchmarks/results-cpu.json
"""

import sys

from mixinputs.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
