# predcache: build, test, demo, install.  Every library comes through pkg-config.
PREFIX  ?= /usr/local
CC      ?= cc
PKGS    := libevent hiredis libcurl json-c libcrypto
PY      := /usr/bin/python3

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wwrite-strings -Wformat=2
ifneq ($(CI),)
WARN    += -Werror
endif
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

BUILD   ?= build
SRCS    := $(wildcard src/*.c)
OBJS    := $(SRCS:src/%.c=$(BUILD)/%.o)
UNITSRC := $(wildcard tests/unit/test_*.c)
UNITBIN := $(UNITSRC:tests/unit/%.c=$(BUILD)/%)
BIN     ?= predcache

.PHONY: all test unit integration asan valgrind demo bench install clean format format-check bootstrap

all: $(BIN)

$(BIN): $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: src/%.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

# A unit test links only its own module and the shared helpers: pure modules stand alone.
$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/%.o $(BUILD)/buf.o $(BUILD)/log.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs cmocka)

-include $(OBJS:.o=.d)

bootstrap:
	@scripts/bootstrap

# The README's test command: installs what it needs, then unit and integration tests.
test: bootstrap
	@$(MAKE) --no-print-directory unit integration

unit: $(UNITBIN)
	@set -e; for t in $(UNITBIN); do echo "== $$t"; $$t; done

integration: $(BIN)
	PREDCACHE_BIN=$(abspath $(BIN)) $(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

# ASan + UBSan build in its own directory; runs the unit and integration tests against it.
asan: bootstrap
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/predcache \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	    LDFLAGS="-fsanitize=address,undefined" unit integration

# The integration tests with predcache under valgrind memcheck (slower; errors fail tests).
valgrind: bootstrap $(BIN)
	@command -v valgrind >/dev/null || { echo "valgrind: apt-get install valgrind"; exit 1; }
	PREDCACHE_BIN=$(abspath scripts/valgrind-predcache) $(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

# The main job: a real OCR model behind predcache, cold then warm (see scripts/demo).
demo: bootstrap $(BIN)
	PREDCACHE_BIN=$(abspath $(BIN)) scripts/demo

bench: bootstrap $(BIN)
	scripts/bench

install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/predcache
	install -D -m 0644 conf/predcache.conf $(DESTDIR)/etc/predcache/predcache.conf

format:
	clang-format -i src/*.c include/predcache/*.h tests/unit/*.c

format-check:
	clang-format --dry-run -Werror src/*.c include/predcache/*.h tests/unit/*.c

clean:
	rm -rf build build-asan $(BIN)
