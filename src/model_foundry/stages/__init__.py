"""The five pipeline stages as plain functions: dvc.yaml calls them through the CLI, tests call them directly.

import → convert → tokenize → train → evaluate. Every path comes in as an argument, written once in dvc.yaml.
"""
