# Domicile — see README.md. `make run` and `make test` are all a new machine needs.
GO      ?= go
BIN     := bin/domicile
PKGS    := ./...
STATICCHECK_VERSION := v0.8.2
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build run test test-short bench lint vet fmt clean geoip

all: build

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/domicile

# The local topology: 3 routers + 3 regions on 127.0.0.1, SQLite under ./data.
run: build
	./$(BIN) dev --data ./data

# All tests, with the race detector, including those that need the local
# PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379). With CI=true a
# missing service fails the tests; otherwise they skip loudly.
test:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w .

lint: vet
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed on:"; gofmt -l .; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

# The free geo-IP country database "geo-whois-asn-country" of ip-location-db
# (CC BY 4.0, attribution in NOTICE), from its npm package, installed as
# data/geoip/geo-whois-asn-country.mmdb (use it with `residency explain
# --geoip` or a router's `geoip:`). The copy is renamed into place so that a
# router that has the old file memory-mapped keeps reading the old file.
# Caution: the package's README says npm updates are deprecated and that the
# data published to npm contains errors; upstream points to the GitHub
# releases of sapics/ip-location-db for corrected data.
geoip:
	@command -v npm >/dev/null || { echo "make geoip needs npm (Node.js)"; exit 1; }
	npm install --prefix data/geoip/npm --no-audit --no-fund @ip-location-db/geo-whois-asn-country-mmdb
	cp data/geoip/npm/node_modules/@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb data/geoip/.geo-whois-asn-country.mmdb.tmp
	mv -f data/geoip/.geo-whois-asn-country.mmdb.tmp data/geoip/geo-whois-asn-country.mmdb
	@ls -l data/geoip/geo-whois-asn-country.mmdb

clean:
	rm -rf bin data
