# Entry points. `make demo` runs the whole FTI loop; `make test` runs every check and test.
.PHONY: demo test check bootstrap stack-up stack-down proto bench drills drills-ci

demo:
	scripts/demo

test:
	scripts/test

# Checks only, against a stack that is already up (`make stack-up`).
check:
	scripts/check

bootstrap:
	scripts/bootstrap

stack-up: bootstrap
	.venv/bin/fti stack up

stack-down:
	.venv/bin/fti stack down

# Regenerate the Python code of the fti.v1 contracts, then check they changed additively.
proto:
	.venv/bin/python scripts/gen_proto.py
	.venv/bin/python scripts/check_contracts.py

# Drills as code: broker, Redis, worker and disk faults, and fuzz, on a private stack (~5 min).
drills: bootstrap
	.venv/bin/python -m bench.drills

# The CI share of the drills (fuzz + a Redis blip): the shared broker of `fti stack up`, a private Redis.
drills-ci:
	.venv/bin/python -m bench.drills --ci
