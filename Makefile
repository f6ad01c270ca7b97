# predcache: build, test, demo, install.  Every library comes through pkg-config.
PREFIX  ?= /usr/local
CC      ?= cc
PKGS    := libevent libevent_openssl hiredis libcurl json-c libssl libcrypto zlib libprotobuf-c \
           libnghttp2
PY      := /usr/bin/python3

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wwrite-strings -Wformat=2
ifneq ($(CI),)
WARN    += -Werror
endif
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -pthread $(WARN) -Iinclude $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread

BUILD   ?= build
SRCS    := $(wildcard src/*.c)
OBJS    := $(SRCS:src/%.c=$(BUILD)/%.o)
UNITSRC := $(wildcard tests/unit/test_*.c)
UNITBIN := $(UNITSRC:tests/unit/%.c=$(BUILD)/%)
BIN     ?= predcache

# gRPC messages: protoc-c turns proto/ (the subsets of TF Serving's and KServe v2's protos,
# see each file's header) and the well-known types they import (google/protobuf/*.proto of
# libprotobuf-dev, under WKT_DIR) into $(BUILD)/proto/<path>.pb-c.{c,h}; code includes them
# by their import path with PROTO_INC. A .proto is generated again when any of proto/
# changes (a file's code names the types it imports). protobuf-c 1.4.1's output builds
# clean with the project's warnings and -Werror, so the generated files get the same flags.
PROTOC_C   ?= protoc-c
WKT_DIR    ?= /usr/include
PROTO_SRC  := $(shell find proto -name '*.proto' 2>/dev/null | sort)
PROTOS     := $(PROTO_SRC:proto/%=%)
WKT_PROTOS := google/protobuf/any.proto google/protobuf/wrappers.proto
PROTO_GEN  := $(addprefix $(BUILD)/proto/,$(PROTOS:.proto=.pb-c) $(WKT_PROTOS:.proto=.pb-c))
PROTO_H    := $(PROTO_GEN:=.h)
PROTO_OBJS := $(PROTO_GEN:=.o)
PROTO_INC  := -I$(BUILD)/proto

.PHONY: all test unit integration asan valgrind demo bench install uninstall clean format format-check bootstrap

all: $(BIN)

$(BIN): $(OBJS) $(PROTO_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Modules may include the generated messages' headers (grpckey): generated first.
$(BUILD)/%.o: src/%.c | $(PROTO_H)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) $(PROTO_INC) -MMD -MP -c -o $@ $<

$(BUILD)/proto/google/protobuf/%.pb-c.c $(BUILD)/proto/google/protobuf/%.pb-c.h: \
        $(WKT_DIR)/google/protobuf/%.proto
	@mkdir -p $(BUILD)/proto
	$(PROTOC_C) -I$(WKT_DIR) --c_out=$(BUILD)/proto google/protobuf/$*.proto

$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto $(PROTO_SRC)
	@mkdir -p $(BUILD)/proto
	$(PROTOC_C) -Iproto -I$(WKT_DIR) --c_out=$(BUILD)/proto $*.proto

# Every generated header first: a .pb-c.c includes those of the files its .proto imports.
$(BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c | $(PROTO_H)
	$(CC) $(CFLAGS) $(PROTO_INC) -MMD -MP -c -o $@ $<

# The commit the binary is built from (predcache_build_info): $(BUILD)/commit changes when
# the commit does, and only then is this one file compiled again.
PC_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
$(BUILD)/commit: FORCE
	@mkdir -p $(BUILD)
	@echo '$(PC_COMMIT)' | cmp -s - $@ || echo '$(PC_COMMIT)' > $@
$(BUILD)/buildinfo.o: src/buildinfo.c $(BUILD)/commit
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -DPC_COMMIT='"$(PC_COMMIT)"' -MMD -MP -c -o $@ $<
FORCE:

# A unit test links only its own module and the shared helpers: pure modules stand alone.
$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/%.o $(BUILD)/buf.o $(BUILD)/log.o
	$(CC) $(CFLAGS) $(PROTO_INC) $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS) \
	    $(shell pkg-config --libs cmocka)

# grpckey reads the generated messages; both tests write wire bytes by hand (wire.h).
$(BUILD)/test_grpckey: $(PROTO_OBJS) tests/unit/wire.h
$(BUILD)/test_proto: tests/unit/wire.h

# test_proto packs and unpacks the generated messages (no module of its own yet).
$(BUILD)/test_proto: tests/unit/test_proto.c $(PROTO_OBJS) | $(PROTO_H)
	$(CC) $(CFLAGS) $(PROTO_INC) $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS) \
	    $(shell pkg-config --libs cmocka)

# list is header only.
$(BUILD)/test_list: tests/unit/test_list.c include/predcache/list.h
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(shell pkg-config --libs cmocka)

# The model-based tests run the drivers the fuzz targets run (tests/model/).
$(BUILD)/test_l1: tests/model/model.h tests/model/model_unit.h tests/model/l1_model.h
$(BUILD)/test_keymemo: tests/model/model.h tests/model/model_unit.h tests/model/keymemo_model.h
$(BUILD)/test_flight: tests/model/model.h tests/model/model_unit.h tests/model/flight_model.h
$(BUILD)/test_lookups: tests/model/model.h tests/model/model_unit.h tests/model/lookups_model.h
$(BUILD)/test_jobtab: tests/model/model.h tests/model/model_unit.h tests/model/jobtab_model.h
$(BUILD)/test_cmdq: tests/model/model.h tests/model/model_unit.h tests/model/cmdq_model.h

# The configuration checks its route table with the routes module, which names each route's
# API family with the adapter module (it reads request bodies with jsonedit, over canon).
ADAPTEROBJ := $(BUILD)/adapter.o $(BUILD)/jsonedit.o $(BUILD)/canon.o
$(BUILD)/test_config: $(BUILD)/routes.o $(ADAPTEROBJ)
$(BUILD)/test_routes: $(BUILD)/config.o $(ADAPTEROBJ)
$(BUILD)/test_adapter: $(BUILD)/jsonedit.o $(BUILD)/canon.o $(BUILD)/reason.o
# The one-pass batch keys are checked against the batch scanner.
$(BUILD)/test_cachekey: $(BUILD)/batch.o
# The metrics render the uncached counters with the reasons' tokens.
$(BUILD)/test_metrics: $(BUILD)/reason.o $(BUILD)/grpcwire.o

# The store against a redis-server it starts: everything the store reaches (cluster, TLS,
# metrics, config) but main.
$(BUILD)/test_store: $(filter-out $(BUILD)/main.o $(BUILD)/store.o $(BUILD)/buf.o \
                     $(BUILD)/log.o,$(OBJS)) $(PROTO_OBJS)

# The model server client against a server the test runs: everything upstream reaches (the
# budgets, metrics, the http helpers) but main.
$(BUILD)/test_upstream: $(filter-out $(BUILD)/main.o $(BUILD)/upstream.o $(BUILD)/buf.o \
                        $(BUILD)/log.o,$(OBJS)) $(PROTO_OBJS)

# The HTTP/2 server on a socketpair: its connections' shared pieces (h2io), their reads
# (bevread), the input budget, and listen (which reads host:port with config, and config
# its route table).
$(BUILD)/test_h2srv: $(BUILD)/h2io.o $(BUILD)/bevread.o $(BUILD)/budget.o $(BUILD)/listen.o \
                     $(BUILD)/config.o $(BUILD)/routes.o $(ADAPTEROBJ)

# cachekey reads JSON through canon. test_canon also links the json-c implementation the
# v1 key was first built on (tests/ref/), the reference canon is held to.
REFOBJ  := $(BUILD)/ref/cachekey_ref.o
$(BUILD)/test_cachekey: $(BUILD)/canon.o
$(BUILD)/test_canon: $(BUILD)/cachekey.o $(REFOBJ)
# jsonedit finds members with canon's scan.
$(BUILD)/test_jsonedit: $(BUILD)/canon.o
# The request reader is held against the plain reading the fuzz target uses (tests/ref/).
H1REF   := $(BUILD)/ref/h1parse_ref.o
$(BUILD)/test_h1parse: $(H1REF)
# The response reader takes the hop-by-hop names and list elements from h1parse.
$(BUILD)/test_h1resp: $(BUILD)/h1parse.o

$(BUILD)/ref/%.o: tests/ref/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(OBJS:.o=.d) $(REFOBJ:.o=.d) $(H1REF:.o=.d) $(PROTO_OBJS:.o=.d)
.PRECIOUS: $(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h

bootstrap:
	@scripts/bootstrap

# The README's test command: installs what it needs, then unit and integration tests.
test: bootstrap
	@$(MAKE) --no-print-directory unit integration fuzz-smoke

unit: $(UNITBIN)
	@set -e; for t in $(UNITBIN); do echo "== $$t"; $$t; done
	@$(PY) tests/check_modules.py

integration: $(BIN)
	PREDCACHE_BIN=$(abspath $(BIN)) $(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

# ASan + UBSan build in its own directory; runs the unit and integration tests against it.
asan: bootstrap
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/predcache \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	    LDFLAGS="-fsanitize=address,undefined" unit integration

# libFuzzer targets (tests/fuzz/fuzz_<target>.c): clang, ASan + UBSan, everything in
# build-fuzz/. Each target runs FUZZ_SECONDS on a copy of its committed seeds
# (tests/fuzz/corpus/<target>/ never changes; new inputs stay in build-fuzz/corpus-<target>/).
# A crash, a leak, undefined behaviour or a broken invariant fails the target and leaves the
# input in build-fuzz/crash-<target>-*; replay one with `build-fuzz/fuzz_<target> FILE`.
# fuzz-smoke is the CI-sized run (10 s a target).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_ARGS    ?=
FUZZ_TARGETS := cachekey canon config envelope batch l1 keymemo flight lookups jobtab cmdq \
                jsonedit keypairs h1parse h1resp decode grpckey h2srv
FUZZ_BUILD   := build-fuzz
FUZZ_PKGS    := json-c libcrypto libprotobuf-c
FUZZ_SAN     := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude $(PROTO_INC) $(FUZZ_SAN) \
                $(shell pkg-config --cflags $(FUZZ_PKGS) 2>/dev/null)
FUZZ_LIBS    := $(shell pkg-config --libs $(FUZZ_PKGS) 2>/dev/null) -lm
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-toolchain fuzz-clean

$(FUZZ_BUILD)/obj/%.o: src/%.c | $(PROTO_H)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

# The generated messages (grpckey reads them), built as the target's own code is.
FUZZ_PROTO_OBJS := $(PROTO_GEN:$(BUILD)/proto/%=$(FUZZ_BUILD)/obj/proto/%.o)
$(FUZZ_BUILD)/obj/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c | $(PROTO_H)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

# A target links its own module and the shared helpers, as a unit test does.
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_BUILD)/obj/%.o \
                      $(FUZZ_BUILD)/obj/buf.o $(FUZZ_BUILD)/obj/log.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c %.o,$^) $(FUZZ_LIBS)

# fuzz_decode inflates with zlib, and compresses with it for its round trips.
$(FUZZ_BUILD)/fuzz_decode: FUZZ_LIBS += -lz

# fuzz_cachekey checks the key against the json-c reference in tests/ref/ and batch.c's
# strict JSON scanner; fuzz_canon checks cachekey (canon) against the reference, key for key.
$(FUZZ_BUILD)/fuzz_cachekey: $(FUZZ_BUILD)/obj/batch.o $(FUZZ_BUILD)/obj/canon.o \
                             $(FUZZ_BUILD)/obj/ref/cachekey_ref.o
# fuzz_keypairs (no module of its own): keys that are equal, readings that must be too;
# KEYPAIRS_CFLAGS=-DKEYPAIRS_LAST_WINS=1 takes json-c's reading of a name given twice as
# every model server's (see the file).
$(FUZZ_BUILD)/fuzz_keypairs: tests/fuzz/fuzz_keypairs.c tests/fuzz/fuzz.h \
                             $(FUZZ_BUILD)/obj/cachekey.o $(FUZZ_BUILD)/obj/canon.o \
                             $(FUZZ_BUILD)/obj/ref/cachekey_ref.o $(FUZZ_BUILD)/obj/buf.o \
                             $(FUZZ_BUILD)/obj/log.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(KEYPAIRS_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c %.o,$^) \
	    $(FUZZ_LIBS)
$(FUZZ_BUILD)/fuzz_canon: $(FUZZ_BUILD)/obj/cachekey.o $(FUZZ_BUILD)/obj/ref/cachekey_ref.o
$(FUZZ_BUILD)/fuzz_config: $(FUZZ_BUILD)/obj/routes.o $(FUZZ_BUILD)/obj/adapter.o \
                           $(FUZZ_BUILD)/obj/jsonedit.o $(FUZZ_BUILD)/obj/canon.o
# fuzz_h1parse holds the HTTP request reader against the plain reading in tests/ref/.
$(FUZZ_BUILD)/fuzz_h1parse: $(FUZZ_BUILD)/obj/ref/h1parse_ref.o
# fuzz_h1resp: the response reader takes the hop-by-hop names from h1parse.
$(FUZZ_BUILD)/fuzz_h1resp: $(FUZZ_BUILD)/obj/h1parse.o
$(FUZZ_BUILD)/fuzz_jsonedit: $(FUZZ_BUILD)/obj/canon.o
# fuzz_grpckey: the message prefix and the gRPC key material on the generated messages.
$(FUZZ_BUILD)/fuzz_grpckey: $(FUZZ_BUILD)/obj/grpcwire.o $(FUZZ_PROTO_OBJS)
# fuzz_h2srv: one connection of the HTTP/2 server on a socketpair and a real event loop;
# its handler reads the request as the gRPC intake does (grpcwire), its reads are bevread's.
# listen reads host:port with config (and config its route table: fuzz_config's objects).
$(FUZZ_BUILD)/fuzz_h2srv: $(FUZZ_BUILD)/obj/h2io.o $(FUZZ_BUILD)/obj/bevread.o $(FUZZ_BUILD)/obj/budget.o \
                          $(FUZZ_BUILD)/obj/listen.o $(FUZZ_BUILD)/obj/grpcwire.o \
                          $(FUZZ_BUILD)/obj/config.o $(FUZZ_BUILD)/obj/routes.o \
                          $(FUZZ_BUILD)/obj/adapter.o $(FUZZ_BUILD)/obj/jsonedit.o \
                          $(FUZZ_BUILD)/obj/canon.o
$(FUZZ_BUILD)/fuzz_h2srv: FUZZ_LIBS += $(shell pkg-config --libs libnghttp2 libevent 2>/dev/null)
# fuzz_l1, fuzz_keymemo and fuzz_flight run their unit test's model driver; l1 locks.
$(FUZZ_BUILD)/fuzz_l1: tests/model/model.h tests/model/l1_model.h
$(FUZZ_BUILD)/fuzz_l1: FUZZ_LIBS += -pthread
$(FUZZ_BUILD)/fuzz_keymemo: tests/model/model.h tests/model/keymemo_model.h
$(FUZZ_BUILD)/fuzz_flight: tests/model/model.h tests/model/flight_model.h
$(FUZZ_BUILD)/fuzz_lookups: tests/model/model.h tests/model/lookups_model.h
$(FUZZ_BUILD)/fuzz_jobtab: tests/model/model.h tests/model/jobtab_model.h
$(FUZZ_BUILD)/fuzz_cmdq: tests/model/model.h tests/model/cmdq_model.h

$(FUZZ_BUILD)/obj/ref/%.o: tests/ref/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

-include $(wildcard $(FUZZ_BUILD)/obj/*.d $(FUZZ_BUILD)/obj/ref/*.d)
.PRECIOUS: $(FUZZ_BUILD)/obj/%.o $(FUZZ_BUILD)/obj/ref/%.o

fuzz-toolchain:
	@command -v $(FUZZ_CC) >/dev/null || { \
	    echo "fuzz: $(FUZZ_CC) not found: apt-get install clang libclang-rt-14-dev"; exit 1; }
	@printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' | \
	    $(FUZZ_CC) -x c -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null || { \
	    echo "fuzz: $(FUZZ_CC) cannot link -fsanitize=fuzzer: apt-get install libclang-rt-14-dev"; \
	    exit 1; }
	@pkg-config --exists $(FUZZ_PKGS) || { \
	    echo "fuzz: pkg-config finds no $(FUZZ_PKGS): apt-get install libjson-c-dev libssl-dev"; \
	    exit 1; }

fuzz-build: fuzz-toolchain
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

# Runs every target even when one fails, then fails if any did.
fuzz: fuzz-build
	@failed=""; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_BUILD)/corpus-$$t && cp tests/fuzz/corpus/$$t/* $(FUZZ_BUILD)/corpus-$$t/; \
	    dict=""; [ -f tests/fuzz/$$t.dict ] && dict="-dict=tests/fuzz/$$t.dict"; \
	    echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
	    $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- $$dict $(FUZZ_ARGS) \
	        $(FUZZ_BUILD)/corpus-$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (inputs: $(FUZZ_BUILD)/crash-*)"; exit 1; fi; \
	echo "fuzz: all targets passed"

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

# The integration tests with predcache under valgrind memcheck (slower; errors fail tests).
valgrind: bootstrap $(BIN)
	@command -v valgrind >/dev/null || { echo "valgrind: apt-get install valgrind"; exit 1; }
	PREDCACHE_BIN=$(abspath scripts/valgrind-predcache) $(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

# The main job: a real OCR model behind predcache, cold then warm (see scripts/demo).
demo: bootstrap $(BIN)
	PREDCACHE_BIN=$(abspath $(BIN)) scripts/demo

# Hits, the cost of a miss, floors, cost growth and key MB/s (see docs/PERFORMANCE.md);
# BENCH_ARGS is passed on (make bench BENCH_ARGS='--quick --json bench.json').
bench: bootstrap $(BIN)
	scripts/bench --binary $(abspath $(BIN)) $(BENCH_ARGS)

# Where `make install` puts things (DESTDIR is prepended to each: a staging root). The
# configuration goes to /etc for PREFIX=/usr, else under PREFIX (/usr/local/etc).
BINDIR       ?= $(PREFIX)/bin
SYSCONFDIR   ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR      ?= $(PREFIX)/lib/systemd/system
LOGROTATEDIR ?= $(SYSCONFDIR)/logrotate.d
MANDIR       ?= $(PREFIX)/share/man
CONFDIR      := $(DESTDIR)$(SYSCONFDIR)/predcache

# An existing predcache.conf (edited or not) is never overwritten: the shipped one goes
# beside it as predcache.conf.default.
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/predcache
	install -d -m 0755 $(CONFDIR)
	@if [ -e $(CONFDIR)/predcache.conf ]; then \
	    install -m 0644 conf/predcache.conf $(CONFDIR)/predcache.conf.default; \
	    echo "install: $(CONFDIR)/predcache.conf exists: kept; the shipped one is predcache.conf.default"; \
	else \
	    install -m 0644 conf/predcache.conf $(CONFDIR)/predcache.conf; \
	fi
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    contrib/predcache.service.in > $(DESTDIR)$(UNITDIR)/predcache.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/predcache.service
	install -D -m 0644 contrib/predcache.logrotate $(DESTDIR)$(LOGROTATEDIR)/predcache
	install -D -m 0644 man/predcache.8 $(DESTDIR)$(MANDIR)/man8/predcache.8
	install -D -m 0644 man/predcache.conf.5 $(DESTDIR)$(MANDIR)/man5/predcache.conf.5

# Removes what install put there; the configuration only when it is the shipped one.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/predcache $(DESTDIR)$(UNITDIR)/predcache.service \
	      $(DESTDIR)$(LOGROTATEDIR)/predcache $(CONFDIR)/predcache.conf.default \
	      $(DESTDIR)$(MANDIR)/man8/predcache.8 $(DESTDIR)$(MANDIR)/man5/predcache.conf.5
	@if [ -e $(CONFDIR)/predcache.conf ] && ! cmp -s conf/predcache.conf $(CONFDIR)/predcache.conf; then \
	    echo "uninstall: $(CONFDIR)/predcache.conf was edited: kept"; \
	else \
	    rm -f $(CONFDIR)/predcache.conf; rmdir $(CONFDIR) 2>/dev/null || true; \
	fi

FORMAT_SRC := src/*.c src/*.h include/predcache/*.h tests/unit/*.c tests/unit/*.h tests/fuzz/*.c \
              tests/fuzz/*.h \
              tests/model/*.h \
              tests/ref/*.c tests/ref/*.h scripts/bench.d/*.c scripts/bench.d/*.h

format:
	clang-format -i $(FORMAT_SRC)

format-check:
	clang-format --dry-run -Werror $(FORMAT_SRC)

clean:
	rm -rf build build-asan $(BIN)
