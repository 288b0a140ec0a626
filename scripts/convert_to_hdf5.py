"""The former home of ``advflat-convert`` (advflat/data/convert.py), for existing callers."""

import sys

from advflat.data.convert import main

if __name__ == "__main__":
    sys.exit(main())
