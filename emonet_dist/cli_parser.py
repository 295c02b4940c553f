"""The argument parser of every ``emonet`` command: errors are one line, with the way out."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, with the way out
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
