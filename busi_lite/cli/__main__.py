"""`python -m busi_lite.cli ...` runs the busi-lite command."""

from . import main

main()
