"""`python -m busi_lite.cli ...` runs the busi-lite command."""

from busi_lite.cli import main

main()
