import sys

from .cli import main

if __name__ == "__main__":  # (not when a child process started by spawn imports this module: Dask's workers)
    sys.exit(main())
