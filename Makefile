# The README's commands. Every target is idempotent.
.PHONY: demo demo-once test services stop lint benchmark

demo:       ## services, worker, CKAN on http://127.0.0.1:5000, then the walkthrough; the site stays up
	bash scripts/demo.sh

demo-once:  ## the same, then stops the web server and the worker
	bash scripts/demo.sh --once

test:       ## lint + the whole test suite on CKAN 2.12 and 2.11
	bash scripts/test.sh

services:   ## only start PostgreSQL, Redis, Ceph RGW (S3) and Solr
	bash scripts/services.sh

stop:       ## stop the demo's web server and worker, the Ceph daemons and Solr
	bash scripts/demo.sh stop

lint:
	.venv/bin/ruff check .

benchmark:  ## the benchmarks: verified S3 upload, resource lifecycle
	bash scripts/benchmark.sh
