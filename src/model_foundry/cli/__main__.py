"""`python -m model_foundry.cli` = `foundry` (tests run the CLI with the interpreter under test)."""

from model_foundry.cli import main

main()
