"""Placeholder until its issue lands; see README.md, section "Status"."""
import sys


def main(argv=None):
    print(f"{__name__}: not implemented yet (see README.md, section 'Status')", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
