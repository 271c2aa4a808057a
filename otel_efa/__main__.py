import sys

from otel_efa.cli import main

if __name__ == "__main__":
    sys.exit(main())
