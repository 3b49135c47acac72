"""The six pipeline stages as plain functions: dvc.yaml calls them through the CLI, tests call them directly.

inputs → import → convert → tokenize → train → evaluate. Every path comes in as an argument, written once in
dvc.yaml. `inputs` validates params and fingerprints the files and folders they name (see stages/inputs.py).
"""
