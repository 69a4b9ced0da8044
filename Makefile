# outreach: build the daemon, the worker and the operator's tool; run the stack and the tests.
VERSION    := 0.1.0
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DATADIR    ?= $(PREFIX)/share
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DESTDIR    ?=

CC        ?= cc
PKG_CONFIG ?= pkg-config
PKGS      := libevent libevent_pthreads hiredis libpq libcurl jansson libesmtp-1.0 inih libssl libcrypto libical cairo fontconfig
WITH_SYSTEMD ?= $(shell $(PKG_CONFIG) --exists libsystemd 2>/dev/null && echo 1 || echo 0)
ifeq ($(WITH_SYSTEMD),1)
PKGS      += libsystemd
endif

WARN      := -Wall -Wextra -Wstrict-prototypes -Wwrite-strings -Wshadow -Wformat=2 -Werror
OPT       ?= -O2 -g
CPPFLAGS  += -D_GNU_SOURCE -DOUTREACH_VERSION='"$(VERSION)"' -DWITH_SYSTEMD=$(WITH_SYSTEMD) \
             -DSYSCONFDIR='"$(SYSCONFDIR)"' -DDATADIR='"$(DATADIR)"' -I. -Ibuild/gen
CFLAGS    += -std=c11 $(OPT) $(WARN) -MMD -MP -pthread $(shell $(PKG_CONFIG) --cflags $(PKGS))
LDLIBS    += $(shell $(PKG_CONFIG) --libs $(PKGS)) -lm -pthread

ifneq ($(SANITIZE),)
CFLAGS    += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS   += -fsanitize=$(SANITIZE)
comma     := ,
BUILD     := build/$(if $(filter thread,$(subst $(comma), ,$(SANITIZE))),tsan,san)
else
BUILD     := build/rel
endif
BIN       := $(BUILD)/bin

ifeq ($(V),1)
Q :=
else
Q := @
endif

COMMON_SRC  := $(sort $(wildcard common/*.c))
DAEMON_SRC  := $(sort $(wildcard daemon/*.c))
WORKERS_SRC := $(sort $(wildcard workers/*.c))
TOOLS_SRC   := $(sort $(wildcard tools/*.c))
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
SQL_FILES   := $(sort $(wildcard sql/*.sql))
TEMPLATES   := $(sort $(wildcard config/templates/*))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ  := $(call obj,$(COMMON_SRC)) $(BUILD)/obj/gen/sql_embed.o
DAEMON_LIB  := $(call obj,$(filter-out daemon/main.c,$(DAEMON_SRC)))
WORKERS_LIB := $(call obj,$(filter-out workers/main.c,$(WORKERS_SRC)))
TOOLS_LIB   := $(call obj,$(filter-out tools/main.c,$(TOOLS_SRC)))
UNIT_BINS   := $(patsubst tests/unit/%.c,$(BIN)/tests/%,$(UNIT_SRC))
TOOL_SRC    := $(sort $(wildcard tests/tools/*.c))
TOOL_BINS   := $(patsubst tests/tools/%.c,$(BIN)/tests/%,$(TOOL_SRC))

PROGRAMS := $(BIN)/outreachd $(BIN)/outreach-worker $(BIN)/outreachctl

.PHONY: all link-bin clean install format deps stack-start stack-stop run test unit-tests bench
all: $(PROGRAMS) link-bin

# bin/ always points at the last build (release or sanitizer) so scripts find one place.
link-bin: $(PROGRAMS)
	$(Q)ln -sfn $(BIN) bin

# Objects are rebuilt when the flags change (another PREFIX, say), not only when sources do.
FLAGS_STAMP := $(BUILD)/flags
$(shell mkdir -p $(BUILD); echo '$(CC) $(CPPFLAGS) $(CFLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CC) $(CPPFLAGS) $(CFLAGS)' > $(FLAGS_STAMP))

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

build/gen/sql_embed.c: $(SQL_FILES) scripts/embed-sql
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GEN     $@")
	$(Q)sh scripts/embed-sql $(SQL_FILES) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/sql_embed.o: build/gen/sql_embed.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libdaemon.a: $(DAEMON_LIB)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libworkers.a: $(WORKERS_LIB)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libtools.a: $(TOOLS_LIB)
	$(Q)rm -f $@ && ar rcs $@ $^

LIBS_ALL := $(BUILD)/libdaemon.a $(BUILD)/libworkers.a $(BUILD)/libtools.a $(BUILD)/libcommon.a

$(BIN)/outreachd: $(BUILD)/obj/daemon/main.o $(BUILD)/libdaemon.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/outreach-worker: $(BUILD)/obj/workers/main.o $(BUILD)/libworkers.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/outreachctl: $(BUILD)/obj/tools/main.o $(BUILD)/libtools.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBS_ALL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell $(PKG_CONFIG) --libs cmocka)

# Small programs the integration tests drive (e.g. the mailer against odd SMTP servers).
$(BIN)/tests/%: $(BUILD)/obj/tests/tools/%.o $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The CSV reader's portable path (8 bytes in a word), which x86-64 builds do not take otherwise.
$(BUILD)/obj/common/csv_words.o: common/csv.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (CSV_WORDS)")
	$(Q)$(CC) $(CPPFLAGS) -DCSV_WORDS $(CFLAGS) -c -o $@ $<
$(BIN)/tests/test_csv_words: $(BUILD)/obj/tests/unit/test_csv.o $(BUILD)/obj/common/csv_words.o $(LIBS_ALL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell $(PKG_CONFIG) --libs cmocka)

unit-tests: $(UNIT_BINS) $(BIN)/tests/test_csv_words $(TOOL_BINS)

# --- the two commands -------------------------------------------------------
deps:
	$(Q)sh scripts/deps

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bash scripts/run

test: deps
	$(Q)$(MAKE) --no-print-directory all unit-tests
	$(Q)BIN=$(BIN) bash tests/run

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BIN=$(BIN) bash bench/run

stack-start:
	$(Q)bash scripts/stack start
stack-stop:
	$(Q)bash scripts/stack stop

# --- install ------------------------------------------------------------------
install: $(PROGRAMS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/outreach/templates \
	           $(DESTDIR)$(DATADIR)/outreach/sql $(DESTDIR)$(DATADIR)/outreach/fixtures \
	           $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/lib/sysusers.d $(DESTDIR)$(PREFIX)/lib/tmpfiles.d
	install -m 755 $(PROGRAMS) $(DESTDIR)$(BINDIR)/
	install -m 640 config/outreach.conf $(DESTDIR)$(SYSCONFDIR)/outreach/outreach.conf
	$(if $(TEMPLATES),install -m 644 $(TEMPLATES) $(DESTDIR)$(SYSCONFDIR)/outreach/templates/)
	install -m 644 $(SQL_FILES) $(DESTDIR)$(DATADIR)/outreach/sql/
	install -m 644 tests/fixtures/npi/*.json tests/fixtures/npi/*.csv tests/fixtures/npi/PROVENANCE.md $(DESTDIR)$(DATADIR)/outreach/fixtures/
	sed 's|/usr/bin/|$(BINDIR)/|g' systemd/outreachd.service > $(DESTDIR)$(UNITDIR)/outreachd.service
	sed 's|/usr/bin/|$(BINDIR)/|g' systemd/outreach-worker@.service > $(DESTDIR)$(UNITDIR)/outreach-worker@.service
	install -m 644 systemd/outreach.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/outreach.conf
	install -m 644 systemd/outreach.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/outreach.conf

format:
	clang-format -i $(COMMON_SRC) $(DAEMON_SRC) $(WORKERS_SRC) $(TOOLS_SRC) $(UNIT_SRC) \
	    $(wildcard common/*.h daemon/*.h workers/*.h tools/*.h tests/unit/*.h)

clean:
	rm -rf build bin

.SECONDARY:

-include $(shell find build -name '*.d' 2>/dev/null)
