"""`python -m fti_cli` is the same as `fti`."""

from fti_cli.main import main

main()
