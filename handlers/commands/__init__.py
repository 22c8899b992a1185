"""Subcommands of ``measures``: one module each, discovered by ``handlers.cli``."""
