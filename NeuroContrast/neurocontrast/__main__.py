"""``python -m neurocontrast`` runs the command line."""
import sys

from neurocontrast.cli import main

sys.exit(main())
