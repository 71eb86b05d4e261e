# The README's commands. Every target is idempotent.
.PHONY: demo test services stop lint benchmark

demo:       ## services + CKAN with the plugin on http://127.0.0.1:5000, prints the sysadmin
	bash scripts/demo.sh

test:       ## lint + the whole test suite on CKAN 2.12 and 2.11
	bash scripts/test.sh

services:   ## only start PostgreSQL, Redis, Ceph RGW (S3) and the Solr stand-in
	bash scripts/services.sh

stop:       ## stop the demo web server and the Ceph daemons
	bash scripts/demo.sh stop

lint:
	.venv/bin/ruff check .

benchmark:  ## the benchmarks: verified S3 upload, resource lifecycle
	bash scripts/benchmark.sh
