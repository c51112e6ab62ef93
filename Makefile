# What packagers expect: `make` builds, `make install PREFIX=… DESTDIR=…`
# installs (scripts/install.sh does the work and says what goes where).
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
DESTDIR ?=
CARGO ?= cargo

all:
	$(CARGO) build --release --locked -p cfs

install: all
	scripts/install.sh --prefix "$(PREFIX)" --sbindir "$(SBINDIR)" --destdir "$(DESTDIR)" \
		--binary "$${CARGO_TARGET_DIR:-target}/release/cfs"

.PHONY: all install
