# Conveniences over scripts/ (which is what README and CI use).
.PHONY: setup serve test check proto bench

setup:
	scripts/setup

serve:
	scripts/serve

test check:
	scripts/test

proto:
	PYTHON=.venv/bin/python tools/gen_proto.sh

bench:
	.venv/bin/conveyor bench
