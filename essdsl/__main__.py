"""``python -m essdsl …`` runs the ``essdsl`` command line."""

from essdsl.cli import main

if __name__ == "__main__":
    main()
