from toolchain.cli import entry

entry()
