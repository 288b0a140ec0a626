"""``python -m benchmarks [--smoke] [--out DIR]`` (what ``make bench`` runs)."""

from benchmarks.run import main

main()
